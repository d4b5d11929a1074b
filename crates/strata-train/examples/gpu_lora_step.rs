//! LoRA training-step throughput on the SD-1.5 architecture with random weights: rank 16 on
//! the attention projections, batch 10, 512² images, VAE encode included, DDPM noise, ε-loss,
//! backward, AdamW — the counterpart of `lora_train_step_r16_bs10_512` in
//! `shared/gpu/diffusers_baseline.py`. Build with the CUDA feature on a GPU machine:
//!
//!     cargo run --release -p strata-train --features cuda --example gpu_lora_step -- 10 512 5
//!
//! Arguments: batch, resolution, timed steps (defaults 10 512 5). Prints img/s. Peak memory
//! is read with `nvidia-smi --query-gpu=memory.used` beside it. NOT measured yet: no GPU was
//! lent to the task that wrote it; training is f32 only (no mixed precision yet).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use strata_models::conditioning::Conditioning;
use strata_models::lora::{self, LoraConfig};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};
use strata_models::vae::{AutoencoderKL, VaeConfig};
use strata_train::optim::{AdamW, AdamWParams};

fn main() -> candle_core::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (bs, res, steps) = (
        args.first().copied().unwrap_or(10),
        args.get(1).copied().unwrap_or(512),
        args.get(2).copied().unwrap_or(5),
    );
    let dev = Device::cuda_if_available(0)?;
    let vm = VarMap::new();
    UNet2DConditionModel::new(
        UNetConfig::sd15(),
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )?;
    let vmv = VarMap::new();
    let vae = AutoencoderKL::new(
        VaeConfig::sd15(),
        VarBuilder::from_varmap(&vmv, DType::F32, &dev),
    )?;
    // VarMap-built weights are Vars; rebuild them frozen as plain tensors.
    let frozen: std::collections::HashMap<String, Tensor> = vm
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let mut unet = UNet2DConditionModel::new(
        UNetConfig::sd15(),
        VarBuilder::from_tensors(frozen, DType::F32, &dev),
    )?;
    lora::attach(&mut unet, &LoraConfig::new(16, 16.0))?;
    let vars: Vec<(String, candle_core::Var)> = lora::adapters(&unet)
        .into_iter()
        .flat_map(|(p, a)| [(format!("{p}.a"), a.a), (format!("{p}.b"), a.b)])
        .collect();
    let mut opt = AdamW::new(vars, AdamWParams::default())?;
    let sched = strata_models::schedulers::NoiseSchedule::new(
        1000,
        0.00085,
        0.012,
        strata_models::schedulers::BetaSchedule::ScaledLinear,
    );
    let ctx = Tensor::randn(0f32, 1.0, (bs, 77, 768), &dev)?;
    let mut step = |i: usize| -> candle_core::Result<f32> {
        let images = Tensor::randn(0f32, 0.5, (bs, 3, res, res), &dev)?;
        let x0 = vae.encode(&images, None)?.detach();
        let noise = x0.randn_like(0.0, 1.0)?;
        let ts: Vec<usize> = (0..bs).map(|j| (i * 37 + j * 101) % 1000).collect();
        let xt = sched.add_noise(&x0, &noise, &ts)?;
        let tt = Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), bs, &dev)?;
        let pred = unet.forward(&xt, &tt, &Conditioning::Context(ctx.clone()))?;
        let loss = (pred - &noise)?.sqr()?.mean_all()?;
        let g = opt.collect_grads(&loss.backward()?)?;
        opt.step_with(&g, 1e-4)?;
        loss.to_scalar::<f32>()
    };
    step(0)?;
    dev.synchronize()?;
    let t0 = Instant::now();
    for i in 0..steps {
        step(i + 1)?;
    }
    dev.synchronize()?;
    let s = t0.elapsed().as_secs_f64();
    println!(
        "lora_train_step_r16_bs{bs}_{res}: {:.2} img/s ({:.3} s/step) on {:?}",
        (steps * bs) as f64 / s,
        s / steps as f64,
        dev
    );
    Ok(())
}
