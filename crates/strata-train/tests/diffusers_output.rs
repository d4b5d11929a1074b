//! A full run's `model/` folder has the layout of a diffusers `StableDiffusionPipeline`
//! folder: the components and classes of `model_index.json` and the files
//! `from_pretrained` reads, compared with what diffusers' own `save_pretrained` writes
//! (tests/fixtures/diffusers_layout.json, made by
//! scripts/fixtures/check_diffusers_folder.py --reference; the same script loads a strata
//! folder in diffusers and runs a denoising step).

use std::path::{Path, PathBuf};

use strata_train::{Method, RunOptions, TrainConfig};

fn reference() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusers_layout.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Differences between a strata model folder and diffusers' layout, in words (empty when it
/// conforms).
fn layout_problems(dir: &Path, reference: &serde_json::Value) -> Vec<String> {
    let mut problems = vec![];
    let index: serde_json::Value = match std::fs::read_to_string(dir.join("model_index.json")) {
        Ok(s) => serde_json::from_str(&s).unwrap_or(serde_json::Value::Null),
        Err(_) => {
            return vec!["no model_index.json".into()];
        }
    };
    let want = reference["model_index"].as_object().unwrap();
    for (k, v) in want {
        if k == "_diffusers_version" {
            continue;
        }
        let got = &index[k];
        if k == "scheduler" {
            // any diffusers scheduler; the class must be the one scheduler_config.json names
            let class = std::fs::read_to_string(dir.join("scheduler/scheduler_config.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|c| c["_class_name"].as_str().map(str::to_string));
            if got[0] != "diffusers" || got[1].as_str() != class.as_deref() {
                problems.push(format!(
                    "model_index.json scheduler = {got}, scheduler_config.json names {class:?}"
                ));
            }
        } else if got != v {
            problems.push(format!(
                "model_index.json {k} = {got}, diffusers writes {v}"
            ));
        }
    }
    for f in reference["files"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        if f.starts_with("tokenizer/") {
            continue;
        }
        if !dir.join(f).is_file() {
            problems.push(format!("missing {f}"));
        }
    }
    // CLIPTokenizer reads tokenizer.json, or vocab.json + merges.txt
    let tok = dir.join("tokenizer");
    if !(tok.join("tokenizer.json").is_file()
        || tok.join("vocab.json").is_file() && tok.join("merges.txt").is_file())
    {
        problems.push("tokenizer/ has neither tokenizer.json nor vocab.json + merges.txt".into());
    }
    problems
}

#[test]
fn reference_layout_is_what_diffusers_writes() {
    // the fixture itself: the components of a StableDiffusionPipeline with no safety checker
    let r = reference();
    let idx = r["model_index"].as_object().unwrap();
    for k in [
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
        "safety_checker",
        "feature_extractor",
    ] {
        assert!(idx.contains_key(k), "{k}");
    }
    // a folder missing its scheduler entry (strata's output before this check) is caught
    let tmp = tempfile::tempdir().unwrap();
    strata_models::testing::write_tiny_model(tmp.path(), 1).unwrap();
    let p = layout_problems(tmp.path(), &r);
    assert!(p.iter().any(|s| s.contains("scheduler")), "{p:?}");
}

#[test]
fn full_run_output_has_the_diffusers_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    // the base model as strata's tests write it: a bare model_index.json, no scheduler/
    strata_models::testing::write_tiny_model(&model, 3).unwrap();
    let data = tmp.path().join("data");
    let opts = strata_synth::dataset::DatasetOptions {
        count: 4,
        size: 64,
        seed: 5,
        classes: vec![],
    };
    strata_synth::dataset::write_dataset(&data, &opts, &|| {}).unwrap();
    let run = tmp.path().join("run");
    let cfg = TrainConfig {
        method: Method::Full,
        model: model.clone(),
        data,
        out: run.clone(),
        resolution: 16,
        batch_size: 2,
        max_steps: Some(1),
        lr: 1e-4,
        ..TrainConfig::default()
    };
    let summary = strata_train::train(
        cfg,
        RunOptions {
            resume: false,
            on_status: &mut |_| {},
            on_step: &mut |_| {},
        },
    )
    .unwrap();
    let problems = layout_problems(&summary.output, &reference());
    assert!(problems.is_empty(), "{problems:?}");
    // the entries the base folder had are kept
    let idx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(summary.output.join("model_index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(idx["_class_name"], "StableDiffusionPipeline");
    assert_eq!(idx["_diffusers_version"], "0.35.2");
}
