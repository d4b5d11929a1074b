//! Inference speed of our diffusion core, the counterpart of the inference rows of
//! `shared/gpu/diffusers_baseline.py` (SD-1.5 architecture, random weights, same shapes):
//!
//! - `unet_forward_64x64`: one UNet forward, batch 1, 64×64 latent, 77-token context, f32 and
//!   f16 (median of 5 after 2 warm-ups);
//! - `generate_30step_cfg7_512`: CLIP text encoder + 30 DDIM steps with CFG 7 + VAE decode,
//!   512², batch 1 and 8 (median of 3 after 1 warm-up), f16.
//!
//! Prints one JSON line per measurement (the same keys as the baseline). Run on the GPU
//! machine through `scripts/gpu/run-checks.sh`; on the CPU with `--tiny` (tiny configurations,
//! 64² images, f32 only) to check that it works:
//!
//!     cargo run --release -p strata-models --example gpu_bench -- --tiny
//!     cargo run --release -p strata-models --features cuda --example gpu_bench

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use strata_models::clip::{ClipTextConfig, ClipTextTransformer};
use strata_models::conditioning::Conditioning;
use strata_models::pipeline::{FixedConditioning, GenerateOptions, Pipeline};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};
use strata_models::vae::{AutoencoderKL, VaeConfig};

struct Setup {
    unet: UNetConfig,
    vae: VaeConfig,
    clip: ClipTextConfig,
    /// image side in pixels
    size: usize,
    dtypes: Vec<DType>,
}

fn device_name(dev: &Device) -> String {
    match dev {
        Device::Cpu => format!("cpu ({} threads)", candle_core::utils::get_num_threads()),
        d => format!("{:?}", d.location()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

/// Frozen random weights (plain tensors, as loaded from a file) for a model built by `build`.
fn frozen_vb<'a, T>(
    dtype: DType,
    dev: &'a Device,
    build: impl Fn(VarBuilder) -> Result<T>,
) -> Result<VarBuilder<'a>> {
    let vm = VarMap::new();
    build(VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    let map = vm
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().to_dtype(dtype)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    Ok(VarBuilder::from_tensors(map, dtype, dev))
}

fn main() -> Result<()> {
    let tiny = std::env::args().any(|a| a == "--tiny");
    let dev = if tiny {
        Device::Cpu
    } else {
        Device::cuda_if_available(0)?
    };
    let s = if tiny {
        Setup {
            unet: UNetConfig::tiny(),
            vae: VaeConfig::tiny_x8(),
            clip: ClipTextConfig::tiny(),
            size: 64,
            dtypes: vec![DType::F32],
        }
    } else {
        Setup {
            unet: UNetConfig::sd15(),
            vae: VaeConfig::sd15(),
            clip: ClipTextConfig::sd15(),
            size: 512,
            dtypes: vec![DType::F32, DType::F16],
        }
    };
    let name = device_name(&dev);
    let report = |v: serde_json::Value| {
        let mut v = v;
        v["device"] = serde_json::Value::String(name.clone());
        v["impl"] = serde_json::Value::String("strata".into());
        println!("{v}");
    };
    let lat = s.size / s.vae.downscale();
    let ctx_dim = s.unet.cross_attention_dim;

    // UNet forward, batch 1
    for &dtype in &s.dtypes {
        let vb = frozen_vb(dtype, &dev, |vb| {
            UNet2DConditionModel::new(s.unet.clone(), vb)
        })?;
        let unet = UNet2DConditionModel::new(s.unet.clone(), vb)?;
        let x = Tensor::randn(0f32, 1.0, (1, 4, lat, lat), &dev)?.to_dtype(dtype)?;
        let c = Conditioning::Context(
            Tensor::randn(0f32, 1.0, (1, 77, ctx_dim), &dev)?.to_dtype(dtype)?,
        );
        let mut ts = vec![];
        for r in 0..7 {
            dev.synchronize()?;
            let t0 = Instant::now();
            let y = unet.forward_t(&x, 500.0, &c)?;
            y.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
            if r >= 2 {
                ts.push(t0.elapsed().as_secs_f64());
            }
        }
        report(serde_json::json!({
            "bench": format!("unet_forward_{lat}x{lat}"),
            "dtype": format!("{dtype:?}").to_lowercase(),
            "batch": 1,
            "median_s": median(ts),
        }));
    }

    // text encoder + 30 DDIM steps with CFG 7 + VAE decode, in the last (half on GPU) dtype
    let dtype = *s.dtypes.last().expect("one dtype");
    let unet = UNet2DConditionModel::new(
        s.unet.clone(),
        frozen_vb(dtype, &dev, |vb| {
            UNet2DConditionModel::new(s.unet.clone(), vb)
        })?,
    )?;
    let vae = AutoencoderKL::new(
        s.vae.clone(),
        frozen_vb(dtype, &dev, |vb| AutoencoderKL::new(s.vae.clone(), vb))?,
    )?;
    let te = ClipTextTransformer::new(
        &s.clip,
        frozen_vb(dtype, &dev, |vb| {
            ClipTextTransformer::new(&s.clip, vb.pp("text_model"))
        })?
        .pp("text_model"),
    )?;
    let p = Pipeline {
        unet: &unet,
        vae: &vae,
    };
    for batch in [1usize, 8] {
        let ids: Vec<u32> = (0..77u32)
            .map(|i| (i * 7919) % s.clip.vocab_size as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (1, 77), &dev)?;
        let opts = GenerateOptions {
            steps: 30,
            guidance_scale: 7.0,
            seed: 1,
            batch,
            width: s.size,
            height: s.size,
            ..Default::default()
        };
        let mut ts = vec![];
        for r in 0..4 {
            dev.synchronize()?;
            let t0 = Instant::now();
            let cond = te.forward(&ids)?.to_dtype(dtype)?;
            let uncond = cond.zeros_like()?;
            let fc = FixedConditioning {
                cond: Conditioning::Context(cond),
                uncond: Conditioning::Context(uncond),
            };
            let img = p.generate(&fc, &opts, None, &mut |_, _| {})?;
            img.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
            if r >= 1 {
                ts.push(t0.elapsed().as_secs_f64());
            }
        }
        let m = median(ts);
        report(serde_json::json!({
            "bench": format!("generate_30step_cfg7_{}", s.size),
            "dtype": format!("{dtype:?}").to_lowercase(),
            "batch": batch,
            "segments": 1,
            "median_s": m,
            "s_per_image": m / batch as f64,
        }));
    }
    Ok(())
}
