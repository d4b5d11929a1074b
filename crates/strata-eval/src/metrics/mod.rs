//! The metrics of `strata eval`, each behind [`MetricImpl`].
//!
//! [`crate::run::evaluate`] builds an [`EvalContext`] (folders decoded once, captions read,
//! the segmenter's predictions when a metric [`Needs`] them), lets every implementation
//! whose columns were asked for [`prepare`](MetricImpl::prepare) (load weights, compute
//! the real images' features), then loops: for each generated set, for each requested
//! column, the implementation owning that column [`compute`](MetricImpl::compute)s one
//! [`MetricValue`] — a number with its protocol note, or none with the reason. Features
//! shared by two columns (FID and KID on Inception, CLIPScore and its cosine) are computed
//! once per set inside their implementation.
//!
//! One implementation per module, named after what it measures:
//!
//! | module | columns | needs |
//! |---|---|---|
//! | [`inception_fid`] | `fid`, `kid` | `--inception-weights` |
//! | [`synth_fid`] | `synth-fid`, `synth-kid` | the segmenter |
//! | [`lpips`] | `lpips` | `--lpips-backbone` |
//! | [`clipscore`] | `clipscore`, `clip-cosine` | `--clip-weights`, captions |
//! | [`pieapp`] | `pieapp` | `--pieapp-weights` |
//! | [`gshps`] | `gshps` | `--vgg16-weights`, or the stand-in (trained on images disjoint from the scored ones) |
//! | [`q_align`] | `q-align` | (never computed; says why) |
//! | [`relation_fidelity`] | `relation-fidelity` | the segmenter, captions with triples |
//!
//! Adding a metric: add its id to [`Metric`] (id, heading, `ALL`), write a type
//! implementing [`MetricImpl`] in a module here, and list it in [`registry`]. The unit test
//! below checks that every id has exactly one owner.

pub mod clipscore;
pub mod context;
pub mod gshps;
pub mod inception_fid;
pub mod lpips;
pub mod pieapp;
pub mod q_align;
pub mod relation_fidelity;
pub mod synth_fid;

pub use context::{EvalContext, ImageSet, Segmentation};

use crate::error::EvalError;
use crate::run::{Metric, MetricValue};

/// Shared inputs an implementation needs the context to build before
/// [`MetricImpl::prepare`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The strata segmenter (trained or loaded) and its predictions on every image.
    pub segmentation: bool,
}

/// One metric family: the columns it fills and how.
pub trait MetricImpl {
    /// Human name (progress messages, docs).
    fn name(&self) -> &'static str;

    /// The table columns this implementation fills.
    fn ids(&self) -> &'static [Metric];

    /// What the context must build first.
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Loads networks and computes what the real images contribute. Called once, and only
    /// when one of [`ids`](MetricImpl::ids) was asked for. Missing weights are not an
    /// error here: [`compute`](MetricImpl::compute) then says why there is no value.
    fn prepare(&mut self, _ctx: &mut EvalContext) -> Result<(), EvalError> {
        Ok(())
    }

    /// The value of column `id` for generated set `set` (index into `ctx.sets`).
    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        id: Metric,
    ) -> Result<MetricValue, EvalError>;

    /// `protocol` entries of metrics.json, asked after scoring from prepared
    /// implementations.
    fn protocol(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        Vec::new()
    }

    /// `metric_notes` entries of metrics.json, asked from every implementation (requested
    /// or not): why a column cannot be computed with these options, or how to read it.
    fn notes(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Every implementation, in the order they are prepared.
pub fn registry() -> Vec<Box<dyn MetricImpl>> {
    vec![
        Box::new(synth_fid::SynthFid::default()),
        Box::new(relation_fidelity::RelationFidelityMetric),
        Box::new(lpips::LpipsMetric::default()),
        Box::new(inception_fid::InceptionFid::default()),
        Box::new(pieapp::PieAppMetric::default()),
        Box::new(clipscore::ClipScoreMetric::default()),
        Box::new(gshps::GshpsMetric::default()),
        Box::new(q_align::QAlign),
    ]
}

/// `MetricValue` constructors for implementations.
impl MetricValue {
    pub fn val(v: f64, note: impl Into<String>) -> Self {
        MetricValue {
            value: Some(v),
            std: None,
            note: note.into(),
        }
    }

    pub fn none(note: impl Into<String>) -> Self {
        MetricValue {
            value: None,
            std: None,
            note: note.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_exactly_one_implementation() {
        let reg = registry();
        for m in Metric::ALL {
            let owners: Vec<&str> = reg
                .iter()
                .filter(|i| i.ids().contains(&m))
                .map(|i| i.name())
                .collect();
            assert_eq!(owners.len(), 1, "{} owned by {owners:?}", m.id());
        }
        let total: usize = reg.iter().map(|i| i.ids().len()).sum();
        assert_eq!(total, Metric::ALL.len());
    }
}
