//! `strata eval` as a library call: read the folders, compute what can be computed, say why
//! the rest is not, and write `metrics.json`, `table.txt` and `report.html`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_caption::MetadataRecord;
use strata_synth::Triple;

use crate::error::EvalError;
use crate::fid::{frechet_distance_features, kid, Features};
use crate::fidelity::{relation_fidelity, MaskedImage, RelationFidelity};
use crate::images::{list_pngs, pair_key, read_png, Rgb};
use crate::seg::{Prediction, SegNet, SegQuality, TrainOptions, SEG_SIZE};

/// The metrics `strata eval` knows, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Metric {
    Fid,
    Kid,
    SynthFid,
    SynthKid,
    Lpips,
    ClipScore,
    PieApp,
    Gshps,
    QAlign,
    RelationFidelity,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::Fid,
        Metric::Kid,
        Metric::SynthFid,
        Metric::SynthKid,
        Metric::Lpips,
        Metric::ClipScore,
        Metric::PieApp,
        Metric::Gshps,
        Metric::QAlign,
        Metric::RelationFidelity,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Metric::Fid => "fid",
            Metric::Kid => "kid",
            Metric::SynthFid => "synth-fid",
            Metric::SynthKid => "synth-kid",
            Metric::Lpips => "lpips",
            Metric::ClipScore => "clipscore",
            Metric::PieApp => "pieapp",
            Metric::Gshps => "gshps",
            Metric::QAlign => "q-align",
            Metric::RelationFidelity => "relation-fidelity",
        }
    }

    /// Column heading with the direction of "better".
    pub fn heading(self) -> &'static str {
        match self {
            Metric::Fid => "FID↓",
            Metric::Kid => "KID↓",
            Metric::SynthFid => "sFID*↓",
            Metric::SynthKid => "sKID*↓",
            Metric::Lpips => "LPIPS↓",
            Metric::ClipScore => "CLIPScore↑",
            Metric::PieApp => "PieAPP↓",
            Metric::Gshps => "GSHPS↑",
            Metric::QAlign => "Q-Align↑",
            Metric::RelationFidelity => "RelFid↑",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Metric::ALL.iter().copied().find(|m| m.id() == s)
    }
}

/// One generated folder: `label` is `method/caption-kind` (e.g. `lora/hierarchical`).
#[derive(Debug, Clone)]
pub struct GeneratedSet {
    pub label: String,
    pub dir: PathBuf,
}

impl GeneratedSet {
    /// `LABEL=DIR`, or `DIR` (label = the folder name).
    pub fn parse(s: &str) -> GeneratedSet {
        match s.split_once('=') {
            Some((l, d)) if !l.is_empty() => GeneratedSet {
                label: l.to_string(),
                dir: PathBuf::from(d),
            },
            _ => {
                let dir = PathBuf::from(s);
                let label = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| s.to_string());
                GeneratedSet { label, dir }
            }
        }
    }

    /// `(method, caption kind)` split from the label.
    pub fn method_and_kind(&self) -> (String, String) {
        match self.label.split_once('/') {
            Some((m, k)) => (m.to_string(), k.to_string()),
            None => {
                let l = self.label.to_ascii_lowercase();
                let kind = if l.contains("hier") {
                    "hierarchical"
                } else if l.contains("flat") || l.contains("trad") {
                    "traditional"
                } else {
                    "-"
                };
                (self.label.clone(), kind.to_string())
            }
        }
    }
}

/// User weight files for the networks strata cannot ship.
#[derive(Debug, Clone, Default)]
pub struct WeightPaths {
    pub inception: Option<PathBuf>,
    pub lpips_backbone: Option<PathBuf>,
    pub clip: Option<PathBuf>,
    pub vgg16_classifier: Option<PathBuf>,
    pub pieapp: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub real: PathBuf,
    pub generated: Vec<GeneratedSet>,
    /// metadata.jsonl with the requested captions and relation triples (default: the real
    /// folder's metadata.jsonl when present).
    pub captions: Option<PathBuf>,
    pub metrics: Vec<Metric>,
    pub out: PathBuf,
    /// Segmenter weights: loaded when the file exists, otherwise trained and written there.
    pub segmenter: Option<PathBuf>,
    pub train: TrainOptions,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    pub seed: u64,
    pub weights: WeightPaths,
    /// Scenes shown in the report's image grid.
    pub grid_scenes: usize,
}

