//! Diffusion speed on the CPU against PyTorch + diffusers + PEFT, same weights, same shapes,
//! same thread count, in one run:
//!
//!     cargo bench -p strata-train --bench vs_pytorch
//!
//! Runs each row in strata (one warm-up, then `STRATA_BENCH_REPS` timed runs, default 3),
//! drops the models, then runs `scripts/bench/diffusion_peer.py` on the same rows with the
//! Python of `STRATA_PYTHON` (default `.venv/bin/python` at the repository root) and prints
//! `work | strata | PyTorch | ratio` (ratio = PyTorch time / strata time: above 1 means
//! strata is faster). Times are the minimum of the timed runs (the machine may be shared and
//! interference only adds time); the medians are printed too.
//!
//! Weights: the embedded base model (`models/strata-base`, read by both sides) and, for the
//! SD-1.5-size rows, a randomly initialised SD-1.5-size UNet and VAE that this bench writes
//! once in diffusers layout (f16 files, 1.9 GB) under `target/vs-pytorch/sd15` and both sides
//! load in f32.
//!
//! Environment:
//! - `STRATA_BENCH_THREADS` (default 2): compute threads of both sides. candle's own pool for
//!   elementwise ops gets `CANDLE_NUM_THREADS` (default here 1: its waiting thread spins).
//! - `STRATA_BENCH_SLOW=1`: add the SD-1.5 rows at 64² latents and batch 2 (minutes).
//! - `STRATA_BENCH_ROWS=a,b`: only these rows (names in the first column of the table).
//! - `STRATA_BENCH_BASELINE=1`: time each strata row a second time with strata's own CPU
//!   kernels off (`strata_models::ops::set_fast_kernels(false)`), as a before/after column.
//! - `STRATA_BENCH_NO_PEER=1`: strata only.
//! - `STRATA_BENCH_PROFILE=1`: after each strata row, one more run with strata's per-op-kind
//!   counters on (`strata_models::ops::profile`), printed as a breakdown.

/// The allocator the `strata` binary uses, with the same purge delay (see its `main.rs`), so
/// that the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use strata_models::conditioning::Conditioning;
use strata_models::loading::{self, DiffusionModels};
use strata_models::lora::{self, LoraConfig, LoraTargets};
use strata_models::pipeline::seeded_normal;
use strata_models::schedulers::{DdpmConfig, DdpmScheduler, Scheduler};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};
use strata_models::vae::{AutoencoderKL, VaeConfig};
use strata_train::optim::{AdamW, AdamWParams};

/// (name, description, slow)
const ROWS: &[(&str, &str, bool)] = &[
    (
        "cfg_step",
        "one CFG sampling step (base model UNet at batch 2, 16² latents)",
        false,
    ),
    (
        "lora_step",
        "one LoRA step of the demo (batch 8, 64 px, r8 attn/proj/ff, VAE encode, AdamW)",
        false,
    ),
    (
        "base_vae_encode",
        "base model VAE encode, batch 8, 64² px",
        false,
    ),
    (
        "base_vae_decode",
        "base model VAE decode, batch 8, 64² px",
        false,
    ),
    (
        "sd15_fwd_32",
        "SD-1.5-size UNet forward, 32² latents, batch 1",
        false,
    ),
    (
        "sd15_lora_32",
        "SD-1.5-size LoRA r16 (attention) fwd + bwd, 32² latents, batch 1",
        false,
    ),
    (
        "sd15_vae_encode_256",
        "SD-1.5-size VAE encode, 256² px, batch 1",
        false,
    ),
    (
        "sd15_vae_decode_256",
        "SD-1.5-size VAE decode, 256² px, batch 1",
        false,
    ),
    (
        "sd15_fwd_64b2",
        "SD-1.5-size UNet forward, 64² latents, batch 2",
        true,
    ),
    (
        "sd15_lora_64b2",
        "SD-1.5-size LoRA r16 (attention) fwd + bwd, 64² latents, batch 2",
        true,
    ),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// One warm-up, then `reps` runs: (minimum, median) in ms.
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let mut v = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    if std::env::var("STRATA_BENCH_PROFILE")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        // one more run with the per-op-kind counters on
        use strata_models::ops::profile;
        profile::enable(true);
        let _ = profile::take_ops();
        let t = Instant::now();
        let cpu0 = profile::process_cpu_ns();
        f()?;
        let total = t.elapsed().as_secs_f64() * 1e3;
        let total_cpu = (profile::process_cpu_ns() - cpu0) as f64 * 1e-6;
        profile::enable(false);
        let _ = profile::take();
        let ops = profile::take_ops();
        let counted: f64 = ops.iter().map(|o| o.1 * 1e3).sum();
        let counted_cpu: f64 = ops.iter().map(|o| o.2 * 1e3).sum();
        // cores busy: the process's CPU time over the wall time (2.0 = both cores all along)
        println!(
            "  breakdown of one profiled run: {total:.0} ms, {:.2} cores busy",
            total_cpu / total
        );
        for (name, s, cpu) in ops.iter().filter(|o| o.1 > 0.0) {
            println!(
                "  | {name} | {:.0} ms | {:.0} % | {:.2} cores |",
                s * 1e3,
                s * 1e5 / total,
                cpu / s
            );
        }
        let rest = total - counted;
        println!(
            "  | rest (candle elementwise ops, LoRA adapters, adds, copies, autograd) | {rest:.0} ms | {:.0} % | {:.2} cores |",
            rest * 100.0 / total,
            (total_cpu - counted_cpu) / rest
        );
    }
    Ok((v[0], v[v.len() / 2]))
}

