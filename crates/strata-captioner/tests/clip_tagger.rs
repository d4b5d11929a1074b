//! Zero-shot tagging, scene, calibration and the linear head on the tiny CLIPs, against the
//! same computation in Python (scripts/fixtures/clip_tiny.py: prompts from srkc.toml, class
//! embeddings, cosines, the F1 threshold rule written independently). Tolerance 1e-4.

use std::path::PathBuf;

use candle_core::Device;
use strata_caption::Knowledge;
use strata_captioner::clip_tagger::{ClipTagger, ZeroShotOptions};
use strata_captioner::{ImageScene, ImageTagger};
use strata_image::RgbImage;

fn fx() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip")
}

fn hf_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../strata-eval/tests/fixtures/clip_tiny")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fx().join("expected.json")).unwrap()).unwrap()
}

fn images(exp: &serde_json::Value) -> Vec<RgbImage> {
    exp["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| strata_image::read_rgb8(&fx().join("labelled").join(n.as_str().unwrap())).unwrap())
        .collect()
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0f32, f32::max)
}

fn tagger(which: &str) -> ClipTagger {
    let path = match which {
        "hf" => hf_dir(),
        _ => fx().join("open_clip"),
    };
    ClipTagger::load(&path, &Device::Cpu, &Knowledge::embedded()).unwrap()
}

#[test]
fn zero_shot_scores_match_python() {
    let exp = expected();
    let imgs = images(&exp);
    let defaults = ZeroShotOptions::default();
    assert_eq!(
        defaults.element_templates,
        strings(&exp["element_templates"])
    );
    assert_eq!(defaults.scene_templates, strings(&exp["scene_templates"]));
    assert_eq!(defaults.aliases as u64, exp["aliases"].as_u64().unwrap());
    for key in ["hf", "open_clip"] {
        let t = tagger(key);
        let zs = &exp[key]["zero_shot"];
        assert_eq!(t.element_names(), strings(&zs["element_names"]).as_slice());
        assert_eq!(t.scene_names(), strings(&zs["scene_names"]).as_slice());
        let d = max_diff(
            &t.element_scores(&imgs).unwrap(),
            &matrix(&zs["element_cosines"]),
        );
        eprintln!("{key}: element cosines max |diff| {d:.2e}");
        assert!(d < 1e-4, "{key} elements {d}");
        let d = max_diff(
            &t.scene_scores(&imgs).unwrap(),
            &matrix(&zs["scene_cosines"]),
        );
        eprintln!("{key}: scene cosines max |diff| {d:.2e}");
        assert!(d < 1e-4, "{key} scenes {d}");
    }
}

#[test]
fn scene_is_the_python_argmax_and_tags_follow_thresholds() {
    let exp = expected();
    let imgs = images(&exp);
    let mut t = tagger("open_clip");
    let zs = &exp["open_clip"]["zero_shot"];
    let scenes = strings(&zs["scene_names"]);
    let sc = matrix(&zs["scene_cosines"]);
    for (img, row) in imgs.iter().zip(&sc) {
        let (best, &c) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        let second = row
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != best)
            .map(|(_, &v)| v)
            .fold(f32::MIN, f32::max);
        let g = t.classify(img).unwrap().unwrap();
        assert!((g.score - c).abs() < 1e-4);
        if c - second > 1e-4 {
            assert_eq!(g.scene, scenes[best]);
        }
    }
    // uncalibrated: one shared threshold; the tiny model's cosines are around 0, so choose a
    // threshold in the middle of the Python scores and check the tag set against them
    let el = matrix(&zs["element_cosines"]);
    let names = strings(&zs["element_names"]);
    let mut all: Vec<f32> = el.iter().flatten().copied().collect();
    all.sort_by(f32::total_cmp);
    let thr = all[all.len() / 2];
    let mut t = ClipTagger::load_with(
        &fx().join("open_clip"),
        &Device::Cpu,
        &Knowledge::embedded(),
        &ZeroShotOptions {
            default_threshold: thr,
            ..Default::default()
        },
    )
    .unwrap();
    for (img, row) in imgs.iter().zip(&el) {
        let tags = t.tag(img).unwrap();
        for w in tags.windows(2) {
            assert!(w[0].score >= w[1].score, "most confident first");
        }
        for (n, &c) in names.iter().zip(row) {
            if (c - thr).abs() > 1e-4 {
                assert_eq!(
                    tags.iter().any(|g| &g.element == n),
                    c >= thr,
                    "{n}: {c} vs {thr}"
                );
            }
        }
    }
    assert!(ImageTagger::name(&t).contains("open_clip"));
    assert!(ImageTagger::name(&t).contains(&format!("uncalibrated cos>={thr}")));
}