/// A table cell: a value, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct MetricValue {
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Protocol or reason for the missing value.
    pub note: String,
}

impl MetricValue {
    fn val(v: f64, note: impl Into<String>) -> Self {
        MetricValue {
            value: Some(v),
            std: None,
            note: note.into(),
        }
    }
    fn none(note: impl Into<String>) -> Self {
        MetricValue {
            value: None,
            std: None,
            note: note.into(),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct SetResult {
    pub label: String,
    pub method: String,
    pub caption_kind: String,
    pub dir: PathBuf,
    pub images: usize,
    /// Images whose name matches a real image.
    pub paired_with_real: usize,
    pub metrics: BTreeMap<String, MetricValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation_fidelity: Option<RelationFidelity>,
}

/// Everything `metrics.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub real: PathBuf,
    pub real_images: usize,
    pub protocol: BTreeMap<String, String>,
    pub segmenter: Option<SegQuality>,
    /// Relation fidelity of the segmenter on the real images (the ceiling to compare with).
    pub real_relation_fidelity: Option<RelationFidelity>,
    pub sets: Vec<SetResult>,
    pub metric_notes: BTreeMap<String, String>,
    /// `(file, problem)` of every image or record that was skipped.
    pub failed: Vec<(String, String)>,
}

struct Loaded {
    keys: Vec<String>,
    images: Vec<Rgb>,
}

fn load_folder(dir: &Path, failed: &mut Vec<(String, String)>) -> Result<Loaded, EvalError> {
    if !dir.is_dir() {
        return Err(EvalError::BadInput {
            path: dir.to_path_buf(),
            what: "is not a folder of PNG images".into(),
        });
    }
    let rels = list_pngs(dir)?;
    let mut keys = Vec::new();
    let mut images = Vec::new();
    for rel in rels {
        let p = dir.join(&rel);
        match read_png(&p) {
            Ok(img) => {
                keys.push(pair_key(&rel));
                images.push(img);
            }
            Err(e) => failed.push((p.display().to_string(), e.to_string())),
        }
    }
    if images.is_empty() {
        return Err(EvalError::BadInput {
            path: dir.to_path_buf(),
            what: "holds no readable PNG image".into(),
        });
    }
    Ok(Loaded { keys, images })
}

fn read_captions(path: &Path) -> Result<BTreeMap<String, MetadataRecord>, EvalError> {
    let recs = strata_caption::dataset::read_metadata(path).map_err(|e| EvalError::BadInput {
        path: path.to_path_buf(),
        what: format!("{e}"),
    })?;
    let mut map = BTreeMap::new();
    for r in recs {
        map.insert(pair_key(&r.file_name), r);
    }
    Ok(map)
}

fn triples_of(rec: &MetadataRecord) -> Result<Vec<Triple>, String> {
    match rec.extra.get("relations") {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`relations` field: {e}")),
    }
}

/// Find the caption record for an image key: exact, then by file name alone.
fn lookup<'a>(caps: &'a BTreeMap<String, MetadataRecord>, key: &str) -> Option<&'a MetadataRecord> {
    caps.get(key).or_else(|| {
        let base = key.rsplit('/').next().unwrap_or(key);
        caps.iter()
            .find(|(k, _)| k.rsplit('/').next() == Some(base))
            .map(|(_, r)| r)
    })
}

fn fidelity_for(
    keys: &[String],
    preds: &[Prediction],
    caps: &BTreeMap<String, MetadataRecord>,
    failed: &mut Vec<(String, String)>,
    folder: &Path,
) -> RelationFidelity {
    let mut owned: Vec<(String, String, Vec<Triple>, usize)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(rec) = lookup(caps, key) {
            match triples_of(rec) {
                Ok(t) => owned.push((key.clone(), rec.scene.clone(), t, i)),
                Err(e) => failed.push((format!("{} (caption of {key})", folder.display()), e)),
            }
        }
    }
    let items: Vec<MaskedImage> = owned
        .iter()
        .map(|(k, s, t, i)| MaskedImage {
            image: k,
            scene: s,
            side: SEG_SIZE,
            mask: &preds[*i].mask,
            triples: t,
        })
        .collect();
    relation_fidelity(&items)
}

