//! GSHPS: cosine of the mean scene-classifier feature vectors of name-matched real and
//! generated images. With `--vgg16-weights` the paper's VGG16; without, a stand-in CNN
//! strata trains on the real set's scene labels (loaded from / saved to
//! `weights.gshps_classifier`), labelled as a stand-in in every output.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::gshps::{GshpsNet, SceneCnn, StandInQuality};
use crate::images::Rgb;
use crate::run::{EvalOptions, Metric, MetricValue};

use super::context::{lookup, ImageSet};
use super::{EvalContext, MetricImpl};

#[derive(Default)]
pub struct GshpsMetric {
    net: Option<GshpsNet>,
    real: Option<Tensor>,
    /// Why there is no network (empty when there is one or none was asked for).
    reason: String,
    /// What the stand-in was trained on (when it is used).
    training: Option<StandInTraining>,
}

/// Base seed of the synthetic scenes the stand-in trains on when no `--gshps-train` folder
/// is given (scene `i`: class `i mod 11`, seed `scene_seed(GSHPS_TRAIN_SEED + seed, i)`).
pub const GSHPS_TRAIN_SEED: u64 = 7_000;
/// Synthetic training scenes of the stand-in (ten per scene class).
pub const GSHPS_TRAIN_SCENES: usize = 110;

/// FNV-1a (64 bit) of an image's size and pixels: the content hash the disjointness check
/// compares (stable across runs, so it can be stored beside the classifier's weights).
pub fn content_hash(img: &Rgb) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for b in (img.width as u64)
        .to_le_bytes()
        .into_iter()
        .chain((img.height as u64).to_le_bytes())
    {
        eat(b);
    }
    for &b in &img.data {
        eat(b);
    }
    h
}

/// What the stand-in was trained on, written beside its weights as `*.train.json`: where
/// the images came from and their content hashes, checked against the scored images every
/// time the classifier is used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandInTraining {
    pub source: String,
    /// `(name, content hash as 16 hex digits)` per training image.
    pub images: Vec<(String, String)>,
}

/// `(name, pixels, scene label)` of one training image.
type TrainingImage = (String, Rgb, String);

/// The stand-in's training images: the `--gshps-train` folder (images with scene labels in
/// its metadata.jsonl), or fresh synthetic scenes.
fn training_images(opts: &EvalOptions) -> Result<(String, Vec<TrainingImage>), EvalError> {
    match &opts.weights.gshps_train_dir {
        Some(dir) => {
            let mut failed = Vec::new();
            let set = ImageSet::load("gshps-train", dir, &mut failed)?;
            if let Some((f, why)) = failed.first() {
                return Err(EvalError::BadInput {
                    path: dir.clone(),
                    what: format!("GSHPS training image {f} cannot be read: {why}"),
                });
            }
            let meta = [dir.join("metadata.jsonl"), dir.join("../metadata.jsonl")]
                .into_iter()
                .find(|p| p.is_file())
                .ok_or_else(|| EvalError::BadInput {
                    path: dir.clone(),
                    what: "has no metadata.jsonl with the images' `scene` labels (the GSHPS stand-in trains on them)".into(),
                })?;
            let caps = super::context::read_captions(&meta)?;
            let mut out = Vec::new();
            for ((k, f), img) in set.keys.iter().zip(&set.files).zip(set.images) {
                if let Some(r) = lookup(&caps, k).filter(|r| !r.scene.is_empty()) {
                    out.push((dir.join(f).display().to_string(), img, r.scene.clone()));
                }
            }
            Ok((format!("the --gshps-train folder {}", dir.display()), out))
        }
        None => {
            let base = GSHPS_TRAIN_SEED.wrapping_add(opts.weights.gshps_train.seed);
            let out = crate::seg::synth_samples(GSHPS_TRAIN_SCENES, base)
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    (
                        format!("synthetic scene scene_seed({base}, {i})"),
                        s.rgb,
                        s.scene.name().to_string(),
                    )
                })
                .collect();
            Ok((
                format!("{GSHPS_TRAIN_SCENES} fresh synthetic scenes, scene_seed({base}, 0..{GSHPS_TRAIN_SCENES}) at 64 px"),
                out,
            ))
        }
    }
}

