//! From `strata eval`'s per-seed outputs to the study's answer: per arm, each metric with its
//! interval over training seeds and test images; per arm but the reference, the paired
//! difference (arm − reference) with its interval and a verdict that names a winner only
//! when the interval excludes zero.
//!
//! Per-image metrics (relation fidelity as honoured / requested triples, and any metric
//! `strata eval` scores per image) are resampled directly; the set-level strata-synthetic
//! FID and KID are recomputed on every resample from the segmenter's per-image features,
//! each generated image resampled with its real test image.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strata_eval::per_image::ImageValues;
use strata_eval::seg::SegQuality;
use strata_eval::stats::{bootstrap_seeds, mean_at, ratio_at, BootstrapOptions, Interval};
use strata_eval::{EvalReport, Features};

use super::{Arm, Plan};

/// Feature rows, one per image.
type Rows = Vec<Vec<f64>>;
/// A generated image's feature row with its real pair's.
type RowPair = (Vec<f64>, Vec<f64>);
/// One per-image metric of an image's values.
type Getter = fn(&ImageValues) -> Option<f64>;

/// The file each seed's evaluation leaves for the statistics.
pub const SCORES_FILE: &str = "study_scores.json";

/// Per-image scores of one generated set, aligned with [`SeedScores::keys`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetScores {
    pub label: String,
    /// `(honoured, requested)` relation triples per image.
    pub relations: Vec<Option<(f64, f64)>>,
    /// Other per-image metrics by metric id.
    #[serde(default)]
    pub per_image: BTreeMap<String, Vec<Option<f64>>>,
    /// The segmenter's pooled feature vector per image (the strata-synthetic feature space).
    #[serde(default)]
    pub features: Option<Vec<Option<Vec<f64>>>>,
    /// The GSHPS classifier's feature vector per image.
    #[serde(default)]
    pub gshps_features: Option<Vec<Option<Vec<f64>>>>,
}

/// What one seed's evaluation gives the statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedScores {
    /// Test image names (relative to the test folder), sorted.
    pub keys: Vec<String>,
    pub real_relations: Vec<Option<(f64, f64)>>,
    #[serde(default)]
    pub real_features: Option<Vec<Option<Vec<f64>>>>,
    #[serde(default)]
    pub real_gshps_features: Option<Vec<Option<Vec<f64>>>>,
    pub sets: Vec<SetScores>,
    pub segmenter: Option<SegQuality>,
}

/// Writes [`SCORES_FILE`] from an evaluation of every arm of one seed: per test image (the
/// real folder's pairing keys), each set's relation counts, per-image metrics and feature
/// vectors.
pub fn save_per_image(report: &EvalReport, out: &Path) -> anyhow::Result<()> {
    let mut keys: Vec<String> = report
        .real_per_image
        .iter()
        .map(|v| v.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    let find = |vals: &[ImageValues], k: &str| vals.iter().find(|v| v.key == k).cloned();
    let real: Vec<Option<ImageValues>> = keys
        .iter()
        .map(|k| find(&report.real_per_image, k))
        .collect();
    let rel = |v: &Option<ImageValues>| {
        v.as_ref()
            .and_then(|v| v.relations)
            .map(|(h, r)| (h as f64, r as f64))
    };
    let mut sets = vec![];
    for s in &report.sets {
        let vals: Vec<Option<ImageValues>> = keys.iter().map(|k| find(&s.per_image, k)).collect();
        let mut per_image: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
        let metrics: [(&str, Getter); 3] = [
            ("lpips", |v| v.lpips),
            ("pieapp", |v| v.pieapp),
            ("clip-cosine", |v| v.clip_cosine),
        ];
        for (id, get) in metrics {
            let col: Vec<Option<f64>> = vals.iter().map(|v| v.as_ref().and_then(get)).collect();
            if col.iter().any(|x| x.is_some()) {
                per_image.insert(id.to_string(), col);
            }
        }
        let feats = |get: fn(&ImageValues) -> &Option<Vec<f64>>, vals: &[Option<ImageValues>]| {
            let col: Vec<Option<Vec<f64>>> = vals
                .iter()
                .map(|v| v.as_ref().and_then(|v| get(v).clone()))
                .collect();
            col.iter().any(|x| x.is_some()).then_some(col)
        };
        sets.push(SetScores {
            label: s.label.clone(),
            relations: vals.iter().map(rel).collect(),
            per_image,
            features: feats(|v| &v.seg_features, &vals),
            gshps_features: feats(|v| &v.gshps_features, &vals),
        });
    }
    let feats = |get: fn(&ImageValues) -> &Option<Vec<f64>>| {
        let col: Vec<Option<Vec<f64>>> = real
            .iter()
            .map(|v| v.as_ref().and_then(|v| get(v).clone()))
            .collect();
        col.iter().any(|x| x.is_some()).then_some(col)
    };
    let scores = SeedScores {
        real_relations: real.iter().map(rel).collect(),
        real_features: feats(|v| &v.seg_features),
        real_gshps_features: feats(|v| &v.gshps_features),
        sets,
        segmenter: report.segmenter.clone(),
        keys,
    };
    let text = serde_json::to_string(&scores)? + "\n";
    crate::stages::write_atomic(&out.join(SCORES_FILE), text.as_bytes())
}

/// One arm's value of a metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmValue {
    pub arm: String,
    /// Over seeds and images (two-level bootstrap).
    pub interval: Option<Interval>,
    /// The value of each seed on all images.
    pub per_seed: Vec<Option<f64>>,
}

