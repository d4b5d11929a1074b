//! CPU benchmark of the diffusion core on tiny configurations: UNet forward and a 30-step DDIM
//! generation with CFG. Run: `cargo bench -p strata-models --bench diffusion`.

use candle_core::{DType, Device, Tensor};
use std::path::Path;
use std::time::Instant;
use strata_models::conditioning::Conditioning;
use strata_models::loading;
use strata_models::pipeline::{seeded_normal, FixedConditioning, GenerateOptions, Pipeline};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};

/// Runs `f` once to warm up, then `reps` times; prints and returns the median in ms.
fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) -> f64 {
    f(); // warm-up
    let mut v = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<58} median {:>9.2} ms   min {:>9.2} ms   ({reps} runs)",
        v[v.len() / 2],
        v[0]
    );
    v[v.len() / 2]
}

fn main() {
    let dev = Device::Cpu;
    println!("threads: {}", candle_core::utils::get_num_threads());
    for (name, cfg) in [("tiny", UNetConfig::tiny()), ("small", UNetConfig::small())] {
        let vm = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let unet = UNet2DConditionModel::new(cfg.clone(), vb).unwrap();
        for (b, hw) in [(2usize, 8usize), (2, 32)] {
            let x = seeded_normal(&[b, 4, hw, hw], 1, &dev).unwrap();
            let ctx = seeded_normal(&[b, 77, cfg.cross_attention_dim], 2, &dev).unwrap();
            let c = Conditioning::Context(ctx);
            let _ = time(
                &format!("UNet forward {name} B={b} latents {hw}x{hw} ctx 77"),
                10,
                || {
                    unet.forward_t(&x, 500.0, &c).unwrap();
                },
            );
            let segs = seeded_normal(&[b, 3, 77, cfg.cross_attention_dim], 3, &dev).unwrap();
            let w = Tensor::new(&[[0.5f32, 0.3, 0.2]], &dev)
                .unwrap()
                .repeat((b, 1))
                .unwrap();
            let d = Conditioning::Decoupled {
                segments: segs,
                weights: w,
            };
            let _ = time(
                &format!("UNet forward {name} B={b} latents {hw}x{hw} decoupled 3x77"),
                10,
                || {
                    unet.forward_t(&x, 500.0, &d).unwrap();
                },
            );
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion/tiny_model");
    let m = loading::load_diffusers(&dir, DType::F32, &dev, false).unwrap();
    let p = Pipeline {
        unet: &m.unet,
        vae: &m.vae,
    };
    let cond = FixedConditioning {
        cond: Conditioning::Context(seeded_normal(&[1, 77, 16], 4, &dev).unwrap()),
        uncond: Conditioning::Context(Tensor::zeros((1, 77, 16), DType::F32, &dev).unwrap()),
    };
    let mut per_image = vec![];
    for batch in [1usize, 8] {
        let opts = GenerateOptions {
            steps: 30,
            guidance_scale: 7.0,
            seed: 1,
            batch,
            width: 64,
            height: 64,
            ..Default::default()
        };
        let ms = time(
            &format!("generate 30 DDIM steps CFG 7, fixture tiny model, 64x64, batch {batch}"),
            3,
            || {
                p.generate(&cond, &opts, None, &mut |_, _| {}).unwrap();
            },
        );
        per_image.push(ms / batch as f64);
        println!("    per image: {:.2} ms", ms / batch as f64);
    }
    println!(
        "generate batch 8 vs batch 1: {:.2}x images per second",
        per_image[0] / per_image[1]
    );
}
