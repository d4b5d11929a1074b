//! The caption stage from pixels, for a study whose captions come from the images
//! (`data.captions = "pixels"`, the demo's setting) rather than from the synthesiser.
//!
//! The caption stage sees only the pixels, as `strata caption --from images` does with its
//! embedded default: scene from the captioner's scene head, relation sentences from the
//! predicted masks through the golden rule, elements from the segmentation, then the
//! knowledge-based corrections and the seeded stratified 8:2 split. The synthesiser's own
//! captions are the ground truth the result is measured against (scene accuracy, element
//! precision / recall / F1, relation-triple precision / recall).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};
use strata_caption::import::SourceItem;
use strata_caption::pipeline::{to_record, CaptionConfig};
use strata_caption::{Knowledge, MetadataRecord, RelationTriple};
use strata_synth::Triple;

/// A caption-stage relation triple in the synth checker's form: subject = the element doing
/// the relating (the caption stage keeps sentence order and marks passive phrasing).
pub fn agent_triple(t: &RelationTriple) -> Option<Triple> {
    let (s, o) = if t.passive {
        (t.object.clone()?, t.subject.clone()?)
    } else {
        (t.subject.clone()?, t.object.clone()?)
    };
    let tr = Triple {
        relation: t.relation.clone(),
        subject: s,
        object: o,
        object2: t.object2.clone(),
    };
    tr.parse().ok().map(|_| tr)
}

