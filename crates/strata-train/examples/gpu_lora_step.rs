//! LoRA training-step throughput on the SD-1.5 architecture with random weights: rank 16 on
//! the attention projections (to_q/to_k/to_v/to_out.0), batch 10, 512² images, VAE encode
//! included, DDPM noise, ε-loss, backward, AdamW — the counterpart of
//! `lora_train_step_r16_bs10_512` in `shared/gpu/diffusers_baseline.py`, which uses fp16
//! autocast with a GradScaler. Here `--mixed-precision f16` (default) keeps the frozen UNet,
//! VAE and activations in f16 and the LoRA weights and AdamW moments in f32, with dynamic loss
//! scaling; `bf16` and `no` (f32) are the alternatives.
//!
//!     cargo run --release -p strata-train --features cuda --example gpu_lora_step -- 10 512 10
//!     cargo run --release -p strata-train --example gpu_lora_step -- --tiny      # CPU check
//!
//! Positional arguments: batch, resolution, timed steps (defaults 10 512 10; with `--tiny`
//! 2 64 3). Prints one JSON line (img/s, s/step); peak GPU memory is sampled beside it by
//! `scripts/gpu/run-checks.sh` (nvidia-smi). Two warm-up steps are not timed.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use strata_models::conditioning::Conditioning;
use strata_models::lora::{self, LoraConfig};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};
use strata_models::vae::{AutoencoderKL, VaeConfig};
use strata_train::config::MixedPrecision;
use strata_train::optim::{AdamW, AdamWParams, LossScaler};

/// Random weights as frozen plain tensors in `dtype` (as a loaded model has them).
fn frozen<T>(
    dtype: DType,
    dev: &Device,
    build: impl Fn(VarBuilder) -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    let vm = VarMap::new();
    build(VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    let map = vm
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().to_dtype(dtype)?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
    build(VarBuilder::from_tensors(map, dtype, dev))
}

fn main() -> candle_core::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let tiny = argv.iter().any(|a| a == "--tiny");
    let mp: MixedPrecision = match argv.iter().position(|a| a == "--mixed-precision") {
        Some(i) => argv
            .get(i + 1)
            .map(|s| s.parse())
            .unwrap_or(Ok(MixedPrecision::F16))
            .map_err(candle_core::Error::Msg)?,
        None => MixedPrecision::F16,
    };
    let nums: Vec<usize> = argv.iter().filter_map(|a| a.parse().ok()).collect();
    let (d_bs, d_res, d_steps) = if tiny { (2, 64, 3) } else { (10, 512, 10) };
    let (bs, res, steps) = (
        nums.first().copied().unwrap_or(d_bs),
        nums.get(1).copied().unwrap_or(d_res),
        nums.get(2).copied().unwrap_or(d_steps),
    );
    let dev = if tiny {
        Device::Cpu
    } else {
        Device::cuda_if_available(0)?
    };
    let (ucfg, vcfg, rank) = if tiny {
        (UNetConfig::tiny(), VaeConfig::tiny_x8(), 4)
    } else {
        (UNetConfig::sd15(), VaeConfig::sd15(), 16)
    };
    let dtype = mp.compute_dtype();
    let mut unet = frozen(dtype, &dev, |vb| {
        UNet2DConditionModel::new(ucfg.clone(), vb)
    })?;
    let vae = frozen(dtype, &dev, |vb| AutoencoderKL::new(vcfg.clone(), vb))?;
    // adapters are f32 master weights even on a half-precision UNet
    lora::attach(&mut unet, &LoraConfig::new(rank, rank as f64))?;
    let vars: Vec<(String, candle_core::Var)> = lora::adapters(&unet)
        .into_iter()
        .flat_map(|(p, a)| [(format!("{p}.a"), a.a), (format!("{p}.b"), a.b)])
        .collect();
    let n_params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(vars, AdamWParams::default())?;
    if mp == MixedPrecision::F16 {
        opt.scaler = Some(LossScaler::default());
    }
    let sched = strata_models::schedulers::NoiseSchedule::new(
        1000,
        0.00085,
        0.012,
        strata_models::schedulers::BetaSchedule::ScaledLinear,
    );
    let ctx = Tensor::randn(0f32, 1.0, (bs, 77, ucfg.cross_attention_dim), &dev)?;
    let mut skipped = 0usize;
    let mut step = |i: usize| -> candle_core::Result<f32> {
        let images = Tensor::randn(0f32, 0.5, (bs, 3, res, res), &dev)?.to_dtype(dtype)?;
        // frozen VAE: no graph is built (the images are not variables), detached anyway
        let x0 = vae.encode(&images, None)?.detach().to_dtype(DType::F32)?;
        let noise = x0.randn_like(0.0, 1.0)?;
        let ts: Vec<usize> = (0..bs).map(|j| (i * 37 + j * 101) % 1000).collect();
        let xt = sched.add_noise(&x0, &noise, &ts)?.to_dtype(dtype)?;
        let tt = Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), bs, &dev)?;
        let pred = unet.forward(&xt, &tt, &Conditioning::Context(ctx.to_dtype(dtype)?))?;
        let loss = (pred.to_dtype(DType::F32)? - &noise)?.sqr()?.mean_all()?;
        let scale = opt.scaler.map(|s| s.scale).unwrap_or(1.0);
        let g = opt.collect_grads(&(&loss * scale)?.backward()?)?;
        let g = g
            .iter()
            .map(|g| g * (1.0 / scale))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let finite = g.iter().try_fold(true, |ok, g| {
            Ok::<_, candle_core::Error>(ok && g.sqr()?.sum_all()?.to_scalar::<f32>()?.is_finite())
        })?;
        if finite {
            opt.step_with(&g, 1e-4)?;
        } else {
            skipped += 1;
        }
        if let Some(s) = &mut opt.scaler {
            s.update(finite);
        }
        loss.to_scalar::<f32>()
    };
    step(0)?;
    step(1)?;
    dev.synchronize()?;
    let t0 = Instant::now();
    let mut last = 0f32;
    for i in 0..steps {
        last = step(i + 2)?;
    }
    dev.synchronize()?;
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": format!("lora_train_step_r{rank}_bs{bs}_{res}"),
            "impl": "strata",
            "mixed_precision": format!("{mp:?}").to_lowercase(),
            "lora_params": n_params,
            "s_per_step": s / steps as f64,
            "images_per_s": (steps * bs) as f64 / s,
            "skipped_steps": skipped,
            "last_loss": last,
            "device": format!("{:?}", dev.location()),
        })
    );
    Ok(())
}
