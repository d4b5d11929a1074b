//! `strata train` end to end on a tiny random model: LoRA run, TOML config, SIGKILL mid-run
//! then `--resume` (bit-identical to an uninterrupted run), NaN stop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::strata;

fn setup(root: &Path) -> (PathBuf, PathBuf) {
    let model = root.join("model");
    strata_models::testing::write_tiny_model(&model, 3).unwrap();
    let data = root.join("data");
    let opts = strata_synth::DatasetOptions {
        count: 6,
        size: 64,
        seed: 5,
        classes: vec![],
    };
    strata_synth::write_dataset(&data, &opts, &|| {}).unwrap();
    (model, data)
}

fn base_args(model: &Path, data: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--method",
        "lora",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--captions",
        "hierarchical",
        "--fusion",
        "learned",
        "--resolution",
        "16",
        "--batch-size",
        "2",
        "--lr",
        "0.01",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "3",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn latest_step(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("latest"))
        .ok()
        .and_then(|s| s.trim().strip_prefix("step-").and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn latest_trainable(run: &Path) -> Vec<u8> {
    let name = std::fs::read_to_string(run.join("latest")).unwrap();
    std::fs::read(
        run.join("checkpoints")
            .join(name.trim())
            .join("trainable.safetensors"),
    )
    .unwrap()
}

#[test]
fn sigkill_then_resume_matches_an_uninterrupted_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    kill_and_resume(tmp.path(), &model, &data, &[]);
}

/// The same with latents read from the on-disk cache and aspect-ratio buckets (two of the
/// tiles cut to 2:1): the killed run resumes reading the cache, bit-identical again.
#[test]
fn sigkill_then_resume_with_cached_latents_and_buckets_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let recs = strata_caption::dataset::read_dataset(&data).unwrap();
    for r in &recs[..2] {
        crop_png(&data.join(&r.file_name), 64, 32);
    }
    kill_and_resume(
        tmp.path(),
        &model,
        &data,
        &[
            "--cache-latents",
            "--bucket",
            "--latent-cache-dir",
            tmp.path().join("cache").to_str().unwrap(),
        ],
    );
    let cached = std::fs::read_dir(tmp.path().join("cache")).unwrap().count();
    let n_train = recs
        .iter()
        .filter(|r| r.split != Some(strata_caption::dataset::Split::Test))
        .count();
    assert_eq!(cached, n_train, "one cache entry per training image");
}

/// Rewrites a PNG as its top-left `w × h` part.
fn crop_png(path: &Path, w: usize, h: usize) {
    let t = strata_models::pipeline::read_png_image(path, &candle_core::Device::Cpu).unwrap();
    let (_, _, sh, sw) = t.dims4().unwrap();
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                rgb[(y * w + x) * 3 + c] =
                    ((v[c * sh * sw + y * sw + x] + 1.0) * 127.5).round() as u8;
            }
        }
    }
    strata_image::write_png_with_text(path, &rgb, w, h, &[]).unwrap();
}

/// Runs 40 steps uninterrupted, then again killed (SIGKILL) after step 5 and resumed; the
/// weights and the LoRA file must match bit for bit.
fn kill_and_resume(root: &Path, model: &Path, data: &Path, extra: &[&str]) {
    let (model, data) = (model.to_path_buf(), data.to_path_buf());
    let steps = "40";
    let a = root.join("a");
    let out = strata()
        .args(base_args(&model, &data, &a))
        .args(["--max-steps", steps])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.join("lora.safetensors").is_file());
    assert_eq!(
        std::fs::read_to_string(a.join("log.jsonl"))
            .unwrap()
            .lines()
            .count(),
        40
    );

    let b = root.join("b");
    let mut child = strata()
        .args(base_args(&model, &data, &b))
        .args(["--max-steps", steps])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while latest_step(&b) < 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());
    let killed_at = latest_step(&b);
    assert!(killed_at < 40, "killed mid-run (at step {killed_at})");
    assert!(!b.join("lora.safetensors").exists());

    let out = strata()
        .args(["train", "--resume", b.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(latest_step(&b), 40);
    assert_eq!(
        latest_trainable(&a),
        latest_trainable(&b),
        "weights after resume differ"
    );
    assert_eq!(
        std::fs::read(a.join("lora.safetensors")).unwrap(),
        std::fs::read(b.join("lora.safetensors")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(b.join("log.jsonl"))
            .unwrap()
            .lines()
            .count(),
        40
    );
}

#[test]
fn toml_config_sets_options_and_nan_stops_keeping_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let cfg = tmp.path().join("cfg.toml");
    let run = tmp.path().join("run");
    std::fs::write(
        &cfg,
        format!(
            "method = \"lora\"\nmodel = {:?}\ndata = {:?}\nout = {:?}\ncaptions = \"flat\"\nresolution = 16\nbatch_size = 2\nmax_steps = 3\nlora_rank = 3\nmin_snr_gamma = 5.0\ngradient_accumulation = 2\n",
            model, data, run
        ),
    )
    .unwrap();
    let out = strata()
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--quiet",
            "--lora-alpha",
            "6",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains("lora_rank = 3")
            && saved.contains("lora_alpha = 6.0")
            && saved.contains("captions = \"flat\""),
        "{saved}"
    );
    let bytes = std::fs::read(run.join("lora.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["ss_network_dim"], "3");
    assert_eq!(header["__metadata__"]["strata_captions"], "flat");
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight";
    assert_eq!(header[k]["shape"], serde_json::json!([3, 32]));

    // an absurd learning rate blows the loss up: exit 2, last good checkpoint named and kept
    let nan = tmp.path().join("nan");
    let args: Vec<String> = base_args(&model, &data, &nan)
        .into_iter()
        .map(|a| if a == "0.01" { "1e30".to_string() } else { a })
        .collect();
    let out = strata()
        .args(args)
        .args(["--max-steps", "20", "--lr-schedule", "constant"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loss became") && err.contains("checkpoint"),
        "{err}"
    );
    let last = latest_step(&nan);
    assert!(
        last >= 1
            && nan
                .join("checkpoints")
                .join(format!("step-{last:08}"))
                .join("trainable.safetensors")
                .is_file()
    );

    // a bad option value is a clear error
    let args: Vec<String> = base_args(&model, &data, &tmp.path().join("x"))
        .into_iter()
        .map(|a| {
            if a == "hierarchical" {
                "wordy".to_string()
            } else {
                a
            }
        })
        .collect();
    let out = strata().args(args).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hierarchical or flat"));
}