fn not_computed_reason(m: Metric, w: &WeightPaths) -> Option<String> {
    match m {
        Metric::Fid | Metric::Kid => Some(match &w.inception {
            None => "not computed: needs --inception-weights pt_inception-2015-12-05-*.pth (pytorch-fid's file)".into(),
            Some(p) => format!("not computed: Inception-v3 reading of {} is not implemented yet in this build", p.display()),
        }),
        Metric::Lpips => Some(match &w.lpips_backbone {
            None => "not computed: needs --lpips-backbone (AlexNet or VGG16 ImageNet weights) and the lpips 0.1.4 linear heads".into(),
            Some(_) => "not computed: LPIPS network is not implemented yet in this build".into(),
        }),
        Metric::ClipScore => Some(match &w.clip {
            None => "not computed: needs --clip-weights (CLIP ViT image and text towers)".into(),
            Some(_) => "not computed: CLIP image tower is not implemented yet in this build".into(),
        }),
        Metric::Gshps => Some(match &w.vgg16_classifier {
            None => "not computed: needs --vgg16-weights (VGG16 scene classifier fine-tuned on the 11 classes)".into(),
            Some(_) => "not computed: VGG16 features are not implemented yet in this build".into(),
        }),
        Metric::PieApp => Some(match &w.pieapp {
            None => "not computed: needs --pieapp-weights (PieAPP v0.1 network weights)".into(),
            Some(_) => "not computed: PieAPP network is not implemented yet in this build".into(),
        }),
        Metric::QAlign => Some("not computed: Q-Align needs a multi-billion-parameter LMM (mPLUG-Owl2), out of scope for strata".into()),
        _ => None,
    }
}

