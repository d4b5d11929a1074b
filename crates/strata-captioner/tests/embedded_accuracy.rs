//! The embedded default captioner on held-out synthetic scenes: accuracy against the
//! generator's ground truth (thresholds with a margin below the measured figures, see
//! docs/caption-default.md), seeds disjoint from training, golden-rule candidates in lexicon
//! names, the per-image cache, and the weights file's error paths.

use std::collections::HashSet;

use strata_caption::{analyze, Knowledge};
use strata_captioner::embedded::train::{self, TRAIN_SEED, VALIDATION_SEED};
use strata_captioner::embedded::{evaluate_default, EmbeddedCaptioner, NET_SIZE};
use strata_captioner::{ImageCaptioner, ImageScene, ImageTagger};
use strata_image::RgbImage;
use strata_synth::dataset::scene_seed;
use strata_synth::{generate, SceneClass};

/// Base seed of the held-out test scenes.
const TEST_SEED: u64 = 3_000;
const TEST_SCENES: usize = 110;

#[test]
fn test_scenes_are_disjoint_from_training_and_validation() {
    let cap = EmbeddedCaptioner::load_default().unwrap();
    // "scene_seed(1000, 0..4400)": the count after `0..`
    let count = |key: &str| -> usize {
        let s = &cap.metadata()[key];
        let rest = &s[s.find("0..").unwrap() + 3..];
        rest[..rest.find(')').unwrap()].parse().unwrap()
    };
    assert!(cap.metadata()["train_seed"].starts_with(&format!("scene_seed({TRAIN_SEED},")));
    assert!(cap.metadata()["validation"].starts_with(&format!("scene_seed({VALIDATION_SEED},")));
    let (n, v) = (count("train_seed"), count("validation"));
    assert!(n >= 1000, "trained on {n} scenes");
    let used: HashSet<u64> = (0..n)
        .map(|i| scene_seed(TRAIN_SEED, i))
        .chain((0..v).map(|i| scene_seed(VALIDATION_SEED, i)))
        .collect();
    for j in 0..TEST_SCENES {
        assert!(!used.contains(&scene_seed(TEST_SEED, j)), "test scene {j}");
    }
}

#[test]
fn default_captioner_accuracy_on_held_out_scenes() {
    let acc = evaluate_default(TEST_SCENES, TEST_SEED).unwrap();
    println!("{acc:#?}");
    assert_eq!(acc.images, TEST_SCENES);
    assert!(
        acc.scene_accuracy >= 0.80,
        "scene accuracy {}",
        acc.scene_accuracy
    );
    assert!(
        acc.element_precision >= 0.80,
        "element precision {}",
        acc.element_precision
    );
    assert!(
        acc.element_recall >= 0.75,
        "element recall {}",
        acc.element_recall
    );
    assert!(acc.element_f1 >= 0.78, "element F1 {}", acc.element_f1);
    assert!(
        acc.triple_precision >= 0.55,
        "triple precision {}",
        acc.triple_precision
    );
    assert!(
        acc.triple_recall >= 0.45,
        "triple recall {}",
        acc.triple_recall
    );
}

#[test]
fn segmenter_reaches_the_miou_goal_on_held_out_scenes() {
    let cap = EmbeddedCaptioner::load_default().unwrap();
    let held = train::samples(TEST_SCENES, TEST_SEED);
    let f = train::evaluate(cap.net(), &held).unwrap();
    println!("{f:?}");
    assert!(f.mean_iou >= 0.60, "mIoU {}", f.mean_iou);
    assert!(
        f.pixel_accuracy >= 0.80,
        "pixel accuracy {}",
        f.pixel_accuracy
    );
}

fn rgb(s: &strata_synth::Scene) -> RgbImage {
    RgbImage {
        width: s.size as usize,
        height: s.size as usize,
        data: s.rgb.clone(),
    }
}

