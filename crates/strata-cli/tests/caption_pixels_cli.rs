//! `strata caption --from images`: plain tiles captioned from their pixels. The embedded
//! default on generated scenes (the synthesiser's ground truth is not given to it), a CLIP
//! part from a tiny CLIP saved by transformers, a head trained and used through
//! `caption train-tagger`, and the errors a user meets: a damaged tile, a missing or wrong
//! weights path, a part without its weights.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::strata;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../strata-captioner/tests/fixtures")
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metadata.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// 22 generated scenes copied flat into one folder (no class folders, no sentences), plus
/// a damaged JPEG.
fn tiles(root: &Path) -> PathBuf {
    let synth = root.join("synth");
    let o = strata()
        .args([
            "synth", "--count", "22", "--size", "64", "--seed", "4242", "--out",
        ])
        .arg(&synth)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let tiles = root.join("tiles");
    std::fs::create_dir_all(&tiles).unwrap();
    for class in std::fs::read_dir(synth.join("images")).unwrap() {
        for f in std::fs::read_dir(class.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, tiles.join(f.file_name().unwrap())).unwrap();
        }
    }
    // a JPEG cut off after its header
    let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    jpg.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    std::fs::write(tiles.join("damaged.jpg"), jpg).unwrap();
    tiles
}

#[test]
fn embedded_default_captions_plain_tiles_and_reports_the_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let tiles = tiles(dir.path());
    let out = dir.path().join("captions");
    let o = strata()
        .args(["caption", "--from", "images"])
        .arg(&tiles)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("damaged.jpg"), "{t}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.contains("damaged.jpg")).count(),
        1,
        "reported on one line: {t}"
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 22, "{t}");
    // The scene's class is in the file name (church_00000.png); the embedded scene head
    // reads pixels only.
    let right_scene = recs
        .iter()
        .filter(|r| {
            let f = r["file_name"].as_str().unwrap();
            let class = &f[..f.rfind('_').unwrap()];
            r["scene"].as_str().unwrap().replace(' ', "_") == class
        })
        .count();
    assert!(right_scene >= 19, "{right_scene} of 22 scenes right");
    let with_relation = recs
        .iter()
        .filter(|r| !r["relation"].as_str().unwrap().is_empty())
        .count();
    assert!(with_relation >= 20, "{with_relation} of 22 have a relation");
    for r in &recs {
        let p = &r["provenance"];
        assert_eq!(p["scene_source"], "embedded-default:images", "{r}");
        assert_eq!(p["element_source"], "embedded-default", "{r}");
        assert!(!r["elements"].as_array().unwrap().is_empty(), "{r}");
        if !r["relation"].as_str().unwrap().is_empty() {
            assert!(!p["candidates"].as_array().unwrap().is_empty(), "{r}");
            assert!(!r["relations"].as_array().unwrap().is_empty(), "{r}");
        }
    }
}

#[test]
fn clip_parts_and_a_trained_head_caption_from_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let labelled = fixtures().join("clip/labelled");
    let hf_clip =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../strata-eval/tests/fixtures/clip_tiny");
    let out = dir.path().join("clip-captions");
    let o = strata()
        .args(["caption", "--from", "images"])
        .arg(&labelled)
        .arg("--out")
        .arg(&out)
        .args([
            "--scene-from",
            "clip",
            "--elements-from",
            "clip",
            "--relation-from",
            "sentences",
            "--clip",
        ])
        .arg(&hf_clip)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let recs = records(&out);
    assert_eq!(recs.len(), 4);
    for r in &recs {
        let p = &r["provenance"];
        assert!(
            p["scene_source"].as_str().unwrap().starts_with("clip"),
            "{r}"
        );
        assert!(
            p["element_source"].as_str().unwrap().starts_with("clip"),
            "{r}"
        );
        assert!(!r["scene"].as_str().unwrap().is_empty(), "{r}");
    }

    // a head trained on the labelled folder, then used for scene and elements
    let head = dir.path().join("head.safetensors");
    let o = strata()
        .args(["caption", "train-tagger", "--steps", "100", "--clip"])
        .arg(fixtures().join("clip/open_clip"))
        .arg("--data")
        .arg(&labelled)
        .arg("--out")
        .arg(&head)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = dir.path().join("head-captions");
    let o = strata()
        .args(["caption", "--from", "images"])
        .arg(&labelled)
        .arg("--out")
        .arg(&out)
        .args([
            "--scene-from",
            "head",
            "--elements-from",
            "head",
            "--relation-from",
            "sentences",
            "--head",
        ])
        .arg(&head)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // trained on these four images, the head gives back their labels
    let truth: std::collections::BTreeMap<String, serde_json::Value> = records(&labelled)
        .into_iter()
        .map(|r| (r["file_name"].as_str().unwrap().to_string(), r))
        .collect();
    for r in records(&out) {
        let t = &truth[r["file_name"].as_str().unwrap()];
        assert_eq!(r["scene"], t["scene"], "{r}");
    }
}

