//! GSHPS: cosine of the mean scene-classifier feature vectors of name-matched real and
//! generated images. With `--vgg16-weights` the paper's VGG16; without, a stand-in CNN
//! strata trains on the real set's scene labels (loaded from / saved to
//! `weights.gshps_classifier`), labelled as a stand-in in every output.

use std::collections::BTreeMap;

use candle_core::Tensor;
use strata_caption::MetadataRecord;

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
}

/// The GSHPS stand-in classifier: loaded from `weights.gshps_classifier` when that file
/// exists, else trained on the real images' scene labels (from the captions) and saved
/// there. `Ok(Err(why))` when it cannot be had.
fn stand_in(
    opts: &EvalOptions,
    real: &ImageSet,
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
                .unwrap_or_else(|| StandInQuality {
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
                if s.is_multiple_of(50) || s == steps {
                    progress(&format!(
                        "GSHPS stand-in classifier step {s}/{steps} loss {l:.3}"
                    ));
                }
            };
            let (net, q) = crate::gshps::train_scene_cnn(&data, &w.gshps_train, &mut cb)?;
            if let Some(p) = &w.gshps_classifier {
                net.save(p)?;
                let qp = p.with_extension("quality.json");
                let text = serde_json::to_string_pretty(&q).unwrap_or_default();
                strata_io::atomic::write(&qp, text.as_bytes()).map_err(|source| EvalError::Io {
                    path: qp.clone(),
                    what: "writing the stand-in classifier's quality".into(),
                    source,
                })?;
            }
            (net, q)
        }
    };
    Ok(Ok(GshpsNet::StandIn(net, q)))
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
                match stand_in(
                    ctx.opts,
                    &ctx.real,
                    ctx.captions.as_ref(),
                    &mut *ctx.progress,
                )? {
                    Ok(n) => self.net = Some(n),
                    Err(why) => self.reason = why,
                }
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

    fn protocol(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        match &self.net {
            Some(n) => vec![("gshps".into(), n.protocol())],
            None => Vec::new(),
        }
    }

    fn notes(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        if self.net.as_ref().is_some_and(|n| n.is_stand_in()) {
            vec![("gshps".into(), "GSHPS here uses strata's stand-in scene classifier (no --vgg16-weights given): not the paper's VGG16 GSHPS".into())]
        } else if !self.reason.is_empty() {
            vec![("gshps".into(), self.reason.clone())]
        } else {
            Vec::new()
        }
    }
}
