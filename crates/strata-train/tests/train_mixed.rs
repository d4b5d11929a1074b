//! Mixed-precision training (`mixed_precision = "bf16" | "f16"`): the frozen UNet runs in half
//! precision while the trainable tensors and the AdamW moments stay f32; f16 adds dynamic loss
//! scaling whose state is checkpointed.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use strata_train::config::MixedPrecision;
use strata_train::{Method, TrainConfig, Trainer};

#[allow(dead_code)]
mod common;
use common::{eval_loss, trainable};

fn setup(root: &Path) -> (PathBuf, PathBuf) {
    common::tiny_model_and_scenes(root, 6)
}

fn cfg(model: &Path, data: &Path, out: &Path, mp: MixedPrecision) -> TrainConfig {
    TrainConfig {
        method: Method::Lora,
        model: model.into(),
        data: data.into(),
        out: out.into(),
        resolution: 16,
        batch_size: 2,
        epochs: 1,
        lr: 1e-2,
        lora_rank: 2,
        lora_alpha: 2.0,
        checkpoint_every: 2,
        caption_dropout: 0.0,
        mixed_precision: mp,
        ..TrainConfig::default()
    }
}

fn all_f32(t: &Trainer) {
    for (n, v) in t.opt.vars() {
        assert_eq!(v.dtype(), DType::F32, "{n} is not an f32 master weight");
    }
    for (n, m) in t.opt.state_tensors() {
        if n != strata_train::optim::LOSS_SCALER_KEY {
            assert_eq!(m.dtype(), DType::F32, "moment {n}");
        }
    }
}

#[test]
fn bf16_lora_training_lowers_the_loss_with_f32_master_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let mut c = cfg(&model, &data, &tmp.path().join("run"), MixedPrecision::Bf16);
    c.max_steps = Some(40);
    let mut t = Trainer::new(c, &mut |_| {}).unwrap();
    assert_eq!(t.unet.dtype(), DType::BF16, "frozen UNet weights in bf16");
    all_f32(&t);
    // gradients reach the f32 master weights as f32
    let (g, _) = t.gradients(0).unwrap();
    assert!(g.iter().all(|g| g.dtype() == DType::F32));
    let before = eval_loss(&t);
    for _ in 0..40 {
        t.train_step("-").unwrap();
    }
    let after = eval_loss(&t);
    assert!(
        after < 0.9 * before,
        "bf16 training did not lower the loss: {before} → {after}"
    );
    all_f32(&t);
    assert!(t.opt.scaler.is_none(), "bf16 needs no loss scaling");
}

#[test]
fn f16_loss_scaling_skips_overflowing_steps_and_halves_the_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let mut c = cfg(&model, &data, &tmp.path().join("run"), MixedPrecision::F16);
    c.max_steps = Some(30);
    let mut t = Trainer::new(c, &mut |_| {}).unwrap();
    assert_eq!(t.unet.dtype(), DType::F16);
    all_f32(&t);
    let sc = t.opt.scaler.expect("f16 uses loss scaling");
    assert_eq!(sc.scale, 65536.0);
    // an absurd scale overflows the f16 backward: the step is skipped, nothing changes but
    // the scale (halved) and the step count
    t.opt.scaler.as_mut().unwrap().scale = 2f64.powi(100);
    let w0: Vec<Tensor> = t
        .opt
        .vars()
        .iter()
        .map(|(_, v)| v.as_tensor().copy().unwrap())
        .collect();
    let r = t.train_step("-").unwrap();
    assert_eq!(r.step, 1);
    assert_eq!(t.skipped_steps, 1);
    assert_eq!(t.opt.t, 0, "no optimiser update on a skipped step");
    assert_eq!(t.opt.scaler.unwrap().scale, 2f64.powi(99));
    for ((n, v), w) in t.opt.vars().iter().zip(&w0) {
        let d = (v.as_tensor() - w)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(
            d.to_scalar::<f32>().unwrap(),
            0.0,
            "{n} changed on a skipped step"
        );
    }
    // back to a sane scale: steps apply and count towards growth; the loss goes down
    t.opt.scaler.as_mut().unwrap().scale = 1024.0;
    t.opt.scaler.as_mut().unwrap().growth_interval = 5;
    let before = eval_loss(&t);
    for _ in 0..29 {
        t.train_step("-").unwrap();
    }
    let after = eval_loss(&t);
    let s = t.opt.scaler.unwrap();
    assert!(s.scale > 1024.0, "the scale grows after good steps: {s:?}");
    assert!(
        after < 0.9 * before,
        "f16 training did not lower the loss: {before} → {after}"
    );
}