fn synth_triples(r: &MetadataRecord) -> Vec<Triple> {
    r.extra
        .get("relations")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn key(t: &Triple) -> String {
    format!(
        "{} {} {} {}",
        t.subject,
        t.relation,
        t.object,
        t.object2.as_deref().unwrap_or("")
    )
}

/// Captions the images of `truth` (synthetic records, images under `dir`) from their pixels
/// alone (the embedded pixel captioner: scene head, relation sentences from predicted
/// masks, elements from the segmentation; then the golden rule and the corrections, as
/// `strata caption --from images` does). Returns the records with the captioner's captions
/// in place of the synthesiser's (file names, splits and masks kept; `relations` holds the
/// triples the caption states, which is what generation is asked for and what relation
/// fidelity checks, and `synth_relations` the synthesiser's), and a summary of the caption
/// stage measured against the synthetic ground truth. `bar` counts images.
pub fn caption_pixels(
    dir: &Path,
    truth: &[MetadataRecord],
    seed: u64,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<MetadataRecord>, Value)> {
    // The images only: the synthesiser's own sentences are the ground truth the captions
    // are measured against, so they are not given to the caption stage.
    let items: Vec<SourceItem> = truth
        .iter()
        .map(|r| SourceItem {
            file_name: r.file_name.clone(),
            image: dir.join(&r.file_name),
            label: None,
            sentences: Vec::new(),
            source_split: None,
            origin: "images".into(),
        })
        .collect();
    let know = Knowledge::embedded();
    let cfg = CaptionConfig::default();
    let mut parts = crate::commands::caption_parts::build(
        &crate::commands::caption_parts::PartArgs::default(),
        &know,
        true,
    )?;
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut changed_by_corrections = 0usize;
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    let (mut same_scene, mut same_relation, mut same_elements, mut same_triples) = (0, 0, 0, 0);
    // Micro-averaged element and triple counts: true positives, predicted, in the truth.
    let (mut el_tp, mut el_pred, mut el_true) = (0usize, 0usize, 0usize);
    let (mut tr_tp, mut tr_pred, mut tr_true) = (0usize, 0usize, 0usize);
    let (mut stated, mut stated_hold) = (0usize, 0usize);
    let mut unparsed_triples = 0usize;
    let mut examples: BTreeMap<String, Value> = BTreeMap::new();
    let mut out = Vec::with_capacity(truth.len());
    for (it, t) in items.iter().zip(truth) {
        let image = strata_image::read_rgb8(&it.image)
            .with_context(|| format!("reading {}", it.image.display()))?;
        let (c, _) =
            strata_captioner::caption_image(&know, it, &image, seed, parts.as_parts(), &cfg)
                .with_context(|| format!("captioning {}", it.file_name))?;
        changed_by_corrections +=
            c.provenance.corrections.iter().any(|x| x.before != x.after) as usize;
        for x in &c.provenance.corrections {
            *by_rule
                .entry(
                    serde_json::to_value(x.rule)?
                        .as_str()
                        .unwrap_or("?")
                        .to_string(),
                )
                .or_default() += 1;
        }
        *chosen
            .entry(match c.provenance.selection.candidate {
                Some(i) => format!("candidate {i}"),
                None => "none".into(),
            })
            .or_default() += 1;
        let mut r = to_record(it, &c);
        r.split = t.split;
        // Compare with the synthetic ground truth.
        same_scene += (r.scene == t.scene) as usize;
        same_relation += (r.relation == t.relation) as usize;
        // The same elements in any order: the caption stage lists the scene's own object
        // first, the synthesiser in drawing order.
        let set = |e: &[String]| e.iter().cloned().collect::<BTreeSet<String>>();
        let (pe, te) = (set(&r.elements), set(&t.elements));
        same_elements += (pe == te) as usize;
        el_tp += pe.intersection(&te).count();
        el_pred += pe.len();
        el_true += te.len();
        let rels = r.relations().unwrap_or_default();
        let triples: Vec<Triple> = rels.iter().filter_map(agent_triple).collect();
        unparsed_triples += rels.len() - triples.len();
        let a: BTreeSet<String> = triples.iter().map(key).collect();
        let b: BTreeSet<String> = synth_triples(t).iter().map(key).collect();
        same_triples += (a == b) as usize;
        tr_tp += a.intersection(&b).count();
        tr_pred += a.len();
        tr_true += b.len();
        // Is what the caption states true of the scene? Each stated triple checked on the
        // scene's true mask.
        if let Some(m) = t.extra.get("mask_file_name").and_then(|m| m.as_str()) {
            let (w, h, data) = strata_synth::png_io::read_mask(&dir.join(m))
                .with_context(|| format!("reading the true mask of {}", t.file_name))?;
            let view = strata_synth::MaskView::new(w, h, &data)?;
            for tr in &triples {
                stated += 1;
                stated_hold += strata_synth::check(&view, tr).is_ok_and(|v| v.holds) as usize;
            }
            r.extra.insert("mask_file_name".into(), json!(m));
        }
        r.extra
            .insert("relations".into(), serde_json::to_value(&triples)?);
        if let Some(v) = t.extra.get("relations") {
            r.extra.insert("synth_relations".into(), v.clone());
        }
        for (k, v) in &t.extra {
            r.extra.entry(k.clone()).or_insert_with(|| v.clone());
        }
        examples.entry(r.scene.clone()).or_insert_with(|| {
            json!({"file_name": r.file_name, "scene": r.scene, "relation": r.relation,
                   "elements": r.elements, "text": r.text})
        });
        out.push(r);
        bar.inc(1);
    }
    let total = out.len();
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            None
        } else {
            Some(a as f64 / b as f64)
        }
    };
    let (ep, er) = (ratio(el_tp, el_pred), ratio(el_tp, el_true));
    let f1 = match (ep, er) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        _ => None,
    };
    Ok((
        out,
        json!({
            "images": total,
            "source": "pixels",
            "captioner": parts.names(),
            "accuracy": {
                "scene_accuracy": ratio(same_scene, total),
                "element_precision": ep, "element_recall": er, "element_f1": f1,
                // stated triples that hold on the true mask
                "triple_precision": ratio(stated_hold, stated), "triples_stated": stated,
                // agreement with the triples the synthesiser's own caption states (the scene
                // holds more relations than a caption states, so this is not recall)
                "synth_triples_also_stated": ratio(tr_tp, tr_true),
                "stated_triples_also_in_synth_caption": ratio(tr_tp, tr_pred),
            },
            "golden_rule_choice": chosen,
            "corrections": by_rule.values().sum::<usize>(),
            "corrections_by_rule": by_rule,
            "captions_changed_by_corrections": changed_by_corrections,
            "equal_to_ground_truth": {
                "scene": same_scene, "relation": same_relation, "elements": same_elements,
                "relation_triples": same_triples, "of": total,
            },
            "triples_not_checkable": unparsed_triples,
            "examples": examples,
        }),
    ))
}
