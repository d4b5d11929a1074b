//! CLIPScore (torchmetrics' `max(100·mean(cos), 0)`) and the plain mean CLIP image–text
//! cosine, from one pass of CLIP over each generated set and its captions' `text`.

use std::collections::BTreeMap;

use crate::clipscore::{clip_score, ClipScorer};
use crate::error::EvalError;
use crate::run::{Metric, MetricValue};

use super::context::{lookup, mean_std};
use super::{EvalContext, MetricImpl};

const NEEDS_WEIGHTS: &str = "not computed: needs --clip-weights (a transformers CLIP folder, e.g. openai/clip-vit-base-patch32: model.safetensors, config.json, vocab.json, merges.txt)";

#[derive(Default)]
pub struct ClipScoreMetric {
    net: Option<ClipScorer>,
    /// `(set, values by column id)` of the set scored last.
    set: Option<(usize, BTreeMap<&'static str, MetricValue>)>,
}

/// Both CLIPScore numbers for generated set `set`, against each image's caption record.
fn clip_values(
    clip: &ClipScorer,
    ctx: &mut EvalContext,
    set: usize,
) -> Result<BTreeMap<&'static str, MetricValue>, EvalError> {
    let mut out = BTreeMap::new();
    let Some(caps) = &ctx.captions else {
        let why = "not computed: CLIPScore needs --captions metadata.jsonl (or one in the real folder) to know each image's prompt";
        out.insert("clipscore", MetricValue::none(why));
        out.insert("clip-cosine", MetricValue::none(why));
        return Ok(out);
    };
    let gen = &ctx.sets[set];
    let mut imgs = Vec::new();
    let mut texts = Vec::new();
    let mut which = Vec::new();
    for (i, (k, img)) in gen.keys.iter().zip(&gen.images).enumerate() {
        match lookup(caps, k) {
            Some(r) if !r.text.trim().is_empty() => {
                which.push(i);
                imgs.push(img.clone());
                texts.push(r.text.clone());
            }
            Some(_) => ctx.failed.push((
                format!("{} (caption of {k})", gen.dir.display()),
                "empty `text`: no prompt for CLIPScore".into(),
            )),
            None => {}
        }
    }
    if imgs.is_empty() {
        let why =
            "not computed: no generated image matched a caption record (names must match pairwise)";
        out.insert("clipscore", MetricValue::none(why));
        out.insert("clip-cosine", MetricValue::none(why));
        return Ok(out);
    }
    let cos = clip.cosines(&imgs, &texts, &ctx.opts.device)?;
    for (&i, &c) in which.iter().zip(&cos) {
        ctx.set_values[set][i].clip_cosine = Some(c as f64);
    }
    let sc = clip_score(&cos);
    let (_, sd) = mean_std(&cos.iter().map(|&c| c as f64).collect::<Vec<_>>());
    out.insert(
        "clipscore",
        MetricValue::val(sc.torchmetrics, format!("torchmetrics CLIPScore = max(100·mean(cos), 0) over {} images with their caption's `text`", cos.len())),
    );
    out.insert(
        "clip-cosine",
        MetricValue {
            value: Some(sc.cosine),
            std: Some(sd),
            note: format!("mean CLIP image–text cosine (0–1 scale, as the paper appears to report) over {} images", cos.len()),
        },
    );
    Ok(out)
}

impl MetricImpl for ClipScoreMetric {
    fn name(&self) -> &'static str {
        "CLIPScore"
    }

    fn ids(&self) -> &'static [Metric] {
        &[Metric::ClipScore, Metric::ClipCosine]
    }

    fn prepare(&mut self, ctx: &mut EvalContext) -> Result<(), EvalError> {
        if let Some(p) = &ctx.opts.weights.clip {
            ctx.progress(&format!("loading CLIP {}", p.display()));
            self.net = Some(ClipScorer::load(p, &ctx.opts.device)?);
        }
        Ok(())
    }

    fn compute(
        &mut self,
        ctx: &mut EvalContext,
        set: usize,
        id: Metric,
    ) -> Result<MetricValue, EvalError> {
        let Some(net) = &self.net else {
            return Ok(MetricValue::none(NEEDS_WEIGHTS));
        };
        if self.set.as_ref().map(|s| s.0) != Some(set) {
            ctx.progress(&format!("CLIPScore {}", ctx.sets[set].label));
            self.set = Some((set, clip_values(net, ctx, set)?));
        }
        Ok(self.set.as_ref().expect("computed above").1[id.id()].clone())
    }

    fn protocol(&self, _ctx: &EvalContext) -> Vec<(String, String)> {
        match &self.net {
            Some(c) => vec![("clipscore".into(), format!("{}; `clipscore` = torchmetrics CLIPScore max(100·mean(cos), 0); `clip-cosine` = mean cosine (0–1 scale)", c.protocol()))],
            None => Vec::new(),
        }
    }

    fn notes(&self, ctx: &EvalContext) -> Vec<(String, String)> {
        if ctx.opts.weights.clip.is_none() {
            vec![
                ("clipscore".into(), NEEDS_WEIGHTS.into()),
                ("clip-cosine".into(), NEEDS_WEIGHTS.into()),
            ]
        } else {
            Vec::new()
        }
    }
}
