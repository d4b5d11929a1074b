//! strata-synthetic FID and KID: the same formulas on the strata segmenter's bottleneck
//! features (trained on procedural scenes). Not comparable to standard FID/KID; every
//! output says so.

use crate::error::EvalError;
use crate::fid::{frechet_distance_features, kid, Features, Kid};
use crate::run::{Metric, MetricValue};
use crate::seg::{Prediction, SEG_SIZE};

use super::{EvalContext, MetricImpl, Needs};

#[derive(Default)]
pub struct SynthFid {
    real: Option<Features>,
}

fn features(p: &[Prediction]) -> Result<Features, EvalError> {
    Features::from_rows(&p.iter().map(|x| x.features.clone()).collect::<Vec<_>>())
}

/// KID of two feature sets with the run's subsets, or why not: a folder with fewer images
/// than the subset size gives no value (subsets of the whole folder would all be the same
/// images, and their spread would be no error estimate).
pub fn kid_or_reason(rf: &Features, gf: &Features, ctx: &EvalContext) -> Result<Kid, String> {
    let o = ctx.opts;
    let n = rf.n.min(gf.n);
    if n < o.kid_subset_size {
        return Err(format!(
            "not computed: {n} images, fewer than the subset size {} (lower --kid-subset-size or score more images)",
            o.kid_subset_size
        ));
    }
    kid(rf, gf, o.kid_subsets, o.kid_subset_size, o.seed)
        .map_err(|e| format!("not computed: {}", crate::error::chain(&e)))
}

/// The `kid` protocol line (shared with the Inception KID).
pub fn kid_protocol(ctx: &EvalContext) -> String {
    let o = ctx.opts;
    format!(
        "{} subsets of {} images (not computed when a folder has fewer), seed {}",
        o.kid_subsets, o.kid_subset_size, o.seed
    )
}

fn segmentation<'c>(ctx: &'c EvalContext) -> &'c super::Segmentation {
    ctx.segmentation
        .as_ref()
        .expect("needs() asked for the segmentation")
}

impl MetricImpl for SynthFid {
    fn name(&self) -> &'static str {
        "strata-synthetic FID/KID (segmenter features)"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::SynthFid, Metric::SynthKid]
    }

    fn needs(&self) -> Needs {
        Needs { segmentation: true }
    }

    fn prepare(&mut self, ctx: &mut EvalContext) -> Result<(), EvalError> {
        self.real = Some(features(&segmentation(ctx).real)?);
        Ok(())
    }

    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        id: Metric,
    ) -> Result<MetricValue, EvalError> {
        let rf = self.real.as_ref().expect("prepared");
        let gf = features(&segmentation(ctx).sets[set])?;
        Ok(if id == Metric::SynthFid {
            match frechet_distance_features(rf, &gf) {
                Ok(v) => MetricValue::val(v, format!(
                    "strata-synthetic FID, not comparable to standard FID: {}-d segmenter bottleneck features at {SEG_SIZE}x{SEG_SIZE} (Pillow bilinear resize), {} real vs {} generated images",
                    gf.d, ctx.real.images.len(), ctx.sets[set].images.len())),
                Err(e) => MetricValue::none(format!("not computed: {}", crate::error::chain(&e))),
            }
        } else {
            match kid_or_reason(rf, &gf, ctx) {
                Ok(k) => MetricValue {
                    value: Some(k.mean),
                    std: Some(k.std),
                    note: format!(
                        "strata-synthetic KID, not comparable to standard KID: polynomial-kernel unbiased MMD², {} subsets of {} (seed {})",
                        k.subsets, k.subset_size, k.seed),
                },
                Err(why) => MetricValue::none(why),
            }
        })
    }

    fn protocol(&self, ctx: &EvalContext) -> Vec<(String, String)> {
        if ctx.wants(Metric::SynthKid) {
            vec![("kid".into(), kid_protocol(ctx))]
        } else {
            Vec::new()
        }
    }

    fn notes(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        vec![("synth-fid".into(), "strata-synthetic FID: Fréchet distance on the strata segmenter's bottleneck features, trained on procedural scenes; not comparable to standard (Inception) FID".into())]
    }
}