#[test]
fn calibration_matches_python_and_round_trips() {
    let exp = expected();
    let imgs = images(&exp);
    let kn = Knowledge::embedded();
    let mut t = tagger("open_clip");
    let report = t.calibrate(&fx().join("labelled"), &kn).unwrap();
    assert_eq!(report.images, 4);
    assert!(report.skipped.is_empty() && report.unknown_labels.is_empty());
    let zs = &exp["open_clip"]["zero_shot"];
    let want = zs["thresholds"].as_object().unwrap();
    assert_eq!(
        report.calibrated.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, w) in want {
        let got = &report.calibrated[name];
        let wt = w["threshold"].as_f64().unwrap() as f32;
        assert!(
            (got.threshold - wt).abs() < 1e-4,
            "{name}: {} vs {wt}",
            got.threshold
        );
        assert!(
            (got.f1 as f64 - w["f1"].as_f64().unwrap()).abs() < 1e-6,
            "{name} f1"
        );
    }
    assert_eq!(
        report.uncalibrated.len(),
        t.element_names().len() - want.len()
    );
    let src = ImageTagger::name(&t);
    assert!(
        src.contains("calibrated on") && src.contains("labelled"),
        "{src}"
    );

    // tags follow the per-element thresholds
    let el = matrix(&zs["element_cosines"]);
    let names = strings(&zs["element_names"]);
    for (img, row) in imgs.iter().zip(&el) {
        let tags = t.tag(img).unwrap();
        for ((n, &c), &thr) in names.iter().zip(row).zip(t.thresholds()) {
            if (c - thr).abs() > 1e-4 {
                assert_eq!(tags.iter().any(|g| &g.element == n), c >= thr, "{n}");
            }
        }
    }

    // save / load
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("thresholds.json");
    t.save_thresholds(&f).unwrap();
    let mut u = tagger("open_clip");
    u.load_thresholds(&f).unwrap();
    assert_eq!(u.thresholds(), t.thresholds());
    assert!(ImageTagger::name(&u).contains("thresholds.json"));
    // another model: refused, naming the file and field
    let mut h = tagger("hf");
    let e = h.load_thresholds(&f).unwrap_err().to_string();
    assert!(
        e.contains("thresholds.json") && e.contains("model_fingerprint"),
        "{e}"
    );
}

#[test]
fn head_training_fits_the_labels_and_the_saved_head_predicts_the_same() {
    use strata_captioner::linear_head::{train_head, Head, HeadOptions};
    use strata_captioner::open_clip::{ClipModel, ClipOptions};
    let exp = expected();
    let imgs = images(&exp);
    let kn = Knowledge::embedded();
    let clip = ClipModel::load(
        &fx().join("open_clip"),
        &Device::Cpu,
        &ClipOptions::default(),
    )
    .unwrap();
    let (mut head, report) =
        train_head(clip, &fx().join("labelled"), &kn, &HeadOptions::default()).unwrap();
    assert_eq!(report.images, 4);
    eprintln!("head loss {} -> {}", report.initial_loss, report.final_loss);
    // zero weights: ln 2 per element + ln(scenes)
    let l0 = 2f32.ln() + (kn.scenes.len() as f32).ln();
    assert!(
        (report.initial_loss - l0).abs() < 1e-4,
        "{}",
        report.initial_loss
    );
    assert!(report.final_loss < 0.2 * report.initial_loss);
    for w in report.losses.windows(2) {
        assert!(w[1].1 <= w[0].1 + 1e-6, "loss rose: {:?}", report.losses);
    }
    // the four training images get their labels back
    let labels: Vec<(String, Vec<String>)> =
        std::fs::read_to_string(fx().join("labelled/metadata.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["scene"].as_str().unwrap().to_string(),
                    strings(&v["elements"]),
                )
            })
            .collect();
    let before: Vec<_> = imgs
        .iter()
        .map(|i| (head.classify(i).unwrap().unwrap(), head.tag(i).unwrap()))
        .collect();
    for ((scene, tags), (want_scene, want_els)) in before.iter().zip(&labels) {
        assert_eq!(&scene.scene, want_scene);
        let mut got: Vec<&String> = tags.iter().map(|t| &t.element).collect();
        got.sort();
        let mut want: Vec<&String> = want_els.iter().collect();
        want.sort();
        assert_eq!(got, want);
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("head.safetensors");
    head.save(&f).unwrap();
    let mut back = Head::open(&f, None, &Device::Cpu, &ClipOptions::default()).unwrap();
    assert!(ImageTagger::name(&back).contains("head.safetensors"));
    for (img, (scene, tags)) in imgs.iter().zip(&before) {
        assert_eq!(&back.classify(img).unwrap().unwrap(), scene);
        assert_eq!(&back.tag(img).unwrap(), tags);
    }
    // a head on another CLIP is refused, naming the file and field
    let hf = ClipModel::load(&hf_dir(), &Device::Cpu, &ClipOptions::default()).unwrap();
    let e = Head::load(&f, hf).err().expect("other CLIP").to_string();
    assert!(
        e.contains("head.safetensors") && e.contains("clip_fingerprint"),
        "{e}"
    );
}

#[test]
fn a_bad_image_is_skipped_and_reported() {
    let kn = Knowledge::embedded();
    let dir = tempfile::tempdir().unwrap();
    let src = fx().join("labelled");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("img1.png"), b"not a png").unwrap();
    std::fs::copy(src.join("img0.png"), dir.path().join("img4.png")).unwrap();
    let mut meta = std::fs::read_to_string(src.join("metadata.jsonl")).unwrap();
    meta.push_str(
        "{\"file_name\":\"img4.png\",\"scene\":\"park\",\"relation\":\"\",\"elements\":[\"trees\",\"moon base\"],\"text\":\"x\"}\n",
    );
    std::fs::write(dir.path().join("metadata.jsonl"), meta).unwrap();
    let mut t = tagger("open_clip");
    let r = t.calibrate(dir.path(), &kn).unwrap();
    assert_eq!(r.images, 4);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].0, "img1.png");
    // aliases map to lexicon names ("trees" → tree); unknown labels are counted
    assert_eq!(r.unknown_labels.get("moon base"), Some(&1));
    assert!(r.calibrated.contains_key("tree"));
}
