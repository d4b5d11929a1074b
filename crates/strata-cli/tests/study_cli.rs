//! `strata study --preset ci` end to end on a tiny random model written to disk in the
//! diffusers layout: every arm × seed trains and generates, every seed is evaluated, the
//! table and results.json hold intervals and verdicts for every arm, a rerun skips every
//! stage, a changed setting is refused, and a study with test compositions keeps every
//! training scene free of them while every test scene holds one.

mod common;

use std::path::Path;

use serde_json::Value;

use common::{pngs, records, run as strata, texts as text};

/// `DIR/study.toml`: the `ci` preset on a tiny random model (`DIR/model`, written on the
/// first call) at 32 px, then `extra` (TOML keys).
fn tiny_study(dir: &Path, extra: &str) -> std::path::PathBuf {
    let model = dir.join("model");
    if !model.is_dir() {
        strata_models::testing::write_tiny_model(&model, 7).unwrap();
    }
    let cfg = dir.join("study.toml");
    let head = format!(
        "preset = \"ci\"\nmodel = {:?}\nresolution = 32\n",
        model.to_str().unwrap()
    );
    std::fs::write(&cfg, head + extra).unwrap();
    cfg
}

const ARMS: [&str; 5] = [
    "flat",
    "hierarchical-concat",
    "hierarchical-decoupled",
    "hierarchical-learned",
    "relation-only",
];

#[test]
fn study_ci_runs_every_arm_and_seed_reports_intervals_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_study(tmp.path(), "");
    let out = tmp.path().join("study");
    let args = [
        "study",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let first = strata(&args);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stdout}\n{stderr}");
    // 1 data + 2 seeds × (5 arms × (train + generate) + eval) + statistics = 24 stages
    assert!(stderr.contains("[24/24]"), "{stderr}");
    for a in ARMS {
        for s in [0, 1] {
            assert!(
                stderr.contains(&format!("LoRA {a} (seed {s}): done")),
                "{a} {s}\n{stderr}"
            );
            let lora = out.join(format!("runs/{a}/seed-{s}/lora.safetensors"));
            assert!(lora.is_file(), "{}", lora.display());
            let gen = out.join(format!("gen/{a}/seed-{s}"));
            let n = pngs(&gen).len();
            assert_eq!(n, 11, "{}", gen.display());
        }
        assert!(stdout.contains(a), "{stdout}");
    }
    // every arm but the reference has a paired difference and a verdict per metric
    let res: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(res["reference"], "flat");
    assert_eq!(res["test_images"], 11);
    assert_eq!(res["seeds_done"], serde_json::json!([0, 1]));
    let metrics = res["metrics"].as_array().unwrap();
    let ids: Vec<&str> = metrics.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for want in ["relation-fidelity", "synth-fid", "synth-kid", "gshps"] {
        assert!(ids.contains(&want), "{ids:?}");
    }
    for m in metrics {
        assert_eq!(m["arms"].as_array().unwrap().len(), 5, "{m}");
        let diffs = m["differences"].as_array().unwrap();
        assert_eq!(diffs.len(), 4, "{m}");
        for d in diffs {
            let v = d["verdict"].as_str().unwrap();
            // a winner is named exactly when the interval excludes zero
            if let (Some(l), Some(h)) = (
                d["interval"]["low"].as_f64(),
                d["interval"]["high"].as_f64(),
            ) {
                assert!(l <= h, "{d}");
                assert_eq!(d["winner"].is_string(), l > 0.0 || h < 0.0, "{d}");
                assert!(v.contains('[') && v.contains(']'), "{v}");
            }
        }
    }
    // relation fidelity is printed with its judge's held-out accuracy
    assert!(stdout.contains("Relation fidelity's judge"), "{stdout}");
    assert!(stdout.contains("mIoU"), "{stdout}");
    assert!(stdout.contains("Paired differences"), "{stdout}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Paired differences from flat"), "report");
    assert!(html.contains("GSHPS (stand-in)"), "report");

    // a rerun does nothing again and prints the same table
    let again = strata(&args);
    let (stdout2, stderr2) = text(&again);
    assert!(again.status.success(), "{stderr2}");
    assert!(!stderr2.contains("LoRA flat (seed 0): done"), "{stderr2}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("RelFid"))
            .collect::<Vec<_>>(),
        stdout2
            .lines()
            .filter(|l| l.contains("RelFid"))
            .collect::<Vec<_>>()
    );

    // another setting into the same folder is refused, naming it
    tiny_study(tmp.path(), "[train]\nsteps = 3\n");
    let changed = strata(&args);
    let (_, err) = text(&changed);
    assert!(!changed.status.success());
    assert!(err.contains("train.steps"), "{err}");
}

/// Test compositions: the test scenes are drawn for them, and no training scene holds one
/// (checked on the scenes' own ground truth: the caption's elements and the layout's triples).
#[test]
fn test_compositions_are_held_out_of_training() {
    let tmp = tempfile::tempdir().unwrap();
    let comp = tmp.path().join("compositions.json");
    std::fs::write(
        &comp,
        r#"[{"scene": "square", "elements": ["bare land"]},
            {"scene": "resort", "elements": ["hotel"],
             "relations": [{"relation": "next_to", "subject": "swimming pool", "object": "hotel"}]}]"#,
    )
    .unwrap();
    let cfg = tiny_study(
        tmp.path(),
        "arms = [\"flat\", \"hierarchical-concat\"]\nseeds = [3]\n[data]\ntrain_per_class = 3\ntest_images = 6\n",
    );
    let out = tmp.path().join("study");
    let o = strata(&[
        "study",
        "--config",
        cfg.to_str().unwrap(),
        "--test-compositions",
        comp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    // the records' own ground truth: the caption's elements and the layout's triples
    let holds = |r: &Value, scene: &str, element: &str, triple: Option<&str>| -> bool {
        let listed = r["elements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == element);
        let built = triple.is_none_or(|t| {
            r["relations"].as_array().unwrap().iter().any(|x| {
                let f = |k: &str| x[k].as_str().unwrap().to_string();
                format!("{} {} {}", f("subject"), f("relation"), f("object")) == t
            })
        });
        r["scene"] == scene && listed && built
    };
    let t = Some("swimming pool next_to hotel");
    let tests = records(&out.join("data/test/metadata.jsonl"));
    assert_eq!(tests.len(), 6);
    for r in &tests {
        assert!(
            holds(r, "square", "bare land", None) || holds(r, "resort", "hotel", t),
            "{r}"
        );
        assert!(r["composition"].is_string(), "{r}");
    }
    let train = records(&out.join("data/train/metadata.jsonl"));
    assert_eq!(train.len(), 3 * 11);
    for r in &train {
        assert!(!holds(r, "square", "bare land", None), "{r}");
        assert!(!holds(r, "resort", "hotel", t), "{r}");
    }
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stages/data.json")).unwrap())
            .unwrap();
    assert!(
        data["training_scenes_excluded_for_holding_a_test_composition"]
            .as_u64()
            .unwrap()
            > 0,
        "{data}"
    );

    // a composition the generator never builds is refused, naming it
    std::fs::write(&comp, r#"[{"scene": "square", "elements": ["railway"]}]"#).unwrap();
    let o = strata(&[
        "study",
        "--config",
        cfg.to_str().unwrap(),
        "--test-compositions",
        comp.to_str().unwrap(),
        "--out",
        tmp.path().join("other").to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("square: railway"), "{err}");
}