#[test]
fn missing_and_wrong_weights_fail_before_any_image_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let labelled = fixtures().join("clip/labelled");
    let out = dir.path().join("x");
    // a part without its weights
    let o = strata()
        .args(["caption", "--from", "images"])
        .arg(&labelled)
        .arg("--out")
        .arg(&out)
        .args(["--elements-from", "clip"])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("--clip"), "{t}");
    // a path that is not a CLIP
    let bogus = dir.path().join("not-a-clip");
    std::fs::create_dir_all(&bogus).unwrap();
    std::fs::write(bogus.join("readme.txt"), "hello").unwrap();
    let o = strata()
        .args(["caption", "--from", "images"])
        .arg(&labelled)
        .arg("--out")
        .arg(&out)
        .args(["--elements-from", "clip", "--clip"])
        .arg(&bogus)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("not-a-clip"), "{t}");
    // retrained captioner weights that are not a captioner file
    let o = strata()
        .args(["caption", "--from", "images"])
        .arg(&labelled)
        .arg("--out")
        .arg(&out)
        .arg("--captioner-weights")
        .arg(bogus.join("readme.txt"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("readme.txt"), "{t}");
    assert!(!out.exists(), "nothing written");
}

/// BLIP draws candidates with the decode plan until the cap; each is recorded with how it
/// was drawn. The tiny random BLIP writes no SRKC sentence, so the cap is reached and the
/// fallback applies; the draws are the same on a second run (seeded per image).
#[test]
fn blip_draws_are_capped_recorded_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let labelled = fixtures().join("clip/labelled");
    let run = |out: &Path| {
        let o = strata()
            .args(["caption", "--from", "images"])
            .arg(&labelled)
            .arg("--out")
            .arg(out)
            .args([
                "--relation-from",
                "blip",
                "--decode",
                "greedy,beam:2,nucleus:0.9:0.7",
                "--max-candidates",
                "4",
                "--scene-from",
                "label",
                "--elements-from",
                "embedded",
                "--blip",
            ])
            .arg(fixtures().join("blip"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        records(out)
    };
    let a = run(&dir.path().join("a"));
    let b = run(&dir.path().join("b"));
    assert_eq!(a.len(), 4);
    for (ra, rb) in a.iter().zip(&b) {
        let c = ra["provenance"]["candidates"].as_array().unwrap();
        let sel = &ra["provenance"]["selection"];
        let examined = sel["examined"].as_u64().unwrap() as usize;
        assert!(examined <= 4, "{ra}");
        assert_eq!(c.len(), examined, "{ra}");
        assert_eq!(c[0]["decoding"], "greedy", "{ra}");
        if examined > 1 {
            assert_eq!(c[1]["decoding"], "beam 2", "{ra}");
        }
        if examined > 2 {
            assert!(
                c[2]["decoding"].as_str().unwrap().starts_with("nucleus"),
                "{ra}"
            );
        }
        assert!(ra["provenance"]["relation_source"]
            .as_str()
            .unwrap()
            .starts_with("blip"));
        assert_eq!(
            ra["provenance"], rb["provenance"],
            "same draws on a second run"
        );
    }
}

/// A WD14-style ONNX tagger gives the elements: every record names it, and with threshold 0
/// every tag that maps to an element is reported.
#[test]
fn onnx_tagger_gives_the_elements() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("onnx-captions");
    let o = strata()
        .args(["caption", "--from", "images"])
        .arg(fixtures().join("onnx/images"))
        .arg("--out")
        .arg(&out)
        .args(["--elements-from", "onnx", "--tag-threshold", "0", "--onnx"])
        .arg(fixtures().join("onnx/wd14/model.onnx"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        let src = r["provenance"]["element_source"].as_str().unwrap();
        assert!(src.starts_with("onnx:") && src.contains("wd14"), "{r}");
        // tags such as `building`, `trees`, `road` map to lexicon elements
        let els: Vec<&str> = r["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        for e in ["building", "tree", "road"] {
            assert!(els.contains(&e), "{e} missing from {els:?}");
        }
    }
}