/// Refuses when a training image has the content of a scored image (the real folder or a
/// generated set): the stand-in must never score the images it learned from.
pub fn check_disjoint(training: &StandInTraining, scored: &[&ImageSet]) -> Result<(), EvalError> {
    let train: BTreeMap<&str, &str> = training
        .images
        .iter()
        .map(|(n, h)| (h.as_str(), n.as_str()))
        .collect();
    for set in scored {
        for (f, img) in set.files.iter().zip(&set.images) {
            let h = format!("{:016x}", content_hash(img));
            if let Some(name) = train.get(h.as_str()) {
                return Err(EvalError::BadInput {
                    path: set.dir.join(f),
                    what: format!(
                        "has the same pixels (content hash {h}) as the GSHPS stand-in's training image {name} ({}): the stand-in must be trained on images disjoint from those it scores; pass another --gshps-train folder (or another --seed for synthetic training scenes), or delete the stand-in's weights to retrain",
                        training.source
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The GSHPS stand-in classifier: loaded from `weights.gshps_classifier` when that file
/// and its `*.train.json` exist, else trained on images disjoint from every scored one
/// ([`training_images`]) and saved there. Either way the training images' content hashes
/// are checked against the real and generated images ([`check_disjoint`]).
fn stand_in(
    opts: &EvalOptions,
    scored: &[&ImageSet],
    progress: &mut dyn FnMut(&str),
) -> Result<(GshpsNet, StandInTraining), EvalError> {
    let w = &opts.weights;
    let train_json = w
        .gshps_classifier
        .as_ref()
        .map(|p| p.with_extension("train.json"));
    let loaded = match (&w.gshps_classifier, &train_json) {
        (Some(p), Some(tj)) if p.is_file() && tj.is_file() => {
            let t: StandInTraining = std::fs::read_to_string(tj)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| EvalError::BadInput {
                    path: tj.clone(),
                    what: "is not the stand-in's training record (source, images); delete it and the weights beside it to retrain".into(),
                })?;
            progress(&format!(
                "loading the GSHPS stand-in classifier {}",
                p.display()
            ));
            let net = SceneCnn::load(p)?;
            let q = std::fs::read_to_string(p.with_extension("quality.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_else(|| StandInQuality {
                    classes: net.classes.clone(),
                    train_images: t.images.len(),
                    held_out_images: 0,
                    held_out_accuracy: None,
                    steps: 0,
                    final_loss: f64::NAN,
                });
            Some((GshpsNet::StandIn(net, q), t))
        }
        _ => None,
    };
    let (net, training) = match loaded {
        Some(x) => x,
        None => {
            let (source, images) = training_images(opts)?;
            let training = StandInTraining {
                source,
                images: images
                    .iter()
                    .map(|(n, img, _)| (n.clone(), format!("{:016x}", content_hash(img))))
                    .collect(),
            };
            check_disjoint(&training, scored)?;
            let data: Vec<(&Rgb, &str)> = images.iter().map(|(_, i, s)| (i, s.as_str())).collect();
            let steps = w.gshps_train.steps;
            let mut cb = |s: usize, l: f64| {
                if s.is_multiple_of(50) || s == steps {
                    progress(&format!(
                        "GSHPS stand-in classifier step {s}/{steps} loss {l:.3}"
                    ));
                }
            };
            let (net, q) = crate::gshps::train_scene_cnn(&data, &w.gshps_train, &mut cb)?;
            if let Some(p) = &w.gshps_classifier {
                net.save(p)?;
                for (path, text) in [
                    (
                        p.with_extension("quality.json"),
                        serde_json::to_string_pretty(&q),
                    ),
                    (
                        p.with_extension("train.json"),
                        serde_json::to_string(&training),
                    ),
                ] {
                    strata_io::atomic::write(&path, text.unwrap_or_default().as_bytes()).map_err(
                        |source| EvalError::Io {
                            path: path.clone(),
                            what: "writing the stand-in classifier's record".into(),
                            source,
                        },
                    )?;
                }
            }
            (GshpsNet::StandIn(net, q), training)
        }
    };
    check_disjoint(&training, scored)?;
    Ok((net, training))
}

/// Cosine of two vectors (`None` when one is all zeros).
fn cosine(a: &[f64], b: &[f64]) -> Option<f64> {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    (na > 0.0 && nb > 0.0).then(|| dot / (na * nb))
}

impl MetricImpl for GshpsMetric {
    fn name(&self) -> &'static str {
        "GSHPS"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::Gshps]
    }

    fn prepare(&mut self, ctx: &mut EvalContext) -> Result<(), EvalError> {
        match &ctx.opts.weights.vgg16_classifier {
            Some(p) => {
                ctx.progress(&format!("loading VGG16 {}", p.display()));
                self.net = Some(GshpsNet::load_vgg16(p, &ctx.opts.device)?);
            }
            None => {
                let scored: Vec<&ImageSet> =
                    std::iter::once(&ctx.real).chain(ctx.sets.iter()).collect();
                let (net, training) = stand_in(ctx.opts, &scored, &mut *ctx.progress)?;
                self.training = Some(training);
                self.net = Some(net);
            }
        }
        if let Some(n) = &self.net {
            ctx.progress("GSHPS features of the real images");
            let f = n.features(&ctx.real.refs(), &ctx.opts.device)?;
            let rows = f.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
            for (v, r) in ctx.real_values.iter_mut().zip(rows) {
                v.gshps_features = Some(r);
            }
            self.real = Some(f);
        }
        Ok(())
    }

    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        _id: Metric,
    ) -> Result<MetricValue, EvalError> {
        let (Some(net), Some(real_feats)) = (&self.net, &self.real) else {
            return Ok(MetricValue::none(self.reason.clone()));
        };
        ctx.progress(&format!("GSHPS {}", ctx.sets[set].label));
        let ps = ctx.pairs(set);
        if ps.is_empty() {
            return Ok(MetricValue::none("not computed: no generated image has the file name of a real image (GSHPS needs pairwise file names)"));
        }
        let gen = &ctx.sets[set];
        let ri: Vec<u32> = ps.iter().map(|&(r, _)| r as u32).collect();
        let fr = real_feats.index_select(&Tensor::new(ri.as_slice(), real_feats.device())?, 0)?;
        let imgs: Vec<&Rgb> = ps.iter().map(|&(_, g)| &gen.images[g]).collect();
        let fg = net.features(&imgs, &ctx.opts.device)?;
        let v = crate::gshps::gshps(&fr, &fg)?;
        let gen_rows = fg.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        for (&(r, g), row) in ps.iter().zip(gen_rows) {
            let value = &mut ctx.set_values[set][g];
            value.gshps_pair_cosine = ctx.real_values[r]
                .gshps_features
                .as_deref()
                .and_then(|a| cosine(a, &row));
            value.gshps_features = Some(row);
        }
        let label = if net.is_stand_in() {
            "GSHPS (stand-in): strata-trained scene CNN, not the paper's VGG16, trained on images disjoint from the scored ones"
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

    fn protocol(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        match (&self.net, &self.training) {
            (Some(n), Some(t)) => vec![(
                "gshps".into(),
                format!(
                    "{}; stand-in trained on {} ({} images, none with the pixels of a scored image)",
                    n.protocol(),
                    t.source,
                    t.images.len()
                ),
            )],
            (Some(n), None) => vec![("gshps".into(), n.protocol())],
            _ => Vec::new(),
        }
    }

    fn notes(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        if self.net.as_ref().is_some_and(|n| n.is_stand_in()) {
            vec![("gshps".into(), "GSHPS (stand-in): strata's stand-in scene classifier (no --vgg16-weights given), trained on images disjoint from the scored ones; not the paper's VGG16 GSHPS".into())]
        } else if !self.reason.is_empty() {
            vec![("gshps".into(), self.reason.clone())]
        } else {
            Vec::new()
        }
    }
}