/// One arm's paired difference from the reference arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Difference {
    pub arm: String,
    /// arm − reference.
    pub interval: Option<Interval>,
    pub verdict: String,
    /// The arm that is better with the interval excluding zero, if any.
    pub winner: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricResult {
    pub id: String,
    pub heading: String,
    pub lower_better: bool,
    /// Shown as a percentage (relation fidelity).
    pub percent: bool,
    pub arms: Vec<ArmValue>,
    pub differences: Vec<Difference>,
    /// The real test images' value, where the metric has one (relation fidelity's ceiling).
    pub real: Option<f64>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub reference: String,
    pub arms: Vec<String>,
    pub seeds: Vec<u64>,
    /// Seeds whose evaluation is done (a study in progress reports these).
    pub seeds_done: Vec<u64>,
    pub test_images: usize,
    pub confidence: f64,
    pub resamples: usize,
    pub set_resamples: usize,
    pub metrics: Vec<MetricResult>,
    /// The segmenter judging relation fidelity, as measured on held-out synthetic scenes.
    pub segmenter: Option<SegQuality>,
}

/// How one metric reads a seed's scores.
enum Stat {
    /// Honoured / requested relation triples.
    Relations,
    /// Mean of a per-image metric.
    Mean(String),
    /// Fréchet distance of the segmenter features to the real images'.
    Frechet,
    /// Unbiased squared MMD (KID's polynomial kernel) to the real images' features.
    Kid,
    /// GSHPS: cosine between the mean GSHPS-classifier features of the generated images
    /// and of their real pairs.
    Gshps,
}

/// Kernel matrices of one set against the real images (KID's `(x·y/d + 1)³`).
struct Kernels {
    gg: Vec<f64>,
    rr: Vec<f64>,
    gr: Vec<f64>,
    n: usize,
}

fn poly(a: &[f64], b: &[f64]) -> f64 {
    let d = a.len() as f64;
    (a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / d + 1.0).powi(3)
}

impl Kernels {
    fn new(g: &[Vec<f64>], r: &[Vec<f64>]) -> Kernels {
        let n = g.len();
        let mut k = Kernels {
            gg: vec![0.0; n * n],
            rr: vec![0.0; n * n],
            gr: vec![0.0; n * n],
            n,
        };
        for i in 0..n {
            for j in 0..n {
                k.gg[i * n + j] = poly(&g[i], &g[j]);
                k.rr[i * n + j] = poly(&r[i], &r[j]);
                k.gr[i * n + j] = poly(&g[i], &r[j]);
            }
        }
        k
    }

    /// Unbiased MMD² on the resample `idx` (pairs of the same underlying image left out of
    /// the within-set sums, so duplicates from resampling add no self-similarity).
    fn mmd(&self, idx: &[usize]) -> Option<f64> {
        let n = self.n;
        let (mut xx, mut yy, mut c) = (0.0, 0.0, 0usize);
        let mut xy = 0.0;
        for &i in idx {
            for &j in idx {
                xy += self.gr[i * n + j];
                if i != j {
                    xx += self.gg[i * n + j];
                    yy += self.rr[i * n + j];
                    c += 1;
                }
            }
        }
        (c > 0).then(|| (xx + yy) / c as f64 - 2.0 * xy / (idx.len() * idx.len()) as f64)
    }
}