/// The SD-1.5-size UNet and VAE folder (written once, f16, seeded).
fn sd15_dir() -> Result<PathBuf> {
    let dir = target_dir().join("vs-pytorch/sd15");
    if dir.join("done").is_file() {
        return Ok(dir);
    }
    eprintln!(
        "writing the SD-1.5-size weights once to {} ...",
        dir.display()
    );
    let dev = Device::Cpu;
    let write = |sub: &str, vm: &candle_nn::VarMap, seed: u64, json: serde_json::Value| {
        strata_models::init::randomize(vm, seed)?;
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        let data = vm.data().lock().expect("varmap lock");
        let mut half = HashMap::new();
        for (n, v) in data.iter() {
            half.insert(n.clone(), v.as_tensor().to_dtype(DType::F16)?);
        }
        drop(data);
        strata_models::safetensors_io::save(
            &d.join("diffusion_pytorch_model.fp16.safetensors"),
            &half,
            Some(HashMap::from([("format".to_string(), "pt".to_string())])),
        )
        .map_err(candle_core::Error::wrap)?;
        std::fs::write(
            d.join("config.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )?;
        Ok::<_, candle_core::Error>(())
    };
    {
        let vm = candle_nn::VarMap::new();
        let cfg = UNetConfig::sd15();
        UNet2DConditionModel::new(
            cfg.clone(),
            candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )?;
        write("unet", &vm, 15, cfg.to_diffusers_json())?;
    }
    {
        let vm = candle_nn::VarMap::new();
        let cfg = VaeConfig::sd15();
        AutoencoderKL::new(
            cfg.clone(),
            candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )?;
        let mut json = cfg.to_diffusers_json();
        json["sample_size"] = serde_json::json!(512);
        write("vae", &vm, 16, json)?;
    }
    std::fs::write(dir.join("done"), b"")?;
    Ok(dir)
}

fn load(dir: &Path) -> Result<DiffusionModels> {
    loading::load_diffusers(dir, DType::F32, &Device::Cpu, true).map_err(candle_core::Error::wrap)
}

fn unet_forward(
    unet: &UNet2DConditionModel,
    b: usize,
    hw: usize,
    reps: usize,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let x = seeded_normal(&[b, 4, hw, hw], 1, &dev)?;
    let ctx = seeded_normal(&[b, 77, unet.config.cross_attention_dim], 2, &dev)?;
    let c = Conditioning::Context(ctx);
    let t = Tensor::new(vec![500f32; b], &dev)?;
    time(reps, || unet.forward(&x, &t, &c).map(|_| ()))
}

fn lora_fwd_bwd(
    unet: &mut UNet2DConditionModel,
    b: usize,
    hw: usize,
    reps: usize,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    lora::attach(unet, &LoraConfig::new(16, 16.0))?;
    let x = seeded_normal(&[b, 4, hw, hw], 1, &dev)?;
    let noise = seeded_normal(&[b, 4, hw, hw], 3, &dev)?;
    let ctx = seeded_normal(&[b, 77, unet.config.cross_attention_dim], 2, &dev)?;
    let c = Conditioning::Context(ctx);
    let t = Tensor::new(vec![500f32; b], &dev)?;
    let r = time(reps, || {
        let pred = unet.forward(&x, &t, &c)?;
        let loss = (pred - &noise)?.sqr()?.mean_all()?;
        let g = loss.backward()?;
        std::hint::black_box(g);
        Ok(())
    });
    // the next row starts from the plain model
    lora::VisitLinears::visit_linears_mut(unet, &mut |l| l.lora = None);
    r
}

fn strata_row(
    row: &str,
    reps: usize,
    cache: &mut HashMap<&'static str, DiffusionModels>,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let base = repo_root().join("models/strata-base");
    let mut get = |key: &'static str| -> Result<()> {
        if !cache.contains_key(key) {
            let m = if key == "base" {
                load(&base)?
            } else {
                load(&sd15_dir()?)?
            };
            cache.insert(key, m);
        }
        Ok(())
    };
    match row {
        "cfg_step" => {
            get("base")?;
            let unet = &cache["base"].unet;
            let x = seeded_normal(&[1, 4, 16, 16], 1, &dev)?;
            let ctx = seeded_normal(&[2, 77, unet.config.cross_attention_dim], 2, &dev)?;
            let c = Conditioning::Context(ctx);
            let t = Tensor::new(&[500f32, 500.0], &dev)?;
            time(reps, || {
                let e = unet.forward(&Tensor::cat(&[&x, &x], 0)?, &t, &c)?;
                let (u, cnd) = (e.narrow(0, 0, 1)?, e.narrow(0, 1, 1)?);
                let g = (&u + ((cnd - &u)? * 7.0)?)?;
                std::hint::black_box(g);
                Ok(())
            })
        }
        "lora_step" => {
            // its own copy of the UNet: the adapters stay on it
            let DiffusionModels { mut unet, vae } = load(&base)?;
            let targets = LoraTargets {
                attention: true,
                proj: true,
                ff: true,
            };
            lora::attach(
                &mut unet,
                &LoraConfig {
                    targets,
                    ..LoraConfig::new(8, 8.0)
                },
            )?;
            let vars = lora::adapters(&unet)
                .into_iter()
                .flat_map(|(n, a)| [(format!("{n}.a"), a.a), (format!("{n}.b"), a.b)])
                .collect();
            let mut opt = AdamW::new(vars, AdamWParams::default())?;
            let sched = DdpmScheduler::new(DdpmConfig::sd15());
            let images = seeded_normal(&[8, 3, 64, 64], 4, &dev)?.tanh()?;
            let ctx = seeded_normal(&[8, 77, unet.config.cross_attention_dim], 2, &dev)?;
            let c = Conditioning::Context(ctx);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
            let mut k = 0u64;
            time(reps, || {
                k += 1;
                let eps = seeded_normal(&[8, 4, 16, 16], 100 + k, &dev)?;
                let lat = vae.encode(&images, Some(&eps))?;
                let noise = seeded_normal(lat.dims(), 200 + k, &dev)?;
                let ts: Vec<usize> = (0..8).map(|_| rng.gen_range(0..1000)).collect();
                let xt = sched.add_noise(&lat, &noise, &ts)?;
                let t = Tensor::new(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), &dev)?;
                let pred = unet.forward(&xt, &t, &c)?;
                let loss = (pred - &noise)?.sqr()?.mean_all()?;
                let store = loss.backward()?;
                let g = opt.collect_grads(&store)?;
                opt.step_with(&g, 1e-4)
            })
        }
        "base_vae_encode" | "base_vae_decode" | "sd15_vae_encode_256" | "sd15_vae_decode_256" => {
            let key = if row.starts_with("base") {
                "base"
            } else {
                "sd15"
            };
            get(key)?;
            let vae = &cache[key].vae;
            let (b, px) = if key == "base" { (8, 64) } else { (1, 256) };
            let down = vae.config.downscale();
            if row.contains("encode") {
                let images = seeded_normal(&[b, 3, px, px], 4, &dev)?.tanh()?;
                let eps = seeded_normal(&[b, 4, px / down, px / down], 5, &dev)?;
                time(reps, || vae.encode(&images, Some(&eps)).map(|_| ()))
            } else {
                let lat = seeded_normal(&[b, 4, px / down, px / down], 6, &dev)?;
                time(reps, || vae.decode(&lat).map(|_| ()))
            }
        }
        "sd15_fwd_32" | "sd15_fwd_64b2" => {
            get("sd15")?;
            let (b, hw) = if row == "sd15_fwd_32" {
                (1, 32)
            } else {
                (2, 64)
            };
            unet_forward(&cache["sd15"].unet, b, hw, reps)
        }
        "sd15_lora_32" | "sd15_lora_64b2" => {
            get("sd15")?;
            let (b, hw) = if row == "sd15_lora_32" {
                (1, 32)
            } else {
                (2, 64)
            };
            let unet = &mut cache.get_mut("sd15").expect("loaded").unet;
            lora_fwd_bwd(unet, b, hw, reps)
        }
        other => candle_core::bail!("unknown row {other}"),
    }
}

