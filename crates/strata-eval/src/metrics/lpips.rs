//! LPIPS between name-matched generated/real pairs (torchvision AlexNet or VGG16 backbone,
//! the lpips 0.1.4 linear heads).

use crate::error::EvalError;
use crate::lpips::Lpips;
use crate::run::{Metric, MetricValue};

use super::context::{mean_std, unit_tensor};
use super::{EvalContext, MetricImpl};

const NEEDS_WEIGHTS: &str = "not computed: needs --lpips-backbone (torchvision alexnet-owt-7be5be79.pth or vgg16-397923af.pth); the lpips 0.1.4 linear heads ship with strata";

#[derive(Default)]
pub struct LpipsMetric {
    net: Option<Lpips>,
}

impl MetricImpl for LpipsMetric {
    fn name(&self) -> &'static str {
        "LPIPS"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::Lpips]
    }

    fn prepare(&mut self, ctx: &mut EvalContext) -> Result<(), EvalError> {
        let w = &ctx.opts.weights;
        if let Some(p) = &w.lpips_backbone {
            ctx.progress(&format!("loading LPIPS backbone {}", p.display()));
            self.net = Some(Lpips::load(p, w.lpips_heads.as_deref(), &ctx.opts.device)?);
        }
        Ok(())
    }

    /// Mean LPIPS over name-matched pairs; the generated image is resized to the real
    /// one's size when they differ.
    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        _id: Metric,
    ) -> Result<MetricValue, EvalError> {
        let Some(net) = &self.net else {
            return Ok(MetricValue::none(NEEDS_WEIGHTS));
        };
        ctx.progress(&format!("LPIPS {}", ctx.sets[set].label));
        let ps = ctx.pairs(set);
        if ps.is_empty() {
            return Ok(MetricValue::none("not computed: no generated image has the file name of a real image (LPIPS compares name-matched pairs)"));
        }
        let (real, gen) = (&ctx.real, &ctx.sets[set]);
        let values = &mut ctx.set_values[set];
        let mut d = Vec::with_capacity(ps.len());
        let mut resized = 0;
        for &(r, g) in &ps {
            let a = &real.images[r];
            let b = &gen.images[g];
            let b = if (b.width, b.height) != (a.width, a.height) {
                resized += 1;
                strata_image::resize(b, a.width, a.height, strata_image::Filter::Bilinear)
            } else {
                b.clone()
            };
            let x = net.distance(&unit_tensor(&[a])?, &unit_tensor(&[&b])?)?;
            d.push(x[0] as f64);
            values[g].lpips = Some(x[0] as f64);
        }
        let (m, sd) = mean_std(&d);
        Ok(MetricValue {
            value: Some(m),
            std: Some(sd),
            note: format!(
                "mean ± std over {} generated/real pairs matched by file name, at the real image's size ({} generated images resized, Pillow bilinear); {}",
                d.len(),
                resized,
                net.protocol()
            ),
        })
    }

    fn protocol(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        match &self.net {
            Some(l) => vec![("lpips".into(), format!("{}; pairs matched by file name (generated vs real), generated resized to the real image's size when they differ; value = mean over pairs (lower = closer to the real image)", l.protocol()))],
            None => Vec::new(),
        }
    }

    fn notes(&self, ctx: &EvalContext) -> Vec<(String, String)> {
        if ctx.opts.weights.lpips_backbone.is_none() {
            vec![("lpips".into(), NEEDS_WEIGHTS.into())]
        } else {
            Vec::new()
        }
    }
}