/// One seed's data for one arm, restricted to the images every arm and the real set have.
struct ArmSeed {
    relations: Vec<Option<(f64, f64)>>,
    per_image: BTreeMap<String, Vec<Option<f64>>>,
    /// (generated, real) feature rows of the images that have both.
    features: Option<(Rows, Rows)>,
    kernels: Option<Kernels>,
    /// (generated, real) GSHPS feature rows, `None` where an image lacks one.
    gshps: Option<Vec<Option<RowPair>>>,
}

fn frechet(g: &[Vec<f64>], r: &[Vec<f64>], idx: &[usize]) -> Option<f64> {
    let d = g.first()?.len();
    let rows =
        |m: &[Vec<f64>]| -> Vec<f64> { idx.iter().flat_map(|&i| m[i].iter().copied()).collect() };
    let a = Features::new(idx.len(), d, rows(g)).ok()?;
    let b = Features::new(idx.len(), d, rows(r)).ok()?;
    strata_eval::frechet_distance_features(&a, &b).ok()
}

fn value(s: &ArmSeed, stat: &Stat, idx: &[usize]) -> Option<f64> {
    match stat {
        Stat::Relations => ratio_at(&s.relations, idx),
        Stat::Mean(id) => mean_at(s.per_image.get(id)?, idx),
        Stat::Frechet => {
            let (g, r) = s.features.as_ref()?;
            frechet(g, r, idx)
        }
        Stat::Kid => s.kernels.as_ref()?.mmd(idx),
        Stat::Gshps => {
            let rows = s.gshps.as_ref()?;
            let d = rows.iter().flatten().next()?.0.len();
            let (mut g, mut r, mut c) = (vec![0.0; d], vec![0.0; d], 0usize);
            for &i in idx {
                if let Some((a, b)) = &rows[i] {
                    for k in 0..d {
                        g[k] += a[k];
                        r[k] += b[k];
                    }
                    c += 1;
                }
            }
            if c == 0 {
                return None;
            }
            let dot: f64 = g.iter().zip(&r).map(|(x, y)| x * y).sum();
            let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            Some(dot / (n(&g) * n(&r)).max(1e-12))
        }
    }
}

