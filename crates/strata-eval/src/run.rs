//! `strata eval` as a library call: read the folders, compute what can be computed, say why
//! the rest is not. The metrics themselves live in [`crate::metrics`], one implementation
//! of [`crate::metrics::MetricImpl`] each; [`evaluate`] builds the shared context and loops
//! over sets and requested columns. [`crate::report`] writes the outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::fidelity::RelationFidelity;
use crate::gshps::CnnTrainOptions;
use crate::metrics::{registry, EvalContext, Needs};
use crate::per_image::ImageValues;
use crate::seg::{SegQuality, Segmenter, TrainOptions, SEG_SIZE};

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
    /// and its `*.train.json` record exist, else trained (on `gshps_train_dir`, or on
    /// synthetic scenes) and written there.
    pub gshps_classifier: Option<PathBuf>,
    pub gshps_train: CnnTrainOptions,
    /// Images the GSHPS stand-in trains on (a folder with a metadata.jsonl giving each
    /// image's `scene`); default: fresh synthetic scenes. Refused when one has the pixels of
    /// a scored image.
    pub gshps_train_dir: Option<PathBuf>,
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
    /// Segmenter weights: loaded when the file exists, otherwise trained and written there
    /// (used when `segmenter_net` is `None`).
    pub segmenter: Option<PathBuf>,
    /// A ready segmenter (e.g. the embedded captioner's network, through
    /// `strata_captioner::embedded::EmbeddedSegmenter`); `None`: strata's small SegNet from
    /// `segmenter` / `train`.
    pub segmenter_net: Option<std::sync::Arc<dyn Segmenter>>,
    pub train: TrainOptions,
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    pub seed: u64,
    pub weights: WeightPaths,
    /// Scenes shown in the report's image grid.
    pub grid_scenes: usize,
    /// Where the networks behind the metrics run (the CPU, or a CUDA GPU).
    pub device: candle_core::Device,
}

/// A table cell: a value, or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricValue {
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Protocol or reason for the missing value.
    pub note: String,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetResult {
    pub label: String,
    pub method: String,
    pub caption_kind: String,
    pub dir: PathBuf,
    pub images: usize,
    /// Images whose name matches a real image.
    pub paired_with_real: usize,
    pub metrics: BTreeMap<String, MetricValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_fidelity: Option<RelationFidelity>,
    /// Per-image values, aligned with the set folder's image files (not in metrics.json;
    /// written to per_image.jsonl).
    #[serde(skip)]
    pub per_image: Vec<ImageValues>,
}

/// Everything `metrics.json` holds (read back with serde_json by the demo report).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// GSHPS comes from strata's stand-in classifier (no VGG16 weights): its heading is
    /// "GSHPS (stand-in)" wherever it appears ([`EvalReport::heading`]).
    #[serde(default)]
    pub gshps_stand_in: bool,
    /// Per-image values of the real folder (segmenter features, GSHPS features, relation
    /// counts), aligned with its image files (not in metrics.json; written to
    /// per_image.jsonl).
    #[serde(skip)]
    pub real_per_image: Vec<ImageValues>,
}

/// Run the evaluation. `progress(message)` reports stages; the returned report lists
/// skipped items in `failed`.
pub fn evaluate(
    opts: &EvalOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<EvalReport, EvalError> {
    let mut impls = registry();
    let wanted: Vec<bool> = impls
        .iter()
        .map(|i| i.ids().iter().any(|m| opts.metrics.contains(m)))
        .collect();
    let needs =
        impls
            .iter()
            .zip(&wanted)
            .filter(|(_, w)| **w)
            .fold(Needs::default(), |n, (i, _)| Needs {
                segmentation: n.segmentation || i.needs().segmentation,
            });
    let mut ctx = EvalContext::build(opts, needs.segmentation, progress)?;
    for (imp, _) in impls.iter_mut().zip(&wanted).filter(|(_, w)| **w) {
        imp.prepare(&mut ctx)?;
    }
    let owner = |m: Metric| {
        impls
            .iter()
            .position(|i| i.ids().contains(&m))
            .expect("every metric has an implementation")
    };
    let owners: Vec<usize> = opts.metrics.iter().map(|&m| owner(m)).collect();
    let mut rows = Vec::new();
    for (si, g) in opts.generated.iter().enumerate() {
        ctx.progress(&format!("scoring {}", g.label));
        let mut metrics = BTreeMap::new();
        for (&m, &o) in opts.metrics.iter().zip(&owners) {
            let v = impls[o].compute(&mut ctx, si, m)?;
            metrics.insert(m.id().to_string(), v);
        }
        let (method, kind) = g.method_and_kind();
        let s = &ctx.sets[si];
        rows.push(SetResult {
            label: g.label.clone(),
            method,
            caption_kind: kind,
            dir: g.dir.clone(),
            images: s.images.len(),
            paired_with_real: s.keys.iter().filter(|k| ctx.real.keys.contains(k)).count(),
            metrics,
            relation_fidelity: ctx.set_relation_fidelity[si].take(),
            per_image: std::mem::take(&mut ctx.set_values[si]),
        });
    }
    let mut protocol = BTreeMap::new();
    if ctx.segmentation.is_some() {
        protocol.insert(
            "segmenter_input".into(),
            format!(
                "{SEG_SIZE}x{SEG_SIZE} RGB, box filter when shrinking, bilinear when enlarging"
            ),
        );
        if opts.segmenter_net.is_none() {
            protocol.insert(
                "segmenter_training".into(),
                serde_json::to_string(&opts.train).unwrap_or_default(),
            );
        }
        if let Some(s) = &ctx.segmentation {
            protocol.insert(
                "segmenter".into(),
                format!(
                    "{}; quality measured on {} held-out synthetic scenes, scene_seed({}, i)",
                    s.quality.segmenter,
                    s.quality.held_out_scenes,
                    s.quality.held_out_seed.unwrap_or_default()
                ),
            );
        }
    }
    protocol.insert(
        "captions".into(),
        ctx.caption_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into()),
    );
    for (imp, _) in impls.iter().zip(&wanted).filter(|(_, w)| **w) {
        protocol.extend(imp.protocol(&ctx));
    }
    protocol.insert(
        "samples".into(),
        format!(
            "{} real images; generated: {}",
            ctx.real.images.len(),
            ctx.sets
                .iter()
                .enumerate()
                .map(|(i, s)| format!(
                    "{} {} ({} name-matched)",
                    s.label,
                    s.images.len(),
                    ctx.pairs(i).len()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let mut metric_notes = BTreeMap::new();
    for imp in &impls {
        metric_notes.extend(imp.notes(&ctx));
    }
    Ok(EvalReport {
        real: opts.real.clone(),
        real_images: ctx.real.images.len(),
        protocol,
        segmenter: ctx.segmentation.map(|s| s.quality),
        real_relation_fidelity: ctx.real_relation_fidelity,
        sets: rows,
        metric_notes,
        failed: ctx.failed,
        gshps_stand_in: opts.metrics.contains(&Metric::Gshps)
            && opts.weights.vgg16_classifier.is_none(),
        real_per_image: ctx.real_values,
    })
}

impl EvalReport {
    /// The column heading of `m` in this report: [`Metric::heading`], except GSHPS from the
    /// stand-in classifier, headed "GSHPS (stand-in)↑".
    pub fn heading(&self, m: Metric) -> String {
        if m == Metric::Gshps && self.gshps_stand_in {
            "GSHPS (stand-in)↑".into()
        } else {
            m.heading().into()
        }
    }
}
