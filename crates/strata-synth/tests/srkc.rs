//! Every relation sentence the generator writes is recognised by the caption stage's SRKC
//! (`strata_caption::extract_relations`) with the right relation id and the right roles.

use strata_caption::{extract_relations, Knowledge};
use strata_synth::words::{phrasings, sentence_with, PHRASES};
use strata_synth::{generate, Relation, SceneClass, Triple};

fn recognised(k: &Knowledge, t: &Triple, sentence: &str) -> Result<(), String> {
    let found = extract_relations(k, sentence);
    let m = found
        .iter()
        .find(|m| m.relation == t.relation)
        .ok_or_else(|| {
            format!(
                "{sentence:?}: no `{}` found (got {:?})",
                t.relation,
                found.iter().map(|m| &m.relation).collect::<Vec<_>>()
            )
        })?;
    let agent = m.agent().map(|e| e.element.as_str());
    let patient = m.patient().map(|e| e.element.as_str());
    if agent != Some(t.subject.as_str()) || patient != Some(t.object.as_str()) {
        return Err(format!(
            "{sentence:?}: roles {agent:?} / {patient:?}, expected {} / {}",
            t.subject, t.object
        ));
    }
    if let Some(o2) = &t.object2 {
        let got = m.object2.as_ref().map(|e| e.element.as_str());
        // "between two railways": the second object is the same element, named once
        if got.is_some() && got != Some(o2.as_str()) {
            return Err(format!(
                "{sentence:?}: second object {got:?}, expected {o2}"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_phrasing_of_every_generated_triple_is_recognised() {
    let k = Knowledge::embedded();
    let mut triples: Vec<Triple> = Vec::new();
    for class in SceneClass::ALL {
        for seed in 0..8 {
            for t in generate(class, 64, seed).triples {
                if !triples.contains(&t) {
                    triples.push(t);
                }
            }
        }
    }
    let mut errors = Vec::new();
    let mut n = 0;
    for rel in Relation::ALL {
        assert!(
            triples.iter().any(|t| t.relation == rel.id()),
            "no generated triple for {}",
            rel.id()
        );
    }
    for t in &triples {
        let rel = Relation::parse(&t.relation).unwrap();
        for k_ in 0..phrasings(rel) {
            let s = sentence_with(t, k_);
            n += 1;
            if let Err(e) = recognised(&k, t, &s) {
                errors.push(e);
            }
        }
    }
    println!(
        "{n} sentences checked against the SRKC, {} not recognised",
        errors.len()
    );
    for e in &errors {
        println!("  {e}");
    }
    assert!(errors.is_empty());
}

#[test]
fn every_shared_phrase_is_written() {
    // each phrase of the shared list appears in some sentence the generator can write
    let sample = [
        Triple::new(
            Relation::Surrounds,
            strata_synth::Element::RunningTrack,
            strata_synth::Element::SportsField,
        ),
        Triple::new(
            Relation::Crosses,
            strata_synth::Element::Road,
            strata_synth::Element::Grass,
        ),
        Triple::new(
            Relation::Along,
            strata_synth::Element::Tree,
            strata_synth::Element::Road,
        ),
        Triple::new(
            Relation::OnBothSidesOf,
            strata_synth::Element::House,
            strata_synth::Element::Road,
        ),
        Triple::new(
            Relation::InTheMiddleOf,
            strata_synth::Element::Fountain,
            strata_synth::Element::Plaza,
        ),
        Triple::new(
            Relation::NextTo,
            strata_synth::Element::ParkingLot,
            strata_synth::Element::Building,
        ),
        Triple::new(
            Relation::ParallelTo,
            strata_synth::Element::Railway,
            strata_synth::Element::Road,
        ),
        Triple::between(
            strata_synth::Element::Road,
            strata_synth::Element::Factory,
            strata_synth::Element::Warehouse,
        ),
    ];
    for (id, phrases) in PHRASES {
        let t = sample.iter().find(|t| t.relation == *id).unwrap();
        let rel = Relation::parse(id).unwrap();
        let all: Vec<String> = (0..phrasings(rel))
            .map(|k| sentence_with(t, k).to_lowercase())
            .collect();
        for p in *phrases {
            assert!(
                all.iter().any(|s| s.contains(p)),
                "phrase {p:?} of {id} never written: {all:?}"
            );
        }
    }
}

#[test]
fn caption_relation_segment_states_every_triple() {
    let k = Knowledge::embedded();
    for class in SceneClass::ALL {
        let scene = generate(class, 96, 3);
        assert_eq!(scene.sentences.len(), scene.triples.len());
        for (t, s) in scene.triples.iter().zip(&scene.sentences) {
            assert!(scene.caption.relation.contains(s.as_str()));
            recognised(&k, t, s).unwrap();
        }
    }
}
