//! Benchmark: peak memory of a LoRA run on a large dataset, with the streamed data path.
//!
//! Writes 10 000 JPEG tiles of 512² (quality 90, the usual format of RSICD-style tile sets;
//! smooth colour fields with noise, different per tile;
//! `STRATA_BENCH_TILES` changes the count), then trains a few LoRA steps on the tiny test
//! model at 512 px in a child process, which prints its peak resident memory (`VmHWM` of
//! /proc/self/status) beside the footprint of the loaded model alone. Decoding every image
//! into one buffer, as the old data path did, would need 10 000 × 3 × 512² × 4 bytes
//! ≈ 31 GB before the first step.
//!
//! Run: `cargo bench -p strata-train --bench train_memory` (`--profile dev` builds faster;
//! its dependencies are optimised too). Compare with `STRATA_BENCH_TILES=16` to separate what
//! the dataset costs from what the training step itself needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    if let Ok(dir) = std::env::var("STRATA_BENCH_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let n: usize = std::env::var("STRATA_BENCH_TILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-memory-bench");
    let data = work.join(format!("jpeg-tiles-{n}"));
    let model = work.join("model");
    if !model.join("model_index.json").is_file() {
        write_model(&model);
    }
    if !data.join("metadata.jsonl").is_file() {
        let t0 = Instant::now();
        eprintln!("writing {n} JPEG tiles of 512² into {}…", data.display());
        write_tiles(&data, n);
        eprintln!("  {:.0} s", t0.elapsed().as_secs_f64());
    }
    let out = work.join("run");
    let _ = std::fs::remove_dir_all(&out);
    let t0 = Instant::now();
    let status = Command::new(std::env::current_exe().unwrap())
        .env("STRATA_BENCH_CHILD", &work)
        .env("STRATA_BENCH_DATA", &data)
        .status()
        .unwrap();
    assert!(status.success(), "the training child failed");
    eprintln!("training child: {:.0} s", t0.elapsed().as_secs_f64());
}

/// The tiny test model with a VAE that down-samples ×8 like SD-1.5's (the default tiny
/// VAE halves the side only, and its 256² latents would make the UNet's self-attention
/// alone need tens of GB at 512 px).
fn write_model(model: &Path) {
    use strata_models::vae::{AutoencoderKL, VaeConfig};
    strata_models::testing::write_tiny_model(model, 1).unwrap();
    let cfg = VaeConfig::tiny_x8();
    let vm = candle_nn::VarMap::new();
    AutoencoderKL::new(
        cfg.clone(),
        candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .unwrap();
    vm.save(model.join("vae/diffusion_pytorch_model.safetensors"))
        .unwrap();
    std::fs::write(
        model.join("vae/config.json"),
        serde_json::to_string_pretty(&cfg.to_diffusers_json()).unwrap(),
    )
    .unwrap();
}

/// `VmHWM` (peak resident set) of this process in bytes.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn child(work: &Path) {
    let data = PathBuf::from(std::env::var("STRATA_BENCH_DATA").unwrap());
    let model = work.join("model");
    let before = peak_rss();
    // the model's own footprint: load it once as the trainer does
    let loaded = strata_models::pipeline::load_model(
        &model,
        None,
        None,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let with_model = peak_rss();
    drop(loaded);
    let cfg = strata_train::TrainConfig {
        model: model.clone(),
        data: data.clone(),
        out: work.join("run"),
        resolution: 512,
        batch_size: 2,
        max_steps: Some(4),
        checkpoint_every: 100,
        lora_rank: 2,
        lora_alpha: 2.0,
        ..strata_train::TrainConfig::default()
    };
    let t0 = Instant::now();
    let mut steps = 0;
    strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume: false,
            on_status: &mut |s: &str| eprintln!("  {s}"),
            on_step: &mut |r: &strata_train::StepReport| {
                steps += 1;
                eprintln!("  step {} loss {:.4}", r.step, r.loss);
            },
        },
    )
    .unwrap();
    let peak = peak_rss();
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let n = std::fs::read_to_string(data.join("metadata.jsonl"))
        .unwrap()
        .lines()
        .count();
    println!("train_memory: {n} tiles of 512², {steps} LoRA steps (batch 2) on the tiny model (×8 VAE) at 512 px, {:.1} s", t0.elapsed().as_secs_f64());
    println!("  process before loading the model: {:.0} MiB", mb(before));
    println!(
        "  model's own footprint (peak after loading it): {:.0} MiB",
        mb(with_model.saturating_sub(before))
    );
    println!("  peak RSS of the whole run: {:.0} MiB", mb(peak));
    println!(
        "  peak beyond the process and model: {:.0} MiB (goal: < 2048)",
        mb(peak.saturating_sub(with_model))
    );
}

/// A strata dataset of `n` RGB tiles (smooth fields plus noise) with captions.
fn write_tiles(dir: &Path, n: usize) {
    let img = dir.join("images");
    std::fs::create_dir_all(&img).unwrap();
    let threads = std::thread::available_parallelism()
        .map(|x| x.get())
        .unwrap_or(2)
        .min(8);
    std::thread::scope(|s| {
        for t in 0..threads {
            let img = img.clone();
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let rgb = tile(i as u64, 512);
                    let p = img.join(format!("tile_{i:05}.jpg"));
                    let f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
                    image::codecs::jpeg::JpegEncoder::new_with_quality(f, 90)
                        .encode(&rgb, 512, 512, image::ExtendedColorType::Rgb8)
                        .unwrap();
                }
            });
        }
    });
    let mut meta = String::new();
    let scenes = ["farmland", "forest", "harbour", "river", "town"];
    for i in 0..n {
        let rec = serde_json::json!({
            "file_name": format!("images/tile_{i:05}.jpg"),
            "scene": scenes[i % scenes.len()],
            "relation": "fields beside a road",
            "elements": ["field", "road"],
            "text": format!("an aerial view of {}", scenes[i % scenes.len()]),
        });
        meta.push_str(&rec.to_string());
        meta.push('\n');
    }
    std::fs::write(dir.join("metadata.jsonl"), meta).unwrap();
}

/// Smooth colour gradients and a low-frequency pattern, plus noise; different for each `seed`.
fn tile(seed: u64, s: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base: Vec<f32> = (0..9).map(|_| (rnd() % 1000) as f32 / 1000.0).collect();
    let mut v = vec![0u8; s * s * 3];
    for yy in 0..s {
        for xx in 0..s {
            let (fx, fy) = (xx as f32 / s as f32, yy as f32 / s as f32);
            let wave = ((fx * 6.0 + base[6] * 6.0).sin() * (fy * 5.0 + base[7] * 6.0).cos()) * 0.2;
            for c in 0..3 {
                let g = base[c] * (1.0 - fx) + base[c + 3] * fy + wave;
                let noise = (rnd() % 6) as f32 / 255.0;
                v[(yy * s + xx) * 3 + c] = ((g * 0.8 + noise) * 255.0).clamp(0.0, 255.0) as u8;
            }
        }
    }
    v
}
