//! Stages 1–2: a fresh synthetic dataset of all 11 classes, then the caption stage on it.
//!
//! The synthetic scenes come with sentences (a traditional one-line caption and the
//! relation sentences); they are written as a Karpathy caption file — the format of RSICD,
//! UCM- and Sydney-captions — and captioned exactly as `strata caption --from karpathy`
//! does: scene from the label, the golden rule over the candidate sentences, elements from
//! the lexicon, the knowledge-based corrections, the seeded stratified 8:2 split. The
//! produced captions are then compared with the synthetic ground truth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strata_caption::dataset::Split;
use strata_caption::import::{export_karpathy, import_karpathy, SourceItem};
use strata_caption::pipeline::{
    caption_item, to_record, CaptionConfig, ExistingSentences, LabelScene, LexiconTagger,
};
use strata_caption::{assign_splits, Knowledge, MetadataRecord, RelationTriple};
use strata_synth::{DatasetOptions, Triple};

use super::{stage_bar, write_atomic, Plan};

/// Stage 1: `DIR/synth`, written aside and renamed into place.
pub fn synth(run: &Path, plan: &Plan, k: usize, n: usize) -> anyhow::Result<Value> {
    let out = run.join("synth");
    let tmp = run.join(".synth.tmp");
    for p in [&out, &tmp] {
        if p.exists() {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let opts = DatasetOptions {
        count: plan.scenes(),
        size: plan.synth_size,
        seed: plan.seed,
        classes: vec![],
    };
    let bar = stage_bar(k, n, "synthetic scenes", opts.count as u64, "scenes");
    let report = strata_synth::write_dataset(&tmp, &opts, &|| bar.inc(1))
        .with_context(|| format!("writing the synthetic dataset to {}", tmp.display()))?;
    bar.finish_and_clear();
    if !report.failed.is_empty() {
        let (f, e) = &report.failed[0];
        bail!(
            "{} synthetic scene(s) could not be written (first: {f}: {e})",
            report.failed.len()
        );
    }
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming into {}", out.display()))?;
    Ok(json!({
        "scenes": report.written,
        "classes": strata_synth::SceneClass::ALL.len(),
        "size": plan.synth_size,
        "seed": plan.seed,
    }))
}

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

/// Stage 2: the Karpathy source file, the caption stage into `DIR/dataset`, and the test
/// split with its requested relations into `DIR/real`.
pub fn caption(run: &Path, plan: &Plan, k: usize, n: usize) -> anyhow::Result<Value> {
    let synth_dir = run.join("synth");
    let truth = strata_caption::read_dataset(&synth_dir)
        .with_context(|| format!("reading {}/metadata.jsonl", synth_dir.display()))?;
    // The sentences that come with each scene, as an RSICD-style caption file: the
    // traditional one-line caption first, then the relation sentences.
    let items: Vec<SourceItem> = truth
        .iter()
        .map(|r| SourceItem {
            file_name: r.file_name.clone(),
            image: synth_dir.join(&r.file_name),
            label: Some(r.scene.replace(' ', "_")),
            sentences: vec![r.text.clone(), r.relation.clone()],
            source_split: None,
            origin: "karpathy".into(),
        })
        .collect();
    let source = run.join("captions-source.json");
    write_atomic(&source, export_karpathy(&items, "strata-synth").as_bytes())?;
    let mut imported = import_karpathy(&source, &synth_dir)?;
    if let Some(p) = imported.problems.first() {
        bail!("{}: {}", p.item, p.error);
    }
    let know = Knowledge::embedded();
    let cfg = CaptionConfig::default();
    let bar = stage_bar(k, n, "caption stage", imported.items.len() as u64, "images");
    let mut done: Vec<(PathBuf, MetadataRecord)> = Vec::new();
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut changed_by_corrections = 0usize;
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    for it in imported.items.drain(..) {
        let c = caption_item(
            &know,
            &it,
            &mut LabelScene { knowledge: &know },
            &mut ExistingSentences,
            &mut LexiconTagger { knowledge: &know },
            &cfg,
        )
        .with_context(|| format!("captioning {}", it.file_name))?;
        let changed = c.provenance.corrections.iter().any(|x| x.before != x.after);
        changed_by_corrections += changed as usize;
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
        done.push((it.image.clone(), to_record(&it, &c)));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut records: Vec<MetadataRecord> = done.iter().map(|(_, r)| r.clone()).collect();
    let (n_train, n_test) = assign_splits(&mut records, plan.seed, 0.8);
    let items: Vec<(PathBuf, MetadataRecord)> =
        done.into_iter().map(|(p, _)| p).zip(records).collect();
    let dataset = run.join("dataset");
    strata_caption::write_dataset(&dataset, &items, true)
        .with_context(|| format!("writing {}", dataset.display()))?;

    // Compare with the synthetic ground truth.
    let truth_by_name: BTreeMap<&str, &MetadataRecord> =
        truth.iter().map(|r| (r.file_name.as_str(), r)).collect();
    let (mut same_scene, mut same_relation, mut same_elements, mut same_triples) = (0, 0, 0, 0);
    let mut unparsed_triples = 0usize;
    let mut test_records = Vec::new();
    let mut examples: BTreeMap<String, Value> = BTreeMap::new();
    for (_, r) in &items {
        let t = truth_by_name
            .get(r.file_name.as_str())
            .context("captioned record without a synthetic original")?;
        same_scene += (r.scene == t.scene) as usize;
        same_relation += (r.relation == t.relation) as usize;
        // The same elements in any order: the caption stage lists the scene's own object
        // first, the synthesiser in drawing order.
        let set = |e: &[String]| e.iter().cloned().collect::<BTreeSet<String>>();
        same_elements += (set(&r.elements) == set(&t.elements)) as usize;
        let rels = r.relations().unwrap_or_default();
        let triples: Vec<Triple> = rels.iter().filter_map(agent_triple).collect();
        unparsed_triples += rels.len() - triples.len();
        let a: BTreeSet<String> = triples.iter().map(key).collect();
        let b: BTreeSet<String> = synth_triples(t).iter().map(key).collect();
        same_triples += (a == b) as usize;
        if r.split == Some(Split::Test) {
            let mut rec = r.clone();
            rec.extra
                .insert("relations".into(), serde_json::to_value(&triples)?);
            rec.extra
                .insert("synth_relations".into(), t.extra["relations"].clone());
            if let Some(m) = t.extra.get("mask_file_name") {
                rec.extra.insert("mask_file_name".into(), m.clone());
            }
            examples.entry(r.scene.clone()).or_insert_with(|| {
                json!({"file_name": r.file_name, "scene": r.scene, "relation": r.relation,
                       "elements": r.elements, "text": r.text})
            });
            test_records.push(rec);
        }
    }
    // The test split with the requested relations (what `strata eval` checks).
    let real = run.join("real");
    let test_items: Vec<(PathBuf, MetadataRecord)> = test_records
        .iter()
        .map(|r| (dataset.join(&r.file_name), r.clone()))
        .collect();
    strata_caption::write_dataset(&real, &test_items, true)
        .with_context(|| format!("writing {}", real.display()))?;
    let total = items.len();
    Ok(json!({
        "images": total,
        "train": n_train,
        "test": n_test,
        "source": source.display().to_string(),
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
    }))
}