/// Reads every finished seed's scores and computes the study's intervals and verdicts.
pub fn compute(run: &Path, plan: &Plan) -> anyhow::Result<Results> {
    let cfg = &plan.config;
    let mut seeds_done = vec![];
    let mut scores = vec![];
    for &s in &cfg.seeds {
        let p = plan.eval_dir(run, s).join(SCORES_FILE);
        if !p.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let v: SeedScores = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a study score file; delete it and rerun to evaluate that seed again",
                p.display()
            )
        })?;
        seeds_done.push(s);
        scores.push(v);
    }
    let reference = cfg.arms[0];
    let mut results = Results {
        reference: reference.id().into(),
        arms: cfg.arms.iter().map(|a| a.id().to_string()).collect(),
        seeds: cfg.seeds.clone(),
        seeds_done: seeds_done.clone(),
        test_images: 0,
        confidence: cfg.stats.confidence,
        resamples: cfg.stats.resamples,
        set_resamples: cfg.stats.set_resamples,
        metrics: vec![],
        segmenter: scores.first().and_then(|s| s.segmenter.clone()),
    };
    if scores.is_empty() {
        return Ok(results);
    }
    // the images every seed scored, in one order
    let mut keys: Vec<String> = scores[0].keys.clone();
    keys.retain(|k| scores.iter().all(|s| s.keys.contains(k)));
    results.test_images = keys.len();
    let n = keys.len();
    // per arm, per seed
    let mut data: Vec<Vec<ArmSeed>> = vec![];
    for arm in &cfg.arms {
        let label = format!("lora/{}", arm.id());
        let mut per_seed = vec![];
        for s in &scores {
            let pos: Vec<usize> = keys
                .iter()
                .map(|k| s.keys.iter().position(|x| x == k).expect("common key"))
                .collect();
            let set = s.sets.iter().find(|x| x.label == label).with_context(|| {
                format!("the evaluation has no set {label}; delete the seed's eval stage marker and rerun")
            })?;
            let pick = |v: &Vec<Option<(f64, f64)>>| {
                pos.iter()
                    .map(|&p| v.get(p).copied().flatten())
                    .collect::<Vec<_>>()
            };
            let per_image = set
                .per_image
                .iter()
                .map(|(id, v)| {
                    (
                        id.clone(),
                        pos.iter().map(|&p| v.get(p).copied().flatten()).collect(),
                    )
                })
                .collect();
            let features = match (&set.features, &s.real_features) {
                (Some(g), Some(r)) => {
                    let pairs: Vec<(Vec<f64>, Vec<f64>)> = pos
                        .iter()
                        .filter_map(|&p| Some((g.get(p)?.clone()?, r.get(p)?.clone()?)))
                        .collect();
                    (pairs.len() >= 2).then(|| pairs.into_iter().unzip())
                }
                _ => None,
            };
            let kernels = features
                .as_ref()
                .map(|(g, r): &(Vec<Vec<f64>>, Vec<Vec<f64>>)| Kernels::new(g, r));
            let gshps = match (&set.gshps_features, &s.real_gshps_features) {
                (Some(g), Some(r)) => Some(
                    pos.iter()
                        .map(|&p| Some((g.get(p)?.clone()?, r.get(p)?.clone()?)))
                        .collect(),
                ),
                _ => None,
            };
            per_seed.push(ArmSeed {
                relations: pick(&set.relations),
                per_image,
                features,
                kernels,
                gshps,
            });
        }
        data.push(per_seed);
    }
    let real_relations: Vec<Option<(f64, f64)>> = {
        let s = &scores[0];
        keys.iter()
            .map(|k| {
                s.keys
                    .iter()
                    .position(|x| x == k)
                    .and_then(|p| s.real_relations[p])
            })
            .collect()
    };
    // which metrics: relation fidelity, the feature metrics when features exist, and every
    // per-image metric the evaluation gave for all arms
    let mut stats: Vec<(String, String, bool, bool, Stat, String)> = vec![(
        "relation-fidelity".into(),
        "RelFid↑".into(),
        false,
        true,
        Stat::Relations,
        "share of the requested relation triples the relation checker finds in the segmenter's mask of the generated image".into(),
    )];
    if data.iter().flatten().all(|d| d.features.is_some()) {
        stats.push(("synth-fid".into(), "sFID*↓".into(), true, false, Stat::Frechet,
            "Fréchet distance in the segmenter's feature space between the generated and the real test images (strata-synthetic; not comparable to standard FID)".into()));
        stats.push(("synth-kid".into(), "sKID*↓".into(), true, false, Stat::Kid,
            "unbiased squared MMD (KID's cubic polynomial kernel) in the same feature space, on all test images (no subsets)".into()));
    }
    if data.iter().flatten().all(|d| d.gshps.is_some()) {
        stats.push(("gshps".into(), "GSHPS (stand-in)↑".into(), false, false, Stat::Gshps,
            "cosine between the mean scene-classifier features of the generated images and of their real pairs; the classifier is strata's stand-in, trained on the study's training scenes (disjoint from the scored test images), unless VGG16 weights were given".into()));
    }
    let ids: Vec<String> = data[0][0].per_image.keys().cloned().collect();
    for id in ids {
        if data.iter().flatten().all(|d| d.per_image.contains_key(&id)) {
            let m = strata_eval::Metric::parse(&id);
            let heading = m
                .map(|m| m.heading().to_string())
                .unwrap_or_else(|| id.clone());
            let lower = heading.ends_with('↓');
            stats.push((
                id.clone(),
                heading,
                lower,
                false,
                Stat::Mean(id.clone()),
                "mean over test images".into(),
            ));
        }
    }
    let seeds = scores.len();
    for (id, heading, lower_better, percent, stat, note) in stats {
        let set_level = matches!(stat, Stat::Frechet | Stat::Kid | Stat::Gshps);
        let opts = BootstrapOptions {
            resamples: if set_level {
                cfg.stats.set_resamples
            } else {
                cfg.stats.resamples
            },
            level: cfg.stats.confidence,
            seed: 0x57A7_5EED,
        };
        let arms = cfg
            .arms
            .iter()
            .zip(&data)
            .map(|(arm, d)| ArmValue {
                arm: arm.id().into(),
                interval: bootstrap_seeds(seeds, n, &opts, |s, idx| value(&d[s], &stat, idx)),
                per_seed: d
                    .iter()
                    .map(|x| value(x, &stat, &(0..n).collect::<Vec<_>>()))
                    .collect(),
            })
            .collect();
        let differences = cfg
            .arms
            .iter()
            .zip(&data)
            .skip(1)
            .map(|(arm, d)| {
                let iv = bootstrap_seeds(seeds, n, &opts, |s, idx| {
                    Some(value(&d[s], &stat, idx)? - value(&data[0][s], &stat, idx)?)
                });
                let (verdict, winner) = verdict(
                    *arm,
                    reference,
                    iv.as_ref(),
                    lower_better,
                    percent,
                    cfg.stats.confidence,
                );
                Difference {
                    arm: arm.id().into(),
                    interval: iv,
                    verdict,
                    winner,
                }
            })
            .collect();
        let real = if matches!(stat, Stat::Relations) {
            ratio_at(&real_relations, &(0..n).collect::<Vec<_>>())
        } else {
            None
        };
        results.metrics.push(MetricResult {
            id,
            heading,
            lower_better,
            percent,
            arms,
            differences,
            real,
            note,
        });
    }
    Ok(results)
}

