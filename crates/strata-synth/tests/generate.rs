//! Generator properties: reproducibility, variety, required elements, dataset format.

use std::path::Path;

use strata_image::{encode_png_grey8, encode_png_rgb8};
use strata_synth::png_io::read_mask;
use strata_synth::{
    check, generate, write_dataset, DatasetOptions, Element, MaskView, SceneClass, Triple,
};

#[test]
fn same_seed_gives_identical_bytes() {
    for class in SceneClass::ALL {
        for size in [64u32, 200] {
            let a = generate(class, size, 42);
            let b = generate(class, size, 42);
            assert_eq!(a.rgb, b.rgb, "{class:?} image differs");
            assert_eq!(a.mask, b.mask, "{class:?} mask differs");
            assert_eq!(a.caption, b.caption);
            let p = Path::new("x.png");
            assert_eq!(
                encode_png_rgb8(p, size as usize, size as usize, &a.rgb).unwrap(),
                encode_png_rgb8(p, size as usize, size as usize, &b.rgb).unwrap()
            );
            assert_eq!(
                encode_png_grey8(p, size as usize, size as usize, &a.mask).unwrap(),
                encode_png_grey8(p, size as usize, size as usize, &b.mask).unwrap()
            );
        }
    }
}

#[test]
fn distinct_seeds_give_distinct_layouts() {
    for class in SceneClass::ALL {
        let masks: Vec<Vec<u8>> = (0..4).map(|s| generate(class, 96, s).mask).collect();
        for i in 0..masks.len() {
            for j in i + 1..masks.len() {
                let diff = masks[i]
                    .iter()
                    .zip(&masks[j])
                    .filter(|(a, b)| a != b)
                    .count();
                let frac = diff as f64 / masks[i].len() as f64;
                assert!(
                    frac > 0.05,
                    "{class:?} seeds {i} and {j}: masks differ in only {:.1}% of pixels",
                    frac * 100.0
                );
            }
        }
    }
}

#[test]
fn every_class_produces_its_required_elements() {
    for class in SceneClass::ALL {
        for size in [64u32, 128, 256] {
            for seed in 0..5 {
                let scene = generate(class, size, seed);
                let areas = scene.areas();
                for &e in class.required_elements() {
                    assert!(
                        areas[e as usize] > 0,
                        "{class:?} size {size} seed {seed}: no {} pixels",
                        e.name()
                    );
                    assert!(
                        scene.caption.elements.iter().any(|n| n == e.name()),
                        "{class:?} size {size} seed {seed}: {} missing from {:?}",
                        e.name(),
                        scene.caption.elements
                    );
                }
                assert!(scene.mask.iter().all(|&v| Element::from_id(v).is_some()));
                assert!(!scene.triples.is_empty());
                assert_eq!(scene.caption.scene, class.name());
            }
        }
    }
}

#[test]
fn scenes_of_different_classes_differ_in_composition() {
    // a crude separability check: the dominant element mix differs between every pair
    let mix = |c: SceneClass| {
        let mut a = [0f64; 32];
        for seed in 0..3 {
            let s = generate(c, 96, seed);
            for (i, v) in s.areas().iter().take(32).enumerate() {
                a[i] += *v as f64;
            }
        }
        let t: f64 = a.iter().sum();
        a.map(|v| v / t)
    };
    let mixes: Vec<[f64; 32]> = SceneClass::ALL.iter().map(|&c| mix(c)).collect();
    for i in 0..mixes.len() {
        for j in i + 1..mixes.len() {
            let l1: f64 = mixes[i]
                .iter()
                .zip(&mixes[j])
                .map(|(a, b)| (a - b).abs())
                .sum();
            assert!(
                l1 > 0.2,
                "{:?} and {:?} have nearly the same element mix ({l1:.2})",
                SceneClass::ALL[i],
                SceneClass::ALL[j]
            );
        }
    }
}

#[test]
fn dataset_is_written_in_the_caption_format_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        count: 55,
        size: 64,
        seed: 9,
        classes: vec![],
    };
    let report = write_dataset(dir.path(), &opts, &|| {}).unwrap();
    assert_eq!(report.written, 55);
    assert!(report.failed.is_empty());
    let records = strata_caption::read_dataset(dir.path()).unwrap();
    assert_eq!(records.len(), 55);
    // 5 scenes per class: 4 train, 1 test each
    let test = records
        .iter()
        .filter(|r| r.split == Some(strata_caption::Split::Test))
        .count();
    assert_eq!(test, 11, "8:2 split per class");
    for r in &records {
        assert!(dir.path().join(&r.file_name).is_file());
        let mask_name = r.extra["mask_file_name"].as_str().unwrap();
        let (w, h, mask) = read_mask(&dir.path().join(mask_name)).unwrap();
        assert_eq!((w, h), (64, 64));
        let triples: Vec<Triple> = serde_json::from_value(r.extra["relations"].clone()).unwrap();
        assert!(!triples.is_empty());
        for t in &triples {
            // the checker agrees from the mask file alone
            assert!(
                check(&MaskView::new(w, h, &mask).unwrap(), t)
                    .unwrap()
                    .holds,
                "{t:?} in {mask_name}"
            );
        }
        assert!(r.extra["seed"].is_u64());
        assert!(r.text.starts_with("a remote sensing image of"));
        assert!(!r.relation.is_empty());
    }
    let classes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("classes.json")).unwrap())
            .unwrap();
    assert_eq!(
        classes["classes"].as_array().unwrap().len(),
        Element::ALL.len()
    );
    assert_eq!(classes["classes"][2]["name"], "tree");

    // same options → identical files
    let dir2 = tempfile::tempdir().unwrap();
    write_dataset(dir2.path(), &opts, &|| {}).unwrap();
    for r in &records {
        for name in [
            r.file_name.as_str(),
            r.extra["mask_file_name"].as_str().unwrap(),
        ] {
            assert_eq!(
                std::fs::read(dir.path().join(name)).unwrap(),
                std::fs::read(dir2.path().join(name)).unwrap()
            );
        }
    }
    assert_eq!(
        std::fs::read(dir.path().join("metadata.jsonl")).unwrap(),
        std::fs::read(dir2.path().join("metadata.jsonl")).unwrap()
    );
    // no temporary files left behind
    let leftovers = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0);
}

fn walk(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e.to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn class_subset_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DatasetOptions {
        count: 4,
        size: 64,
        seed: 1,
        classes: vec![SceneClass::Park, SceneClass::Square],
    };
    write_dataset(dir.path(), &opts, &|| {}).unwrap();
    let records = strata_caption::read_dataset(dir.path()).unwrap();
    assert!(records
        .iter()
        .all(|r| r.scene == "park" || r.scene == "square"));
    let bad = DatasetOptions {
        count: 1,
        size: 8,
        seed: 1,
        classes: vec![],
    };
    let e = write_dataset(dir.path(), &bad, &|| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("--size"), "{e}");
    let e = SceneClass::parse("harbour").unwrap_err().to_string();
    assert!(e.contains("dense_residential"), "{e}");
    assert_eq!(
        SceneClass::parse("Dense-Residential").unwrap(),
        SceneClass::DenseResidential
    );
    let bad_triple = Triple {
        relation: "under".into(),
        subject: "tree".into(),
        object: "road".into(),
        object2: None,
    };
    let m = vec![0u8; 16];
    assert!(check(&MaskView::new(4, 4, &m).unwrap(), &bad_triple)
        .unwrap_err()
        .to_string()
        .contains("under"));
    assert!(MaskView::new(5, 4, &m).is_err());
}