/// The peer's rows: name → (min, median) ms, or why there are none.
fn run_peer(
    rows: &[&str],
    reps: usize,
    threads: usize,
) -> std::result::Result<HashMap<String, (f64, f64)>, String> {
    let root = repo_root();
    let python = std::env::var_os("STRATA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    if !python.exists() {
        return Err(format!(
            "no Python at {} (set STRATA_PYTHON, or make .venv with torch, diffusers and peft)",
            python.display()
        ));
    }
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root.join("scripts/bench/diffusion_peer.py"))
        .arg("--base")
        .arg(root.join("models/strata-base"))
        .arg("--rows")
        .arg(rows.join(","))
        .arg("--reps")
        .arg(reps.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        // PyTorch's OpenMP workers spin while waiting by default: on a busy machine that cost
        // it up to 20x (the CFG step 794 ms instead of 56 ms); passive waiting is the
        // equivalent of the one-thread elementwise pool strata's side gets
        .env(
            "OMP_WAIT_POLICY",
            std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "PASSIVE".into()),
        )
        .stderr(std::process::Stdio::inherit());
    if rows.iter().any(|r| r.starts_with("sd15")) {
        cmd.arg("--sd15")
            .arg(sd15_dir().map_err(|e| e.to_string())?);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("the peer script failed ({})", out.status));
    }
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(r), Some(ms), Some(med)) =
            (v["row"].as_str(), v["ms"].as_f64(), v["median_ms"].as_f64())
        {
            m.insert(r.to_string(), (ms, med));
        }
    }
    Ok(m)
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else {
        format!("{ms:.1} ms")
    }
}