#[test]
fn candidates_pass_the_golden_rule_and_name_lexicon_elements() {
    let k = Knowledge::embedded();
    let mut cap = EmbeddedCaptioner::load_default().unwrap();
    let mut with_candidates = 0;
    for (i, &class) in SceneClass::ALL.iter().enumerate() {
        // 128 px: the captioner resizes to its 64-px input
        let scene = generate(class, 128, scene_seed(TEST_SEED + 1, i));
        let img = rgb(&scene);
        let tags = cap.tag(&img).unwrap();
        assert!(!tags.is_empty(), "{}: no element", class.name());
        for t in &tags {
            assert_eq!(
                k.element(&t.element),
                Some(t.element.as_str()),
                "tag {}",
                t.element
            );
            assert!((0.0..=1.0).contains(&t.score));
        }
        assert!(
            tags.windows(2).all(|w| w[0].score >= w[1].score),
            "tags sorted"
        );
        let cands: Vec<_> = cap
            .candidates(&img, 0)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        if !cands.is_empty() {
            with_candidates += 1;
        }
        let triples = &cap.analyze(&img).unwrap().triples;
        for c in &cands {
            let a = analyze(&k, &c.text);
            assert!(a.passes_golden_rule(), "{}", c.text);
            assert!(a.vertical.is_empty(), "{}", c.text);
            // every relation the sentence states is one that holds on the predicted mask
            for r in &a.relations {
                let agent = r.agent().map(|e| e.element.clone());
                let patient = r.patient().map(|e| e.element.clone());
                let stated = triples.iter().any(|t| {
                    t.triple.relation == r.relation
                        && agent.as_deref().and_then(|a| k.element(a))
                            == k.element(&t.triple.subject)
                        && patient.as_deref().and_then(|p| k.element(p))
                            == k.element(&t.triple.object)
                });
                assert!(stated, "{}: {} not among {:?}", c.text, r.relation, triples);
            }
        }
        let names: HashSet<_> = cands.iter().map(|c| c.text.clone()).collect();
        assert_eq!(names.len(), cands.len(), "duplicate candidates");
        assert!(cands.len() <= strata_captioner::embedded::MAX_CANDIDATES);
    }
    assert!(
        with_candidates >= 9,
        "only {with_candidates}/11 scenes got a sentence"
    );
}

#[test]
fn the_three_parts_agree_and_reuse_one_prediction() {
    let mut cap = EmbeddedCaptioner::load_default().unwrap();
    let scene = generate(SceneClass::Park, 64, scene_seed(TEST_SEED + 2, 0));
    let img = rgb(&scene);
    let first = cap.analyze(&img).unwrap().clone();
    let guess = cap.classify(&img).unwrap();
    if let Some(g) = &guess {
        assert_eq!(g.scene, first.scene.scene);
    }
    assert_eq!(cap.tag(&img).unwrap(), first.tags);
    let batch = cap.analyze_batch(&[&img]).unwrap();
    assert_eq!(batch[0].mask, first.mask);
    assert_eq!(batch[0].candidates, first.candidates);
    assert_eq!(first.mask.len(), NET_SIZE * NET_SIZE);
    // a different image replaces the cached analysis
    let other = generate(SceneClass::Industrial, 64, scene_seed(TEST_SEED + 2, 1));
    let o = cap.analyze(&rgb(&other)).unwrap().clone();
    assert_ne!(o.mask, first.mask);
}

#[test]
fn load_reads_a_weights_file_and_rejects_others() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("w.safetensors");
    std::fs::write(&good, strata_captioner::embedded::DEFAULT_WEIGHTS).unwrap();
    let mut a = EmbeddedCaptioner::load(&good).unwrap();
    let mut b = EmbeddedCaptioner::load_default().unwrap();
    let img = rgb(&generate(SceneClass::Square, 64, 5));
    assert_eq!(a.analyze(&img).unwrap().mask, b.analyze(&img).unwrap().mask);
    assert!(ImageTagger::name(&a).contains("w.safetensors"));

    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let e = EmbeddedCaptioner::load(&bad)
        .err()
        .expect("garbage must fail")
        .to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("train-captioner.sh"),
        "{e}"
    );
    let missing = dir.path().join("missing.safetensors");
    let e = EmbeddedCaptioner::load(&missing)
        .err()
        .expect("missing")
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}
