//! The pipeline with every sampler (tiny fixture model): seeded determinism, one UNet call
//! per step, img2img by strength, the noise schedule of the options honoured, and a given
//! `Box<dyn Scheduler>` used as is.

use candle_core::{DType, Device, Tensor};
use std::path::Path;
use strata_models::conditioning::Conditioning;
use strata_models::loading;
use strata_models::pipeline::*;
use strata_models::schedulers::{PredictionType, Sampler, Scheduler, SchedulerConfig};

fn setup() -> loading::DiffusionModels {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion/tiny_model");
    loading::load_diffusers(&dir, DType::F32, &Device::Cpu, false).unwrap()
}

fn cond() -> FixedConditioning {
    let c = seeded_normal(&[1, 5, 16], 1, &Device::Cpu).unwrap();
    let u = Tensor::zeros((1, 5, 16), DType::F32, &Device::Cpu).unwrap();
    FixedConditioning {
        cond: Conditioning::Context(c),
        uncond: Conditioning::Context(u),
    }
}

fn opts(sampler: Sampler, seed: u64) -> GenerateOptions {
    GenerateOptions {
        steps: 5,
        guidance_scale: 5.0,
        seed,
        batch: 1,
        width: 16,
        height: 16,
        sampler,
        ..Default::default()
    }
}

#[test]
fn every_sampler_is_seeded_and_distinct() {
    let m = setup();
    let p = Pipeline {
        unet: &m.unet,
        vae: &m.vae,
    };
    let mut images = vec![];
    for s in Sampler::ALL {
        let mut steps = 0;
        let a = p
            .generate(&cond(), &opts(s, 3), None, &mut |_, n| steps = n)
            .unwrap();
        assert_eq!(steps, 5, "{s}");
        let b = p
            .generate(&cond(), &opts(s, 3), None, &mut |_, _| {})
            .unwrap();
        let (a, b) = (to_rgb8(&a).unwrap(), to_rgb8(&b).unwrap());
        assert_eq!(a, b, "{s}: same seed, same bytes");
        images.push((s, a));
    }
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            assert_ne!(
                images[i].1, images[j].1,
                "{} vs {}",
                images[i].0, images[j].0
            );
        }
    }
    // the per-step noise of the stochastic samplers follows the seed too
    for s in [Sampler::Ddpm, Sampler::EulerAncestral] {
        let a = p
            .generate(&cond(), &opts(s, 3), None, &mut |_, _| {})
            .unwrap();
        let b = p
            .generate(&cond(), &opts(s, 4), None, &mut |_, _| {})
            .unwrap();
        assert_ne!(to_rgb8(&a).unwrap(), to_rgb8(&b).unwrap(), "{s}");
    }
}

#[test]
fn img2img_with_each_sampler_runs_the_strength_share() {
    let m = setup();
    let p = Pipeline {
        unet: &m.unet,
        vae: &m.vae,
    };
    let init = (seeded_normal(&[1, 3, 16, 16], 3, &Device::Cpu).unwrap() * 0.3).unwrap();
    for s in Sampler::ALL {
        let mut o = opts(s, 1);
        o.steps = 10;
        o.strength = 0.6;
        let mut n_steps = 0;
        let out = p
            .generate(&cond(), &o, Some(&init), &mut |_, n| n_steps = n)
            .unwrap();
        assert_eq!(n_steps, 6, "{s}");
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{s}");
        o.strength = 0.0;
        assert!(p
            .generate(&cond(), &o, Some(&init), &mut |_, _| {})
            .is_err());
    }
}

#[test]
fn the_noise_schedule_of_the_options_is_used() {
    let m = setup();
    let p = Pipeline {
        unet: &m.unet,
        vae: &m.vae,
    };
    let base = opts(Sampler::DpmPp2M, 2);
    let mut v = base.clone();
    v.scheduler.prediction_type = PredictionType::VPrediction;
    let a = p.generate(&cond(), &base, None, &mut |_, _| {}).unwrap();
    let b = p.generate(&cond(), &v, None, &mut |_, _| {}).unwrap();
    assert_ne!(to_rgb8(&a).unwrap(), to_rgb8(&b).unwrap());

    // generate_with takes the scheduler as given: the same one as generate builds gives
    // the same bytes
    let sched: Box<dyn Scheduler> = Sampler::DpmPp2M
        .build(&SchedulerConfig::sd15(), base.steps)
        .unwrap();
    let c = p
        .generate_with(&cond(), &base, sched, None, &mut |_, _| {})
        .unwrap();
    assert_eq!(to_rgb8(&a).unwrap(), to_rgb8(&c).unwrap());
}
