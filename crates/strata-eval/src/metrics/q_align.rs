//! Q-Align is never computed: it needs a multi-billion-parameter LMM. The column stays in
//! the table so the comparison with the paper shows the gap, with the reason.

use crate::error::EvalError;
use crate::run::{Metric, MetricValue};

use super::{EvalContext, MetricImpl};

const WHY: &str = "not computed: Q-Align needs a multi-billion-parameter LMM (mPLUG-Owl2), out of scope for strata";

pub struct QAlign;

impl MetricImpl for QAlign {
    fn name(&self) -> &'static str {
        "Q-Align"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::QAlign]
    }

    fn compute(
        &mut self,
        _ctx: &mut EvalContext,
        _set: usize,
        _id: Metric,
    ) -> Result<MetricValue, EvalError> {
        Ok(MetricValue::none(WHY))
    }

    fn notes(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        vec![("q-align".into(), WHY.into())]
    }
}
