//! Relation fidelity: the share of the relation triples each image's caption requested
//! that the synth relation checker accepts on the segmenter's mask of the image. The real
//! images go through the same segmenter: their share is the ceiling to compare with.

use std::collections::BTreeMap;
use std::path::Path;

use strata_caption::MetadataRecord;
use strata_synth::Triple;

use crate::error::EvalError;
use crate::fidelity::{relation_fidelity, MaskedImage, RelationFidelity};
use crate::run::{Metric, MetricValue};
use crate::seg::{Prediction, SEG_SIZE};

use super::context::{lookup, triples_of};
use super::{EvalContext, MetricImpl, Needs};

pub struct RelationFidelityMetric;

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

impl MetricImpl for RelationFidelityMetric {
    fn name(&self) -> &'static str {
        "relation fidelity (segmenter + synth relation checker)"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::RelationFidelity]
    }

    fn needs(&self) -> Needs {
        Needs { segmentation: true }
    }

    fn prepare(&mut self, ctx: &mut EvalContext) -> Result<(), EvalError> {
        if let (Some(caps), Some(seg)) = (&ctx.captions, &ctx.segmentation) {
            ctx.real_relation_fidelity = Some(fidelity_for(
                &ctx.real.keys,
                &seg.real,
                caps,
                &mut ctx.failed,
                &ctx.opts.real,
            ));
            if let Some(f) = &ctx.real_relation_fidelity {
                crate::per_image::fill_relations(&mut ctx.real_values, f);
            }
        }
        Ok(())
    }

    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        _id: Metric,
    ) -> Result<MetricValue, EvalError> {
        let (Some(caps), Some(seg)) = (&ctx.captions, &ctx.segmentation) else {
            return Ok(MetricValue::none("not computed: needs --captions metadata.jsonl with `relations` triples (or one in the real folder)"));
        };
        let s = &ctx.sets[set];
        let f = fidelity_for(&s.keys, &seg.sets[set], caps, &mut ctx.failed, &s.dir);
        let v = match f.overall.share {
            Some(x) => MetricValue::val(x, format!(
                "share of {} requested relation triples honoured in the segmenter's {SEG_SIZE}x{SEG_SIZE} mask (synth relation checker)",
                f.overall.requested)),
            None => MetricValue::none("not computed: no generated image matched a caption record with relation triples (names must match pairwise)"),
        };
        crate::per_image::fill_relations(&mut ctx.set_values[set], &f);
        ctx.set_relation_fidelity[set] = Some(f);
        Ok(v)
    }
}
