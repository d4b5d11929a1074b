//! Free-sentence captions: reproducible, varied, never in the flat or hierarchical format,
//! and truthful (only elements with pixels in the mask, only relations the checker confirms).

use std::collections::{BTreeSet, HashSet};

use strata_synth::free::{free_caption, scene_forms, surface_forms};
use strata_synth::{
    check, generate, write_dataset_with, CaptionStyle, DatasetOptions, Element, SceneClass,
};

/// 100 scenes: every class in turn, 64 and 128 px.
fn scenes() -> Vec<strata_synth::Scene> {
    (0..100)
        .map(|i| {
            let class = SceneClass::ALL[i % SceneClass::ALL.len()];
            generate(class, if i % 2 == 0 { 64 } else { 128 }, 1000 + i as u64)
        })
        .collect()
}

/// `text` in lower case, words separated by single spaces, padded by one space each side.
fn words(text: &str) -> String {
    let t: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    format!(" {} ", t.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Whether `phrase` occurs in `text` as whole words.
fn has_phrase(text: &str, phrase: &str) -> bool {
    words(text).contains(&format!(" {phrase} "))
}

/// `text` with the scene class's phrases (whole words) blanked: they may share a word with
/// an element, e.g. the church scene and the church element.
fn without_scene_words(text: &str, class: SceneClass) -> String {
    let mut forms: Vec<&str> = scene_forms(class).to_vec();
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut t = words(text);
    for f in forms {
        while t.contains(&format!(" {f} ")) {
            t = t.replace(&format!(" {f} "), " | ");
        }
    }
    t
}

#[test]
fn same_seed_same_caption_other_seed_other_caption() {
    let s = scenes();
    let a: Vec<String> = s.iter().map(|x| free_caption(x, 7).text).collect();
    let b: Vec<String> = s.iter().map(|x| free_caption(x, 7).text).collect();
    let c: Vec<String> = s.iter().map(|x| free_caption(x, 8).text).collect();
    assert_eq!(a, b);
    let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(
        differ >= 80,
        "only {differ}/100 captions change with the seed"
    );
}

#[test]
fn captions_are_varied_in_shape() {
    // a caption's shape: its text with every element and scene phrase replaced by X
    let mut phrases: Vec<&str> = Element::ALL
        .iter()
        .flat_map(|&e| surface_forms(e))
        .collect();
    phrases.extend(
        SceneClass::ALL
            .iter()
            .flat_map(|&c| scene_forms(c).iter().copied()),
    );
    phrases.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut shapes = HashSet::new();
    let mut openings = HashSet::new();
    for s in scenes() {
        let text = free_caption(&s, 3).text;
        let mut t = format!(" {} ", text.to_lowercase());
        for p in &phrases {
            for punct in [" ", ",", ".", ":", ";"] {
                t = t.replace(&format!(" {p}{punct}"), &format!(" X{punct}"));
            }
        }
        shapes.insert(t);
        openings.insert(
            text.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    assert!(shapes.len() >= 60, "{} distinct shapes", shapes.len());
    assert!(openings.len() >= 8, "{} distinct openings", openings.len());
}

#[test]
fn never_the_flat_template_nor_segments() {
    for s in scenes() {
        for seed in 0..3 {
            let t = free_caption(&s, seed).text;
            let l = t.to_lowercase();
            assert!(!l.starts_with("a remote sensing image"), "{t}");
            assert!(!l.contains("remote sensing image of"), "{t}");
            assert_ne!(t, s.caption.flat());
            // neither a segment text nor the segments joined
            assert_ne!(t, s.caption.relation);
            assert!(!t.starts_with(&s.caption.scene) || t.len() > s.caption.scene.len() + 40);
            assert_ne!(l, s.caption.elements.join(", "));
        }
    }
}

#[test]
fn mentions_only_elements_present() {
    let mut mentions = 0;
    for s in scenes() {
        let areas = s.areas();
        for seed in 0..3 {
            let cap = free_caption(&s, seed);
            let text = without_scene_words(&cap.text, s.class);
            for &e in Element::ALL {
                let said = surface_forms(e).iter().any(|f| has_phrase(&text, f));
                if areas[e.id() as usize] == 0 {
                    assert!(
                        !said,
                        "{:?} absent from the mask but named: {}",
                        e, cap.text
                    );
                }
                mentions += said as usize;
            }
            for e in &cap.elements {
                assert!(areas[e.id() as usize] > 0, "{e:?} reported but absent");
                let said = surface_forms(*e).iter().any(|f| has_phrase(&cap.text, f));
                assert!(said, "{e:?} reported but not in: {}", cap.text);
            }
        }
    }
    assert!(
        mentions > 600,
        "{mentions} element mentions in 300 captions"
    );
}

#[test]
fn stated_relations_hold_and_are_worded() {
    let mut stated = 0;
    let mut kinds = BTreeSet::new();
    for s in scenes() {
        for seed in 0..3 {
            let cap = free_caption(&s, seed);
            for t in &cap.triples {
                assert!(
                    s.triples.contains(t),
                    "{t:?} is not one of the scene's triples"
                );
                let v = check(&s.mask_view(), t).unwrap();
                assert!(v.holds, "{t:?} stated but does not hold: {}", v.detail);
                // subject and object are named in the text
                let (_, sub, obj, _) = t.parse().unwrap();
                for e in [sub, obj] {
                    assert!(
                        surface_forms(e).iter().any(|f| has_phrase(&cap.text, f)),
                        "{e:?} of {t:?} not named in: {}",
                        cap.text
                    );
                }
                kinds.insert(t.relation.clone());
                stated += 1;
            }
        }
    }
    assert!(stated >= 150, "{stated} relations stated in 300 captions");
    assert!(kinds.len() >= 5, "relations stated: {kinds:?}");
}

#[test]
fn dataset_free_style_changes_only_the_text_column() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        count: 12,
        size: 64,
        seed: 5,
        classes: vec![],
    };
    let flat = dir.path().join("flat");
    let free = dir.path().join("free");
    write_dataset_with(&flat, &opts, CaptionStyle::Flat, &|| {}).unwrap();
    write_dataset_with(&free, &opts, CaptionStyle::Free, &|| {}).unwrap();
    let read = |d: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metadata.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a, b) = (read(&flat), read(&free));
    assert_eq!(a.len(), 12);
    for (x, y) in a.iter().zip(&b) {
        let (mut x, mut y) = (x.clone(), y.clone());
        let tx = x["text"].as_str().unwrap().to_string();
        let ty = y["text"].as_str().unwrap().to_string();
        assert!(tx.starts_with("a remote sensing image of "), "{tx}");
        assert!(!ty.starts_with("a remote sensing image of "), "{ty}");
        x["text"] = serde_json::Value::Null;
        y["text"] = serde_json::Value::Null;
        assert_eq!(x, y);
    }
    // the images are the same bytes
    let img = a[0]["file_name"].as_str().unwrap();
    assert_eq!(
        std::fs::read(flat.join(img)).unwrap(),
        std::fs::read(free.join(img)).unwrap()
    );
}
