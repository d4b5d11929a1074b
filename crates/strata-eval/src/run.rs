//! `strata eval` as a library call: read the folders, compute what can be computed, say why
//! the rest is not, and write `metrics.json`, `table.txt` and `report.html`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_caption::MetadataRecord;
use strata_synth::Triple;

use crate::clipscore::{clip_score, ClipScorer};
use crate::error::EvalError;
use crate::fid::{frechet_distance_features, kid, Features};
use crate::fidelity::{relation_fidelity, MaskedImage, RelationFidelity};
use crate::gshps::{CnnTrainOptions, GshpsNet, SceneCnn};
use crate::images::resize;
use crate::images::{list_pngs, pair_key, read_png, Rgb};
use crate::inception::InceptionV3;
use crate::lpips::Lpips;
use crate::pieapp::PieApp;
use crate::seg::{Prediction, SegNet, SegQuality, TrainOptions, SEG_SIZE};
use candle_core::{Device, Tensor};

/// The metrics `strata eval` knows, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Metric {
    Fid,
    Kid,
    SynthFid,
    SynthKid,
    Lpips,
    ClipScore,
    ClipCosine,
    PieApp,
    Gshps,
    QAlign,
    RelationFidelity,
}

impl Metric {
    pub const ALL: [Metric; 11] = [
        Metric::Fid,
        Metric::Kid,
        Metric::SynthFid,
        Metric::SynthKid,
        Metric::Lpips,
        Metric::ClipScore,
        Metric::ClipCosine,
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
            Metric::ClipCosine => "clip-cosine",
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
            Metric::ClipCosine => "CLIP-cos↑",
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

/// User weight files for the networks strata cannot ship, and the GSHPS stand-in's
/// settings.
#[derive(Debug, Clone, Default)]
pub struct WeightPaths {
    /// pytorch-fid's Inception-v3 (`pt_inception-2015-12-05-*.pth`) or its safetensors.
    pub inception: Option<PathBuf>,
    /// torchvision AlexNet (`alexnet-owt-7be5be79.pth`) or VGG16 (`vgg16-397923af.pth`).
    pub lpips_backbone: Option<PathBuf>,
    /// lpips 0.1.4 linear heads (`weights/v0.1/{alex,vgg}.pth`); default: the copy
    /// shipped in strata (BSD-2).
    pub lpips_heads: Option<PathBuf>,
    /// A transformers CLIP folder (model.safetensors, config.json, vocab.json, merges.txt).
    pub clip: Option<PathBuf>,
    /// VGG16 scene classifier (torchvision layout) for GSHPS.
    pub vgg16_classifier: Option<PathBuf>,
    /// The GSHPS stand-in classifier's weights when no VGG16 is given: loaded if the file
    /// exists, else trained on the real set's scene labels and written there.
    pub gshps_classifier: Option<PathBuf>,
    pub gshps_train: CnnTrainOptions,
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
            Err(e) => failed.push((p.display().to_string(), crate::error::chain(&e))),
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
        Metric::Fid | Metric::Kid if w.inception.is_none() => Some("not computed: needs --inception-weights pt_inception-2015-12-05-*.pth (pytorch-fid's file)".into()),
        Metric::Lpips if w.lpips_backbone.is_none() => Some("not computed: needs --lpips-backbone (torchvision alexnet-owt-7be5be79.pth or vgg16-397923af.pth); the lpips 0.1.4 linear heads ship with strata".into()),
        Metric::ClipScore | Metric::ClipCosine if w.clip.is_none() => Some("not computed: needs --clip-weights (a transformers CLIP folder, e.g. openai/clip-vit-base-patch32: model.safetensors, config.json, vocab.json, merges.txt)".into()),
        Metric::PieApp if w.pieapp.is_none() => Some("not computed: needs --pieapp-weights (PieAPPv0.1.pth, the published PieAPP network weights)".into()),
        Metric::QAlign => Some("not computed: Q-Align needs a multi-billion-parameter LMM (mPLUG-Owl2), out of scope for strata".into()),
        _ => None,
    }
}

/// `imgs` as N×3×H×W in [0, 1].
fn unit_tensor(imgs: &[&Rgb]) -> Result<Tensor, EvalError> {
    Ok(crate::resample::to_tensor(
        &imgs.iter().map(|i| (*i).clone()).collect::<Vec<_>>(),
        [0.0; 3],
        [1.0; 3],
        &Device::Cpu,
    )?)
}

/// Indices `(real, generated)` of the images whose names match.
fn pairs(real: &Loaded, gen: &Loaded) -> Vec<(usize, usize)> {
    let idx: BTreeMap<&String, usize> = real.keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    gen.keys
        .iter()
        .enumerate()
        .filter_map(|(g, k)| idx.get(k).map(|&r| (r, g)))
        .collect()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// Mean LPIPS over name-matched pairs; the generated image is resized to the real one's
/// size when they differ.
fn lpips_value(net: &Lpips, real: &Loaded, gen: &Loaded) -> Result<MetricValue, EvalError> {
    let ps = pairs(real, gen);
    if ps.is_empty() {
        return Ok(MetricValue::none("not computed: no generated image has the file name of a real image (LPIPS compares name-matched pairs)"));
    }
    let mut d = Vec::with_capacity(ps.len());
    let mut resized = 0;
    for &(r, g) in &ps {
        let a = &real.images[r];
        let b = &gen.images[g];
        let b = if (b.width, b.height) != (a.width, a.height) {
            resized += 1;
            resize(b, a.width, a.height)
        } else {
            b.clone()
        };
        let x = net.distance(&unit_tensor(&[a])?, &unit_tensor(&[&b])?)?;
        d.push(x[0] as f64);
    }
    let (m, sd) = mean_std(&d);
    Ok(MetricValue {
        value: Some(m),
        std: Some(sd),
        note: format!(
            "mean ± std over {} generated/real pairs matched by file name, at the real image's size ({} generated images resized, box/bilinear); {}",
            d.len(),
            resized,
            net.protocol()
        ),
    })
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
    let w = &opts.weights;
    let lpips = match (&w.lpips_backbone, wants(Metric::Lpips)) {
        (Some(p), true) => {
            progress(&format!("loading LPIPS backbone {}", p.display()));
            Some(Lpips::load(p, w.lpips_heads.as_deref(), &Device::Cpu)?)
        }
        _ => None,
    };
    let inception = match (&w.inception, wants(Metric::Fid) || wants(Metric::Kid)) {
        (Some(p), true) => {
            progress(&format!("loading Inception-v3 {}", p.display()));
            Some(InceptionV3::load(p, &Device::Cpu)?)
        }
        _ => None,
    };
    let inception_real = match &inception {
        Some(net) => {
            progress("Inception features of the real images");
            Some(inception_features(
                net,
                &real.images.iter().collect::<Vec<_>>(),
            )?)
        }
        None => None,
    };
    let pieapp = match (&w.pieapp, wants(Metric::PieApp)) {
        (Some(p), true) => {
            progress(&format!("loading PieAPP {}", p.display()));
            Some(PieApp::load(p, &Device::Cpu)?)
        }
        _ => None,
    };
    let clip = match (
        &w.clip,
        wants(Metric::ClipScore) || wants(Metric::ClipCosine),
    ) {
        (Some(p), true) => {
            progress(&format!("loading CLIP {}", p.display()));
            Some(ClipScorer::load(p, &Device::Cpu)?)
        }
        _ => None,
    };
    let mut gshps_reason = String::new();
    let gshps_net = if wants(Metric::Gshps) {
        match &w.vgg16_classifier {
            Some(p) => {
                progress(&format!("loading VGG16 {}", p.display()));
                Some(GshpsNet::load_vgg16(p, &Device::Cpu)?)
            }
            None => match stand_in(opts, &real, caps.as_ref(), progress)? {
                Ok(n) => Some(n),
                Err(why) => {
                    gshps_reason = why;
                    None
                }
            },
        }
    } else {
        None
    };
    let gshps_real = match &gshps_net {
        Some(n) => {
            progress("GSHPS features of the real images");
            Some(n.features(&real.images.iter().collect::<Vec<_>>(), &Device::Cpu)?)
        }
        None => None,
    };
    let mut rows = Vec::new();
    for (si, (g, s)) in opts.generated.iter().zip(&sets).enumerate() {
        progress(&format!("scoring {}", g.label));
        let (method, kind) = g.method_and_kind();
        let paired = s.keys.iter().filter(|k| real.keys.contains(k)).count();
        let mut metrics = BTreeMap::new();
        let mut clip_vals: Option<BTreeMap<&str, MetricValue>> = None;
        let mut inception_gen: Option<Features> = None;
        let mut rf = None;
        for &m in &opts.metrics {
            let v = match m {
                Metric::SynthFid => {
                    let gf = feats(&set_preds[si])?;
                    match frechet_distance_features(real_feats.as_ref().unwrap(), &gf) {
                        Ok(v) => MetricValue::val(v, format!(
                            "strata-synthetic FID, not comparable to standard FID: {}-d segmenter bottleneck features at {SEG_SIZE}x{SEG_SIZE} (box/bilinear resize), {} real vs {} generated images",
                            gf.d, real.images.len(), s.images.len())),
                        Err(e) => MetricValue::none(format!("not computed: {}", crate::error::chain(&e))),
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
                        Err(e) => MetricValue::none(format!("not computed: {}", crate::error::chain(&e))),
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
                Metric::Fid | Metric::Kid if inception.is_some() => {
                    if inception_gen.is_none() {
                        progress(&format!("Inception features of {}", g.label));
                        inception_gen = Some(inception_features(
                            inception.as_ref().unwrap(),
                            &s.images.iter().collect::<Vec<_>>(),
                        )?);
                    }
                    let (rf, gf) = (inception_real.as_ref().unwrap(), inception_gen.as_ref().unwrap());
                    let proto = inception.as_ref().unwrap().protocol();
                    if m == Metric::Fid {
                        match frechet_distance_features(rf, gf) {
                            Ok(v) => MetricValue::val(v, format!(
                                "FID (pytorch-fid formula) on {} real vs {} generated images; {proto}; with a few hundred images FID is biased upward, compare only at equal sample counts",
                                rf.n, gf.n)),
                            Err(e) => MetricValue::none(format!("not computed: {}", crate::error::chain(&e))),
                        }
                    } else {
                        match kid(rf, gf, opts.kid_subsets, opts.kid_subset_size, opts.seed) {
                            Ok(k) => MetricValue {
                                value: Some(k.mean),
                                std: Some(k.std),
                                note: format!(
                                    "KID: polynomial-kernel unbiased MMD² on Inception pool3, {} subsets of {} (seed {}; subset size capped at the smaller set), {} real vs {} generated; {proto}",
                                    k.subsets, k.subset_size, k.seed, rf.n, gf.n),
                            },
                            Err(e) => MetricValue::none(format!("not computed: {}", crate::error::chain(&e))),
                        }
                    }
                }
                Metric::PieApp if pieapp.is_some() => {
                    progress(&format!("PieAPP {}", g.label));
                    pieapp_value(pieapp.as_ref().unwrap(), &real, s)?
                }
                Metric::Lpips if lpips.is_some() => {
                    progress(&format!("LPIPS {}", g.label));
                    lpips_value(lpips.as_ref().unwrap(), &real, s)?
                }
                Metric::ClipScore | Metric::ClipCosine if clip.is_some() => {
                    let key = if m == Metric::ClipScore { "clipscore" } else { "clip-cosine" };
                    if clip_vals.is_none() {
                        progress(&format!("CLIPScore {}", g.label));
                        clip_vals = Some(clip_value(clip.as_ref().unwrap(), s, caps.as_ref(), &g.dir, &mut failed)?);
                    }
                    clip_vals.as_ref().unwrap()[key].clone()
                }
                Metric::Gshps => match (&gshps_net, &gshps_real) {
                    (Some(n), Some(fr)) => {
                        progress(&format!("GSHPS {}", g.label));
                        gshps_value(n, fr, &real, s)?
                    }
                    _ => MetricValue::none(gshps_reason.clone()),
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
    if need_seg {
        protocol.insert(
            "segmenter_input".into(),
            format!(
                "{SEG_SIZE}x{SEG_SIZE} RGB, box filter when shrinking, bilinear when enlarging"
            ),
        );
        protocol.insert(
            "segmenter_training".into(),
            serde_json::to_string(&opts.train).unwrap_or_default(),
        );
    }
    if wants(Metric::Kid) || wants(Metric::SynthKid) {
        protocol.insert(
            "kid".into(),
            format!(
                "{} subsets of min({}, n_real, n_generated), seed {}",
                opts.kid_subsets, opts.kid_subset_size, opts.seed
            ),
        );
    }
    protocol.insert(
        "captions".into(),
        caption_path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into()),
    );
    if let Some(n) = &inception {
        protocol.insert("inception".into(), n.protocol());
    }
    if let Some(p) = &pieapp {
        protocol.insert("pieapp".into(), format!("{}; pairs matched by file name, generated resized to the real image's size when they differ; value = mean over pairs", p.protocol()));
    }
    if let Some(l) = &lpips {
        protocol.insert("lpips".into(), format!("{}; pairs matched by file name (generated vs real), generated resized to the real image's size when they differ; value = mean over pairs (lower = closer to the real image)", l.protocol()));
    }
    if let Some(c) = &clip {
        protocol.insert("clipscore".into(), format!("{}; `clipscore` = torchmetrics CLIPScore max(100·mean(cos), 0); `clip-cosine` = mean cosine (0–1 scale)", c.protocol()));
    }
    if let Some(n) = &gshps_net {
        protocol.insert("gshps".into(), n.protocol());
    }
    protocol.insert(
        "samples".into(),
        format!(
            "{} real images; generated: {}",
            real.images.len(),
            opts.generated
                .iter()
                .zip(&sets)
                .map(|(g, s)| format!(
                    "{} {} ({} name-matched)",
                    g.label,
                    s.images.len(),
                    pairs(&real, s).len()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let mut metric_notes = BTreeMap::new();
    for m in Metric::ALL {
        if let Some(r) = not_computed_reason(m, &opts.weights) {
            metric_notes.insert(m.id().to_string(), r);
        }
    }
    if !gshps_reason.is_empty() {
        metric_notes.insert("gshps".into(), gshps_reason.clone());
    }
    if gshps_net.as_ref().is_some_and(|n| n.is_stand_in()) {
        metric_notes.insert("gshps".into(), "GSHPS here uses strata's stand-in scene classifier (no --vgg16-weights given): not the paper's VGG16 GSHPS".into());
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

/// The GSHPS stand-in classifier: loaded from `weights.gshps_classifier` when that file
/// exists, else trained on the real images' scene labels (from the captions) and saved
/// there. `Ok(Err(why))` when it cannot be had.
fn stand_in(
    opts: &EvalOptions,
    real: &Loaded,
    caps: Option<&BTreeMap<String, MetadataRecord>>,
    progress: &mut dyn FnMut(&str),
) -> Result<Result<GshpsNet, String>, EvalError> {
    let w = &opts.weights;
    let Some(caps) = caps else {
        return Ok(Err("not computed: needs --vgg16-weights (VGG16 scene classifier, torchvision layout), or captions with scene labels so strata can train its stand-in classifier".into()));
    };
    let data: Vec<(&Rgb, &str)> = real
        .keys
        .iter()
        .zip(&real.images)
        .filter_map(|(k, img)| lookup(caps, k).map(|r| (img, r.scene.as_str())))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let (net, q) = match &w.gshps_classifier {
        Some(p) if p.is_file() => {
            progress(&format!(
                "loading the GSHPS stand-in classifier {}",
                p.display()
            ));
            let net = SceneCnn::load(p)?;
            let q = std::fs::read_to_string(p.with_extension("quality.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_else(|| crate::gshps::StandInQuality {
                    classes: net.classes.clone(),
                    train_images: 0,
                    held_out_images: 0,
                    held_out_accuracy: None,
                    steps: 0,
                    final_loss: f64::NAN,
                });
            (net, q)
        }
        _ => {
            let mut classes: Vec<&str> = data.iter().map(|(_, s)| *s).collect();
            classes.sort();
            classes.dedup();
            if classes.len() < 2 || data.len() < 4 {
                return Ok(Err(format!("not computed: needs --vgg16-weights; the stand-in classifier needs real images of at least 2 scene labels in the captions, found {} images of {} labels", data.len(), classes.len())));
            }
            let steps = w.gshps_train.steps;
            let mut cb = |s: usize, l: f64| {
                if s % 50 == 0 || s == steps {
                    progress(&format!(
                        "GSHPS stand-in classifier step {s}/{steps} loss {l:.3}"
                    ));
                }
            };
            let (net, q) = crate::gshps::train_scene_cnn(&data, &w.gshps_train, &mut cb)?;
            if let Some(p) = &w.gshps_classifier {
                net.save(p)?;
                let qp = p.with_extension("quality.json");
                std::fs::write(&qp, serde_json::to_string_pretty(&q).unwrap_or_default()).map_err(
                    |source| EvalError::Io {
                        path: qp.clone(),
                        what: "writing the stand-in classifier's quality".into(),
                        source,
                    },
                )?;
            }
            (net, q)
        }
    };
    Ok(Ok(GshpsNet::StandIn(net, q)))
}

fn gshps_value(
    net: &GshpsNet,
    real_feats: &Tensor,
    real: &Loaded,
    gen: &Loaded,
) -> Result<MetricValue, EvalError> {
    let ps = pairs(real, gen);
    if ps.is_empty() {
        return Ok(MetricValue::none("not computed: no generated image has the file name of a real image (GSHPS needs pairwise file names)"));
    }
    let ri: Vec<u32> = ps.iter().map(|&(r, _)| r as u32).collect();
    let fr = real_feats.index_select(&Tensor::new(ri.as_slice(), &Device::Cpu)?, 0)?;
    let imgs: Vec<&Rgb> = ps.iter().map(|&(_, g)| &gen.images[g]).collect();
    let fg = net.features(&imgs, &Device::Cpu)?;
    let v = crate::gshps::gshps(&fr, &fg)?;
    let label = if net.is_stand_in() {
        "STAND-IN GSHPS (strata-trained scene CNN, not the paper's VGG16)"
    } else {
        "GSHPS (VGG16 features)"
    };
    Ok(MetricValue::val(
        v,
        format!(
            "{label}: cosine of the mean feature vectors of {} name-matched pairs; {}",
            ps.len(),
            net.protocol()
        ),
    ))
}

/// Both CLIPScore numbers for a generated set, against each image's caption record.
fn clip_value(
    clip: &ClipScorer,
    gen: &Loaded,
    caps: Option<&BTreeMap<String, MetadataRecord>>,
    dir: &Path,
    failed: &mut Vec<(String, String)>,
) -> Result<BTreeMap<&'static str, MetricValue>, EvalError> {
    let mut out = BTreeMap::new();
    let Some(caps) = caps else {
        let why = "not computed: CLIPScore needs --captions metadata.jsonl (or one in the real folder) to know each image's prompt";
        out.insert("clipscore", MetricValue::none(why));
        out.insert("clip-cosine", MetricValue::none(why));
        return Ok(out);
    };
    let mut imgs = Vec::new();
    let mut texts = Vec::new();
    for (k, img) in gen.keys.iter().zip(&gen.images) {
        match lookup(caps, k) {
            Some(r) if !r.text.trim().is_empty() => {
                imgs.push(img.clone());
                texts.push(r.text.clone());
            }
            Some(_) => failed.push((
                format!("{} (caption of {k})", dir.display()),
                "empty `text`: no prompt for CLIPScore".into(),
            )),
            None => {}
        }
    }
    if imgs.is_empty() {
        let why =
            "not computed: no generated image matched a caption record (names must match pairwise)";
        out.insert("clipscore", MetricValue::none(why));
        out.insert("clip-cosine", MetricValue::none(why));
        return Ok(out);
    }
    let cos = clip.cosines(&imgs, &texts, &Device::Cpu)?;
    let sc = clip_score(&cos);
    let (_, sd) = mean_std(&cos.iter().map(|&c| c as f64).collect::<Vec<_>>());
    out.insert(
        "clipscore",
        MetricValue::val(sc.torchmetrics, format!("torchmetrics CLIPScore = max(100·mean(cos), 0) over {} images with their caption's `text`", cos.len())),
    );
    out.insert(
        "clip-cosine",
        MetricValue {
            value: Some(sc.cosine),
            std: Some(sd),
            note: format!("mean CLIP image–text cosine (0–1 scale, as the paper appears to report) over {} images", cos.len()),
        },
    );
    Ok(out)
}

/// Inception pool3 features of images of any sizes (each image goes through pytorch-fid's
/// own resize to 299×299).
fn inception_features(net: &InceptionV3, imgs: &[&Rgb]) -> Result<Features, EvalError> {
    let mut rows = Vec::with_capacity(imgs.len());
    let mut i = 0;
    while i < imgs.len() {
        // consecutive images of the same size go through together
        let (w, h) = (imgs[i].width, imgs[i].height);
        let mut j = i + 1;
        while j < imgs.len() && j - i < 8 && (imgs[j].width, imgs[j].height) == (w, h) {
            j += 1;
        }
        let f = net.pool_features(&unit_tensor(&imgs[i..j])?)?;
        for r in f.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()? {
            rows.push(r);
        }
        i = j;
    }
    Features::from_rows(&rows)
}

fn pieapp_value(net: &PieApp, real: &Loaded, gen: &Loaded) -> Result<MetricValue, EvalError> {
    let ps = pairs(real, gen);
    if ps.is_empty() {
        return Ok(MetricValue::none("not computed: no generated image has the file name of a real image (PieAPP compares name-matched pairs)"));
    }
    let mut v = Vec::with_capacity(ps.len());
    for &(r, g) in &ps {
        let a = &real.images[r];
        let b = &gen.images[g];
        if a.width < 64 || a.height < 64 {
            return Ok(MetricValue::none(format!(
                "not computed: PieAPP needs images of at least 64×64, real images are {}×{}",
                a.width, a.height
            )));
        }
        let b = if (b.width, b.height) != (a.width, a.height) {
            resize(b, a.width, a.height)
        } else {
            b.clone()
        };
        let x = net.score(&unit_tensor(&[a])?, &unit_tensor(&[&b])?)?;
        v.push(x[0] as f64);
    }
    let (m, sd) = mean_std(&v);
    Ok(MetricValue {
        value: Some(m),
        std: Some(sd),
        note: format!("mean ± std over {} pairs matched by file name (reference = real, distorted = generated); {}", v.len(), net.protocol()),
    })
}