/// Formats a value of a metric (percent: points).
pub fn fmt(x: f64, percent: bool) -> String {
    if percent {
        format!("{:.1}%", 100.0 * x)
    } else if x != 0.0 && x.abs() < 0.01 {
        format!("{x:.3e}")
    } else {
        format!("{x:.3}")
    }
}

/// A difference (percent: in points).
pub fn fmt_diff(x: f64, percent: bool) -> String {
    if percent {
        format!("{:+.1} pts", 100.0 * x)
    } else if x != 0.0 && x.abs() < 0.01 {
        format!("{x:+.3e}")
    } else {
        format!("{x:+.3}")
    }
}

fn verdict(
    arm: Arm,
    reference: Arm,
    iv: Option<&Interval>,
    lower_better: bool,
    percent: bool,
    level: f64,
) -> (String, Option<String>) {
    let Some(iv) = iv else {
        return (
            "not computed (the statistic is undefined on these images)".into(),
            None,
        );
    };
    let range = format!(
        "{} [{}, {}]",
        fmt_diff(iv.estimate, percent),
        fmt_diff(iv.low, percent),
        fmt_diff(iv.high, percent)
    );
    if !iv.excludes_zero() {
        return (
            format!(
                "{} − {}: {range}: no difference detected (the {:.0}% interval includes 0)",
                arm.id(),
                reference.id(),
                100.0 * level
            ),
            None,
        );
    }
    let arm_better = (iv.estimate < 0.0) == lower_better;
    let (w, l) = if arm_better {
        (arm, reference)
    } else {
        (reference, arm)
    };
    (
        format!(
            "{} − {}: {range}: {} better than {}",
            arm.id(),
            reference.id(),
            w.id(),
            l.id()
        ),
        Some(w.id().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_on_a_resample_matches_the_direct_formula_without_duplicates() {
        // on the identity resample the kernel shortcut equals the unbiased MMD² formula
        let g: Vec<Vec<f64>> = (0..6)
            .map(|i| vec![i as f64 * 0.1, 1.0 - i as f64 * 0.05])
            .collect();
        let r: Vec<Vec<f64>> = (0..6).map(|i| vec![0.3 + i as f64 * 0.07, 0.2]).collect();
        let k = Kernels::new(&g, &r);
        let n = 6.0;
        let mut xx = 0.0;
        let mut yy = 0.0;
        let mut xy = 0.0;
        for i in 0..6 {
            for j in 0..6 {
                if i != j {
                    xx += poly(&g[i], &g[j]);
                    yy += poly(&r[i], &r[j]);
                }
                xy += poly(&g[i], &r[j]);
            }
        }
        let want = xx / (n * (n - 1.0)) + yy / (n * (n - 1.0)) - 2.0 * xy / (n * n);
        let got = k.mmd(&[0, 1, 2, 3, 4, 5]).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn verdicts_name_a_winner_only_outside_zero() {
        let iv = |e: f64, l: f64, h: f64| Interval {
            estimate: e,
            low: l,
            high: h,
            level: 0.95,
            resamples: 100,
        };
        let (v, w) = verdict(
            Arm::HierarchicalConcat,
            Arm::Flat,
            Some(&iv(0.05, 0.01, 0.09)),
            false,
            true,
            0.95,
        );
        assert_eq!(w.as_deref(), Some("hierarchical-concat"), "{v}");
        let (v, w) = verdict(
            Arm::HierarchicalConcat,
            Arm::Flat,
            Some(&iv(0.05, 0.01, 0.09)),
            true,
            false,
            0.95,
        );
        assert_eq!(w.as_deref(), Some("flat"), "{v}");
        let (v, w) = verdict(
            Arm::SceneOnly,
            Arm::Flat,
            Some(&iv(0.02, -0.01, 0.05)),
            false,
            true,
            0.95,
        );
        assert!(w.is_none() && v.contains("no difference"), "{v}");
        let (v, w) = verdict(Arm::SceneOnly, Arm::Flat, None, false, true, 0.95);
        assert!(w.is_none() && v.contains("not computed"));
    }
}
