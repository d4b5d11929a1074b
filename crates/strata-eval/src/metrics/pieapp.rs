//! PieAPP between name-matched pairs (reference = real, distorted = generated), with the
//! published network weights.

use crate::error::EvalError;
use crate::pieapp::PieApp;
use crate::run::{Metric, MetricValue};

use super::context::{mean_std, unit_tensor};
use super::{EvalContext, MetricImpl};

const NEEDS_WEIGHTS: &str =
    "not computed: needs --pieapp-weights (PieAPPv0.1.pth, the published PieAPP network weights)";

#[derive(Default)]
pub struct PieAppMetric {
    net: Option<PieApp>,
}

impl MetricImpl for PieAppMetric {
    fn name(&self) -> &'static str {
        "PieAPP"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::PieApp]
    }

    fn prepare(&mut self, ctx: &mut EvalContext) -> Result<(), EvalError> {
        if let Some(p) = &ctx.opts.weights.pieapp {
            ctx.progress(&format!("loading PieAPP {}", p.display()));
            self.net = Some(PieApp::load(p, &ctx.opts.device)?);
        }
        Ok(())
    }

    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        _id: Metric,
    ) -> Result<MetricValue, EvalError> {
        let Some(net) = &self.net else {
            return Ok(MetricValue::none(NEEDS_WEIGHTS));
        };
        ctx.progress(&format!("PieAPP {}", ctx.sets[set].label));
        let ps = ctx.pairs(set);
        if ps.is_empty() {
            return Ok(MetricValue::none("not computed: no generated image has the file name of a real image (PieAPP compares name-matched pairs)"));
        }
        let (real, gen) = (&ctx.real, &ctx.sets[set]);
        let mut per = Vec::with_capacity(ps.len());
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
                strata_image::resize(b, a.width, a.height, strata_image::Filter::Bilinear)
            } else {
                b.clone()
            };
            let x = net.score(&unit_tensor(&[a])?, &unit_tensor(&[&b])?)?;
            v.push(x[0] as f64);
            per.push((g, x[0] as f64));
        }
        for (g, x) in per {
            ctx.set_values[set][g].pieapp = Some(x);
        }
        let (m, sd) = mean_std(&v);
        Ok(MetricValue {
            value: Some(m),
            std: Some(sd),
            note: format!("mean ± std over {} pairs matched by file name (reference = real, distorted = generated); {}", v.len(), net.protocol()),
        })
    }

    fn protocol(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        match &self.net {
            Some(p) => vec![("pieapp".into(), format!("{}; pairs matched by file name, generated resized to the real image's size when they differ; value = mean over pairs", p.protocol()))],
            None => Vec::new(),
        }
    }

    fn notes(&self, ctx: &EvalContext) -> Vec<(String, String)> {
        if ctx.opts.weights.pieapp.is_none() {
            vec![("pieapp".into(), NEEDS_WEIGHTS.into())]
        } else {
            Vec::new()
        }
    }
}