fn main() -> Result<()> {
    // SAFETY: a process-wide allocator option (15 is `mi_option_purge_delay`), as `strata` sets
    unsafe { libmimalloc_sys::mi_option_set(15, 1000) };
    let threads: usize = std::env::var("STRATA_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // before any candle/rayon use: the rayon pool (strata's kernels) and gemm read it
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    // candle's elementwise ops run on their own pool whose waiting thread spins until the
    // other finishes: on a busy machine that costs several times the work itself (measured:
    // the LoRA step 5.8 s with two threads there, 0.8 s with one). One thread for those
    // memory-bound ops unless set otherwise; matrix products and strata's kernels keep
    // `threads`.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let reps: usize = std::env::var("STRATA_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let flag = |k: &str| std::env::var(k).map(|v| v == "1").unwrap_or(false);
    let slow = flag("STRATA_BENCH_SLOW");
    let baseline = flag("STRATA_BENCH_BASELINE");
    let only: Option<Vec<String>> = std::env::var("STRATA_BENCH_ROWS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let rows: Vec<&(&str, &str, bool)> = ROWS
        .iter()
        .filter(|(n, _, s)| match &only {
            Some(o) => o.iter().any(|x| x == n),
            None => slow || !s,
        })
        .collect();
    println!(
        "threads {threads} (candle's elementwise pool: {}), {reps} timed runs after one warm-up, minimum (median); load average: {}",
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_default(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let mut ours = HashMap::new();
    let mut before = HashMap::new();
    {
        let mut cache = HashMap::new();
        for (name, _, _) in &rows {
            let r = strata_row(name, reps, &mut cache)?;
            eprintln!("strata {name}: {} ({})", fmt_ms(r.0), fmt_ms(r.1));
            ours.insert(*name, r);
            if baseline {
                strata_models::ops::set_fast_kernels(false);
                let r = strata_row(name, reps, &mut cache)?;
                strata_models::ops::set_fast_kernels(true);
                eprintln!(
                    "strata {name}, own kernels off: {} ({})",
                    fmt_ms(r.0),
                    fmt_ms(r.1)
                );
                before.insert(*name, r);
            }
        }
    }
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let peer = if flag("STRATA_BENCH_NO_PEER") {
        Err("STRATA_BENCH_NO_PEER=1".to_string())
    } else {
        run_peer(&names, reps, threads)
    };
    if let Err(why) = &peer {
        println!("skipping the PyTorch peer: {why}");
    }
    if baseline {
        println!("| row | work | strata | strata, own kernels off | PyTorch | ratio (PyTorch / strata) |");
        println!("|---|---|---|---|---|---|");
    } else {
        println!("| row | work | strata | PyTorch | ratio (PyTorch / strata) |");
        println!("|---|---|---|---|---|");
    }
    for (name, what, _) in &rows {
        let (s, smed) = ours[name];
        let (p, ratio) = match peer.as_ref().ok().and_then(|m| m.get(*name)) {
            Some(&(p, pmed)) => (
                format!("{} ({})", fmt_ms(p), fmt_ms(pmed)),
                format!("{:.2}×", p / s),
            ),
            None => ("–".into(), "–".into()),
        };
        let b = before
            .get(name)
            .map(|&(b, bmed)| format!(" {} ({}) |", fmt_ms(b), fmt_ms(bmed)))
            .unwrap_or_default();
        println!(
            "| {name} | {what} | {} ({}) |{b} {p} | {ratio} |",
            fmt_ms(s),
            fmt_ms(smed)
        );
    }
    Ok(())
}
