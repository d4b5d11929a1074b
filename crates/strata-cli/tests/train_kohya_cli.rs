//! `strata train` on a kohya training config and a kohya dataset TOML, end to end on a tiny
//! random model: the kohya keys reach the run's configuration, the dataset's resolution and
//! batch size apply, and `num_repeats` shows in the number of steps of one epoch.

use std::path::Path;
use std::process::Command;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

#[test]
fn kohya_config_and_dataset_train_a_lora() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = root.join("model");
    strata_models::testing::write_tiny_model(&model, 3).unwrap();
    // real PNG scenes, rearranged as two kohya subsets
    let synth = root.join("synth");
    let opts = strata_synth::DatasetOptions {
        count: 3,
        size: 64,
        seed: 9,
        classes: vec![],
    };
    strata_synth::write_dataset(&synth, &opts, &|| {}).unwrap();
    let pngs: Vec<_> = strata_caption::read_dataset(&synth)
        .unwrap()
        .iter()
        .map(|r| synth.join(&r.file_name))
        .collect();
    assert_eq!(pngs.len(), 3);
    let (a, b) = (root.join("img/a"), root.join("img/b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(&pngs[0], a.join("one.png")).unwrap();
    std::fs::write(
        a.join("one.txt"),
        "park | a path crosses the lawn | path, lawn, tree",
    )
    .unwrap();
    std::fs::copy(&pngs[1], a.join("two.png")).unwrap();
    std::fs::write(a.join("two.txt"), "houses along a road").unwrap();
    std::fs::copy(&pngs[2], b.join("three.png")).unwrap();
    let dataset = root.join("dataset.toml");
    std::fs::write(
        &dataset,
        "[general]\ncaption_extension = \".txt\"\nshuffle_caption = false\n\n\
[[datasets]]\nresolution = \"16,16\"\nbatch_size = 1\n\n\
  [[datasets.subsets]]\n  image_dir = \"img/a\"\n  num_repeats = 2\n\n\
  [[datasets.subsets]]\n  image_dir = \"img/b\"\n  class_tokens = \"square\"\n",
    )
    .unwrap();
    let run = root.join("run");
    let config = root.join("kohya.toml");
    std::fs::write(
        &config,
        format!(
            "pretrained_model_name_or_path = {model:?}\noutput_dir = {run:?}\ndataset_config = {dataset:?}\n\
network_module = \"networks.lora\"\nnetwork_dim = 3\nnetwork_alpha = 3\nlearning_rate = 1e-3\n\
lr_scheduler = \"constant\"\nmax_train_epochs = 1\nsave_every_n_steps = 2\nseed = 4\n\
mixed_precision = \"no\"\ncache_latents = true\nxformers = true\n"
        ),
    )
    .unwrap();
    let out = strata()
        .current_dir(root)
        .args(["train", "--config", config.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 2 images x 2 repeats + 1 image, batch 1, one epoch
    assert!(stdout.contains("trained 5 steps"), "{stdout}");
    let saved: toml::Table =
        toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(saved["lora_rank"].as_integer(), Some(3));
    assert_eq!(saved["lora_alpha"].as_float(), Some(3.0));
    assert_eq!(saved["lr"].as_float(), Some(1e-3));
    assert_eq!(saved["resolution"].as_integer(), Some(16));
    assert_eq!(saved["batch_size"].as_integer(), Some(1));
    assert_eq!(saved["checkpoint_every"].as_integer(), Some(2));
    assert_eq!(saved["lr_schedule"].as_str(), Some("constant"));
    assert_eq!(saved["method"].as_str(), Some("lora"));
    assert_eq!(Path::new(saved["data"].as_str().unwrap()), dataset);
    let bytes = std::fs::read(run.join("lora.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["ss_network_dim"], "3");

    // the command line still wins over the dataset's batch size
    let run2 = root.join("run2");
    let out = strata()
        .current_dir(root)
        .args(["train", "--config", config.to_str().unwrap(), "--quiet"])
        .args(["--out", run2.to_str().unwrap(), "--batch-size", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("trained 1 steps"), "{stdout}");

    // a kohya key strata does not support is refused, naming it and the file
    std::fs::write(root.join("bad.toml"), "optimizer_type = \"Lion\"\n").unwrap();
    let out = strata()
        .args(["train", "--config", root.join("bad.toml").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.toml")
            && err.contains("`optimizer_type` is a kohya key strata does not support"),
        "{err}"
    );
}