/// Run the evaluation. `progress(message)` reports stages; the returned report lists
/// skipped items in `failed`.
pub fn evaluate(
    opts: &EvalOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<EvalReport, EvalError> {
    let mut failed = Vec::new();
    progress(&format!("reading {}", opts.real.display()));
    let real = load_folder(&opts.real, &mut failed)?;
    let mut sets = Vec::new();
    for g in &opts.generated {
        progress(&format!("reading {}", g.dir.display()));
        sets.push(load_folder(&g.dir, &mut failed)?);
    }
    let caption_path = opts
        .captions
        .clone()
        .or_else(|| Some(opts.real.join("metadata.jsonl")).filter(|p| p.is_file()));
    let caps = match &caption_path {
        Some(p) => Some(read_captions(p)?),
        None => None,
    };
    let wants = |m: Metric| opts.metrics.contains(&m);
    let need_seg =
        wants(Metric::RelationFidelity) || wants(Metric::SynthFid) || wants(Metric::SynthKid);
    let mut quality = None;
    let mut real_preds = Vec::new();
    let mut set_preds: Vec<Vec<Prediction>> = Vec::new();
    if need_seg {
        let net = match &opts.segmenter {
            Some(p) if p.is_file() => {
                progress(&format!("loading segmenter {}", p.display()));
                let net = SegNet::load(p)?;
                let held = crate::seg::synth_samples(
                    opts.train.held_out_scenes,
                    opts.train.seed.wrapping_mul(2).wrapping_add(2),
                );
                quality = Some(crate::seg::evaluate(&net, &held, f64::NAN)?);
                net
            }
            _ => {
                let steps = opts.train.steps;
                let mut cb = |s: usize, l: f64| {
                    if s % 50 == 0 || s == steps {
                        progress(&format!("segmenter step {s}/{steps} loss {l:.3}"));
                    }
                };
                let (net, q) = crate::seg::train(&opts.train, &mut cb)?;
                if let Some(p) = &opts.segmenter {
                    net.save(p)?;
                }
                quality = Some(q);
                net
            }
        };
        progress("segmenting images");
        real_preds = net.predict(&real.images.iter().collect::<Vec<_>>())?;
        for s in &sets {
            set_preds.push(net.predict(&s.images.iter().collect::<Vec<_>>())?);
        }
    }
    let feats = |p: &[Prediction]| -> Result<Features, EvalError> {
        Features::from_rows(&p.iter().map(|x| x.features.clone()).collect::<Vec<_>>())
    };
    let real_feats = if need_seg {
        Some(feats(&real_preds)?)
    } else {
        None
    };
    let real_fid = match (&caps, wants(Metric::RelationFidelity)) {
        (Some(c), true) => Some(fidelity_for(
            &real.keys,
            &real_preds,
            c,
            &mut failed,
            &opts.real,
        )),
        _ => None,
    };
    let mut rows = Vec::new();
    for (si, (g, s)) in opts.generated.iter().zip(&sets).enumerate() {
        progress(&format!("scoring {}", g.label));
        let (method, kind) = g.method_and_kind();
        let paired = s.keys.iter().filter(|k| real.keys.contains(k)).count();
        let mut metrics = BTreeMap::new();
        let mut rf = None;
        for &m in &opts.metrics {
            let v = match m {
                Metric::SynthFid => {
                    let gf = feats(&set_preds[si])?;
                    match frechet_distance_features(real_feats.as_ref().unwrap(), &gf) {
                        Ok(v) => MetricValue::val(v, format!(
                            "strata-synthetic FID, not comparable to standard FID: {}-d segmenter bottleneck features at {SEG_SIZE}x{SEG_SIZE} (box/bilinear resize), {} real vs {} generated images",
                            gf.d, real.images.len(), s.images.len())),
                        Err(e) => MetricValue::none(format!("not computed: {e}")),
                    }
                }
                Metric::SynthKid => {
                    let gf = feats(&set_preds[si])?;
                    match kid(real_feats.as_ref().unwrap(), &gf, opts.kid_subsets, opts.kid_subset_size, opts.seed) {
                        Ok(k) => MetricValue {
                            value: Some(k.mean),
                            std: Some(k.std),
                            note: format!(
                                "strata-synthetic KID, not comparable to standard KID: polynomial-kernel unbiased MMD², {} subsets of {} (seed {})",
                                k.subsets, k.subset_size, k.seed),
                        },
                        Err(e) => MetricValue::none(format!("not computed: {e}")),
                    }
                }
                Metric::RelationFidelity => match &caps {
                    None => MetricValue::none("not computed: needs --captions metadata.jsonl with `relations` triples (or one in the real folder)"),
                    Some(c) => {
                        let f = fidelity_for(&s.keys, &set_preds[si], c, &mut failed, &g.dir);
                        let v = match f.overall.share {
                            Some(x) => MetricValue::val(x, format!(
                                "share of {} requested relation triples honoured in the segmenter's {SEG_SIZE}x{SEG_SIZE} mask (synth relation checker)",
                                f.overall.requested)),
                            None => MetricValue::none("not computed: no generated image matched a caption record with relation triples (names must match pairwise)"),
                        };
                        rf = Some(f);
                        v
                    }
                },
                other => MetricValue::none(not_computed_reason(other, &opts.weights).unwrap_or_default()),
            };
            metrics.insert(m.id().to_string(), v);
        }
        rows.push(SetResult {
            label: g.label.clone(),
            method,
            caption_kind: kind,
            dir: g.dir.clone(),
            images: s.images.len(),
            paired_with_real: paired,
            metrics,
            relation_fidelity: rf,
        });
    }
    let mut protocol = BTreeMap::new();
    protocol.insert(
        "segmenter_input".into(),
        format!("{SEG_SIZE}x{SEG_SIZE} RGB, box filter when shrinking, bilinear when enlarging"),
    );
    protocol.insert(
        "kid".into(),
        format!(
            "{} subsets of min({}, n_real, n_generated), seed {}",
            opts.kid_subsets, opts.kid_subset_size, opts.seed
        ),
    );
    protocol.insert(
        "captions".into(),
        caption_path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into()),
    );
    protocol.insert(
        "segmenter_training".into(),
        serde_json::to_string(&opts.train).unwrap_or_default(),
    );
    let mut metric_notes = BTreeMap::new();
    for m in Metric::ALL {
        if let Some(r) = not_computed_reason(m, &opts.weights) {
            metric_notes.insert(m.id().to_string(), r);
        }
    }
    metric_notes.insert("synth-fid".into(), "strata-synthetic FID: Fréchet distance on the strata segmenter's bottleneck features, trained on procedural scenes; not comparable to standard (Inception) FID".into());
    Ok(EvalReport {
        real: opts.real.clone(),
        real_images: real.images.len(),
        protocol,
        segmenter: quality,
        real_relation_fidelity: real_fid,
        sets: rows,
        metric_notes,
        failed,
    })
}
