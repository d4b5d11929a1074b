//! Every sampler's full loop against diffusers, step by step (fixtures:
//! scripts/fixtures/diffusion_samplers.py): DDIM, DDPM, Euler ancestral, DPM-Solver++ 2M
//! (with and without Karras sigmas) and UniPC, 10 and 25 steps on SD-1.5's published
//! scheduler config, plus v-prediction, other spacings and img2img runs. The "model" is the
//! closed form 0.6·tanh(x) + x·0.2t/1000 + 0.01t/1000 in both; stochastic samplers get the
//! exact noise diffusers drew.
//!
//! Tolerance: every step's sample within 1e-5 of the reference relative to the sample's
//! scale, max|ours − ref| ≤ 1e-5 · max(1, max|ref|) (f32 arithmetic on both sides).

use candle_core::{Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use strata_models::schedulers::*;

const TOL: f32 = 1e-5;

fn fixtures() -> (HashMap<String, Tensor>, Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diffusion");
    let t = candle_core::safetensors::load(format!("{dir}/samplers.safetensors"), &Device::Cpu)
        .unwrap();
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/samplers.json")).unwrap())
            .unwrap();
    (t, j)
}

fn model(x: &Tensor, t: f64) -> Tensor {
    let a = (x.tanh().unwrap() * 0.6).unwrap();
    let b = (x * (0.2 * t / 1000.0)).unwrap();
    ((a + b).unwrap() + 0.01 * t / 1000.0).unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max|a − b| / max(1, max|b|)
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap()) / max_abs(b).max(1.0)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn sampler_named(s: &str) -> Sampler {
    s.parse().unwrap()
}

/// The SD-1.5 file config with the run's overrides merged in.
fn sd15_with(j: &Value, overrides: &Value) -> Value {
    let mut c = j["sd15_config"].clone();
    for (k, v) in overrides.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// The run's scheduler through the class named in its full diffusers config.
fn by_class(run: &Value) -> Box<dyn Scheduler> {
    let mut c = run["config"].clone();
    c["_class_name"] = run["class"].clone();
    let cfg = SchedulerConfig::from_json(&c, "fixture").unwrap();
    scheduler_from_config(&cfg, run["steps"].as_u64().unwrap() as usize).unwrap()
}

/// The run's scheduler as `strata generate --sampler X` builds it, when the run only
/// overrides fields the sampler takes from the model's file.
fn by_sampler(j: &Value, run: &Value) -> Option<Box<dyn Scheduler>> {
    let over = run["overrides"].as_object().unwrap();
    if over
        .keys()
        .any(|k| k != "prediction_type" && k != "timestep_spacing")
    {
        return None;
    }
    let cfg = SchedulerConfig::from_json(&sd15_with(j, &run["overrides"]), "sd15 fixture").unwrap();
    assert_eq!(cfg.class_name, "PNDMScheduler");
    let s = sampler_named(run["sampler"].as_str().unwrap());
    Some(
        s.build(&cfg, run["steps"].as_u64().unwrap() as usize)
            .unwrap(),
    )
}

/// Runs the loop and checks everything against the reference; returns the worst step error.
fn check_run(
    name: &str,
    run: &Value,
    t: &HashMap<String, Tensor>,
    mut s: Box<dyn Scheduler>,
) -> f32 {
    assert_eq!(s.class_name(), run["class"].as_str().unwrap(), "{name}");
    assert_eq!(
        s.timesteps(),
        floats(&run["all_timesteps"]).as_slice(),
        "{name}: timesteps"
    );
    let want_sig = floats(&run["sigmas"]);
    assert_eq!(s.sigmas().len(), want_sig.len(), "{name}: sigmas");
    for (a, b) in s.sigmas().iter().zip(&want_sig) {
        assert!(
            (a - b).abs() <= 1e-6 * b.max(1.0),
            "{name}: sigma {a} vs {b}"
        );
    }
    let ins = run["init_noise_sigma"].as_f64().unwrap();
    assert!(
        (s.init_noise_sigma() - ins).abs() <= 1e-6 * ins,
        "{name}: init_noise_sigma {} vs {ins}",
        s.init_noise_sigma()
    );
    let noise0 = &t[&format!("{name}/noise0")];
    let (mut x, ts) = match run["strength"].as_f64() {
        None => (
            (noise0 * s.init_noise_sigma()).unwrap(),
            s.timesteps().to_vec(),
        ),
        Some(strength) => {
            let begin = s.img2img_begin(strength).unwrap();
            assert_eq!(begin as u64, run["begin_index"].as_u64().unwrap(), "{name}");
            let x0 = &t[&format!("{name}/x0")];
            let x = s.add_noise_at_step(x0, noise0, begin).unwrap();
            (x, s.timesteps()[begin..].to_vec())
        }
    };
    assert_eq!(ts, floats(&run["timesteps"]), "{name}: loop timesteps");
    let e0 = rel_err(&x, &t[&format!("{name}/init")]);
    assert!(e0 < TOL, "{name}: initial latents off by {e0}");
    let samples = &t[&format!("{name}/samples")];
    let noises = t.get(&format!("{name}/noises")).cloned();
    let mut k = 0usize;
    let mut src = |shape: &[usize]| -> candle_core::Result<Tensor> {
        let n = noises
            .as_ref()
            .expect("the reference drew no noise for this sampler")
            .get(k)?;
        assert_eq!(n.dims(), shape);
        k += 1;
        Ok(n)
    };
    let mut worst = 0f32;
    for (i, &step) in ts.iter().enumerate() {
        let xin = s.scale_model_input(&x, step).unwrap();
        let eps = model(&xin, step);
        x = s.step(&eps, step, &x, &mut src).unwrap();
        let e = rel_err(&x, &samples.get(i).unwrap());
        assert!(
            e < TOL,
            "{name}: step {i} (t = {step}) off by {e} (relative)"
        );
        worst = worst.max(e);
    }
    if let Some(n) = t.get(&format!("{name}/noises")) {
        assert_eq!(k, n.dim(0).unwrap(), "{name}: one noise draw per step");
    }
    worst
}

#[test]
fn every_sampler_matches_diffusers_step_by_step() {
    let (t, j) = fixtures();
    let runs = j["runs"].as_object().unwrap();
    assert!(runs.len() >= 23);
    let mut by_sampler_count = 0;
    let mut report = vec![];
    for (name, run) in runs {
        let w = check_run(name, run, &t, by_class(run));
        report.push(format!("{name}: {w:.2e}"));
        if let Some(s) = by_sampler(&j, run) {
            check_run(name, run, &t, s);
            by_sampler_count += 1;
        }
    }
    // all six samplers at 10 and 25 steps, plus v-prediction, spacing and img2img runs
    assert!(by_sampler_count >= 12 + 4 + 4, "{by_sampler_count}");
    eprintln!(
        "worst relative step error per run:\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn set_timesteps_clears_multistep_history() {
    let (t, j) = fixtures();
    for name in ["dpmpp-2m_10", "unipc_10", "dpmpp-2m-karras_10"] {
        let run = &j["runs"][name];
        let mut s = by_class(run);
        let x0 = (&t[&format!("{name}/noise0")] * s.init_noise_sigma()).unwrap();
        let go = |s: &mut Box<dyn Scheduler>| {
            let mut x = x0.clone();
            for step in s.timesteps().to_vec() {
                let e = model(&s.scale_model_input(&x, step).unwrap(), step);
                x = s.step(&e, step, &x, &mut NoNoise).unwrap();
            }
            x
        };
        let a = go(&mut s);
        s.set_timesteps(10).unwrap();
        let b = go(&mut s);
        assert_eq!(max_abs(&(a - b).unwrap()), 0.0, "{name}");
    }
}

#[test]
fn stochastic_samplers_need_a_noise_source() {
    let cfg = SchedulerConfig::sd15();
    for s in [Sampler::Ddpm, Sampler::EulerAncestral] {
        let mut sch = s.build(&cfg, 10).unwrap();
        let x = Tensor::zeros((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let t = sch.timesteps()[0];
        let e = sch.step(&x, t, &x, &mut NoNoise).unwrap_err().to_string();
        assert!(e.contains("noise"), "{e}");
    }
}

#[test]
fn ddim_default_is_the_sd15_30_step_schedule() {
    // the DDIM fixture of diffusion_schedulers.rs: DDIMScheduler(SD-1.5) with 30 steps
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diffusion");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/schedulers.json")).unwrap())
            .unwrap();
    let s = Sampler::default()
        .build(&SchedulerConfig::default(), 30)
        .unwrap();
    assert_eq!(s.class_name(), "DDIMScheduler");
    assert_eq!(s.timesteps(), floats(&j["ddim30_timesteps"]).as_slice());
}

#[test]
fn sd15_file_config_is_read_and_unknown_classes_are_refused() {
    let (_, j) = fixtures();
    let cfg = SchedulerConfig::from_json(&j["sd15_config"], "sd15").unwrap();
    let want = SchedulerConfig {
        class_name: "PNDMScheduler".into(),
        ..SchedulerConfig::sd15()
    };
    assert_eq!(cfg, want);

    let mut bad = j["sd15_config"].clone();
    bad["_class_name"] = "FlowMatchEulerDiscreteScheduler".into();
    let e = SchedulerConfig::from_json(&bad, "x/scheduler_config.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x/scheduler_config.json") && e.contains("_class_name"),
        "{e}"
    );
    for c in SUPPORTED_CLASSES {
        assert!(e.contains(c), "{e} should list {c}");
    }
    // a schedule-only class has no sampler of its own
    let e = scheduler_from_config(&cfg, 10).err().unwrap().to_string();
    assert!(
        e.contains("PNDMScheduler") && e.contains("DDIMScheduler"),
        "{e}"
    );

    let mut bad = j["sd15_config"].clone();
    bad["beta_schedule"] = "sigmoid".into();
    let e = SchedulerConfig::from_json(&bad, "f.json").unwrap_err();
    assert_eq!(e.field, "beta_schedule");
    let mut bad = j["sd15_config"].clone();
    bad["steps_offset"] = (-1).into();
    assert_eq!(
        SchedulerConfig::from_json(&bad, "f").unwrap_err().field,
        "steps_offset"
    );
    let mut bad = j["sd15_config"].clone();
    bad["thresholding"] = true.into();
    assert_eq!(
        SchedulerConfig::from_json(&bad, "f").unwrap_err().field,
        "thresholding"
    );
}

#[test]
fn model_folder_config_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_model_scheduler_config(dir.path()).unwrap(), None);
    ensure_scheduler_config(dir.path()).unwrap();
    let back = read_model_scheduler_config(dir.path()).unwrap().unwrap();
    assert_eq!(back, SchedulerConfig::sd15());
    // an existing config is kept
    let mut v = SchedulerConfig::sd15();
    v.prediction_type = PredictionType::VPrediction;
    write_scheduler_config(dir.path(), &v).unwrap();
    ensure_scheduler_config(dir.path()).unwrap();
    assert_eq!(read_model_scheduler_config(dir.path()).unwrap().unwrap(), v);
    // a broken file names itself
    std::fs::write(dir.path().join("scheduler/scheduler_config.json"), "{").unwrap();
    let e = read_model_scheduler_config(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("scheduler_config.json") && e.contains("JSON"),
        "{e}"
    );
}

#[test]
fn sampler_names_round_trip() {
    for s in Sampler::ALL {
        assert_eq!(s.name().parse::<Sampler>().unwrap(), s);
    }
    let e = "euler".parse::<Sampler>().unwrap_err();
    assert!(e.contains("euler-a") && e.contains("unipc"), "{e}");
}
