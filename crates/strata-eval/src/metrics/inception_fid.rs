//! Standard FID and KID: pytorch-fid's Inception-v3 pool3 features of the real and the
//! generated images (features of each generated set computed once for both columns).

use crate::error::EvalError;
use crate::fid::{frechet_distance_features, Features};
use crate::images::Rgb;
use crate::inception::InceptionV3;
use crate::run::{Metric, MetricValue};

use super::context::unit_tensor;
use super::{EvalContext, MetricImpl};

const NEEDS_WEIGHTS: &str =
    "not computed: needs --inception-weights pt_inception-2015-12-05-*.pth (pytorch-fid's file)";

#[derive(Default)]
pub struct InceptionFid {
    net: Option<InceptionV3>,
    real: Option<Features>,
    /// `(set, features)` of the set scored last.
    set: Option<(usize, Features)>,
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

impl MetricImpl for InceptionFid {
    fn name(&self) -> &'static str {
        "FID/KID (Inception-v3)"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::Fid, Metric::Kid]
    }

    fn prepare(&mut self, ctx: &mut EvalContext) -> Result<(), EvalError> {
        if let Some(p) = &ctx.opts.weights.inception {
            ctx.progress(&format!("loading Inception-v3 {}", p.display()));
            let net = InceptionV3::load(p, &ctx.opts.device)?;
            ctx.progress("Inception features of the real images");
            self.real = Some(inception_features(&net, &ctx.real.refs())?);
            self.net = Some(net);
        }
        Ok(())
    }

    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        id: Metric,
    ) -> Result<MetricValue, EvalError> {
        let (Some(net), Some(rf)) = (&self.net, &self.real) else {
            return Ok(MetricValue::none(NEEDS_WEIGHTS));
        };
        if self.set.as_ref().map(|s| s.0) != Some(set) {
            ctx.progress(&format!("Inception features of {}", ctx.sets[set].label));
            self.set = Some((set, inception_features(net, &ctx.sets[set].refs())?));
        }
        let gf = &self.set.as_ref().expect("computed above").1;
        let proto = net.protocol();
        Ok(if id == Metric::Fid {
            match frechet_distance_features(rf, gf) {
                Ok(v) => MetricValue::val(v, format!(
                    "FID (pytorch-fid formula) on {} real vs {} generated images; {proto}; with a few hundred images FID is biased upward, compare only at equal sample counts",
                    rf.n, gf.n)),
                Err(e) => MetricValue::none(format!("not computed: {}", crate::error::chain(&e))),
            }
        } else {
            match super::synth_fid::kid_or_reason(rf, gf, ctx) {
                Ok(k) => MetricValue {
                    value: Some(k.mean),
                    std: Some(k.std),
                    note: format!(
                        "KID: polynomial-kernel unbiased MMD² on Inception pool3, {} subsets of {} (seed {}), {} real vs {} generated; {proto}",
                        k.subsets, k.subset_size, k.seed, rf.n, gf.n),
                },
                Err(why) => MetricValue::none(why),
            }
        })
    }

    fn protocol(&self, ctx: &EvalContext) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if ctx.wants(Metric::Kid) {
            out.push(("kid".into(), super::synth_fid::kid_protocol(ctx)));
        }
        if let Some(n) = &self.net {
            out.push(("inception".into(), n.protocol()));
        }
        out
    }

    fn notes(&self, ctx: &EvalContext) -> Vec<(String, String)> {
        if ctx.opts.weights.inception.is_none() {
            vec![
                ("fid".into(), NEEDS_WEIGHTS.into()),
                ("kid".into(), NEEDS_WEIGHTS.into()),
            ]
        } else {
            Vec::new()
        }
    }
}