fn resume_is_bit_exact(mp: MixedPrecision) {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let mut c = cfg(&model, &data, &tmp.path().join("a"), mp);
    c.max_steps = Some(5);
    let noop = &mut |_: &strata_train::StepReport| {};
    let quiet = &mut |_: &str| {};
    strata_train::train(
        c.clone(),
        strata_train::RunOptions {
            resume: false,
            on_status: quiet,
            on_step: noop,
        },
    )
    .unwrap();
    let run_b = tmp.path().join("b");
    let mut cb = c.clone();
    cb.out = run_b.clone();
    std::fs::create_dir_all(&run_b).unwrap();
    std::fs::write(run_b.join("config.toml"), cb.to_toml()).unwrap();
    let mut t = Trainer::new(cb, &mut |_| {}).unwrap();
    for _ in 0..3 {
        t.train_step("none").unwrap();
    }
    let ck = strata_train::run::save_checkpoint(&t, &run_b).unwrap();
    if mp == MixedPrecision::F16 {
        let (o, _) =
            strata_models::safetensors_io::load(&ck.join("optimizer.safetensors"), &Device::Cpu)
                .unwrap();
        let s = o[strata_train::optim::LOSS_SCALER_KEY]
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(
            s,
            vec![65536.0, 3.0],
            "loss scale and good steps are checkpointed"
        );
    }
    drop(t);
    let cfg_b = strata_train::run::read_run_config(&run_b).unwrap();
    assert_eq!(cfg_b.mixed_precision, mp);
    // the restored trainer continues with the checkpointed scaler state
    let mut t = Trainer::new(cfg_b.clone(), &mut |_| {}).unwrap();
    t.load_checkpoint(&ck).unwrap();
    if mp == MixedPrecision::F16 {
        assert_eq!(t.opt.scaler.unwrap().good_steps, 3);
    }
    drop(t);
    strata_train::train(
        cfg_b,
        strata_train::RunOptions {
            resume: true,
            on_status: quiet,
            on_step: noop,
        },
    )
    .unwrap();
    let (wa, wb) = (trainable(&tmp.path().join("a")), trainable(&run_b));
    assert_eq!(wa.len(), wb.len());
    for (k, ta) in &wa {
        let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = wb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k} differs after resume ({mp:?})"
        );
    }
}

#[test]
fn bf16_resume_is_bit_exact() {
    resume_is_bit_exact(MixedPrecision::Bf16)
}

#[test]
fn f16_resume_is_bit_exact_with_the_loss_scaler_state() {
    resume_is_bit_exact(MixedPrecision::F16)
}

#[test]
fn mixed_precision_parses_from_toml_and_rejects_unknown_values() {
    let p = Path::new("x.toml");
    let c = TrainConfig::from_toml_str("mixed_precision = \"bf16\"", p).unwrap();
    assert_eq!(c.mixed_precision, MixedPrecision::Bf16);
    let e = TrainConfig::from_toml_str("mixed_precision = \"fp8\"", p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mixed_precision") || e.contains("fp8"), "{e}");
    assert_eq!("f16".parse::<MixedPrecision>(), Ok(MixedPrecision::F16));
    assert!("half"
        .parse::<MixedPrecision>()
        .unwrap_err()
        .contains("bf16"));
}

#[test]
fn full_and_textual_inversion_train_in_bf16() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    for method in [Method::Full, Method::TextualInversion] {
        let mut c = cfg(&model, &data, &tmp.path().join("run"), MixedPrecision::Bf16);
        c.method = method;
        c.max_steps = Some(2);
        let mut t = Trainer::new(c, &mut |_| {}).unwrap();
        all_f32(&t);
        for _ in 0..2 {
            let r = t.train_step("-").unwrap();
            assert!(r.loss.is_finite(), "{method:?}: loss {}", r.loss);
        }
        assert_eq!(t.opt.t, 2, "{method:?}: both steps applied");
    }
}
