//! Training core on tiny random models written in the diffusers layout and loaded through
//! `strata_models::loading`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use strata_train::optim::{lr_at, AdamW, AdamWParams, LrSchedule};
use strata_train::{Captions, FusionKind, Method, TrainConfig, Trainer};

#[allow(dead_code)]
mod common;
use common::{eval_loss, trainable};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn adamw_and_cosine_schedule_match_pytorch() {
    let f = candle_core::safetensors::load(fixture("adamw.safetensors"), &Device::Cpu).unwrap();
    let names = ["a", "b", "c"];
    let vars: Vec<(String, Var)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Var::from_tensor(&f[&format!("init.{n}")]).unwrap(),
            )
        })
        .collect();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        },
    )
    .unwrap();
    let lrs = f["lrs"].to_vec1::<f64>().unwrap();
    for (s, want_lr) in lrs.iter().enumerate() {
        let lr = lr_at(LrSchedule::Cosine, 3e-2, s as u64, 2, 6);
        assert!((lr - want_lr).abs() < 1e-12, "lr at {s}: {lr} vs {want_lr}");
        let grads: Vec<Tensor> = names
            .iter()
            .map(|n| f[&format!("grad.{s}.{n}")].clone())
            .collect();
        opt.step_with(&grads, lr).unwrap();
        for (n, v) in &vars {
            let want = &f[&format!("param.{s}.{n}")];
            let d = (v.as_tensor() - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 2e-6, "step {s} param {n}: max |Δ| = {d}");
        }
    }
    // Parameters moved (the test would pass trivially otherwise).
    let moved = (vars[0].1.as_tensor() - &f["init.a"])
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-3);
    assert_eq!(lr_at(LrSchedule::Constant, 1e-4, 5, 0, 10), 1e-4);
}

/// A tiny model folder and a synthetic dataset (6 images, 2 of them test split).
pub fn setup(root: &Path) -> (PathBuf, PathBuf) {
    common::tiny_model_and_split_scenes(root)
}

pub fn tiny_cfg(model: &Path, data: &Path, out: &Path) -> TrainConfig {
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
        ..TrainConfig::default()
    }
}

fn quiet() -> impl FnMut(&str) {
    |_| {}
}

#[test]
fn lora_training_lowers_the_loss_and_only_trainable_tensors_get_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let mut cfg = tiny_cfg(&model, &data, &tmp.path().join("run"));
    cfg.fusion = FusionKind::Learned;
    cfg.caption_dropout = 0.0;
    cfg.min_snr_gamma = Some(5.0);
    cfg.max_steps = Some(40);
    let mut t = Trainer::new(cfg, &mut quiet()).unwrap();
    // train split only: synth marks 8:2 splits
    let recs = strata_caption::dataset::read_dataset(&data).unwrap();
    let n_train = recs
        .iter()
        .filter(|r| r.split != Some(strata_caption::dataset::Split::Test))
        .count();
    assert_eq!(t.data.items.len(), n_train);
    assert!(
        n_train < recs.len(),
        "the synthetic dataset has a test split"
    );
    assert_eq!(t.data.images.len(), n_train);
    assert_eq!(t.batch_latents(0).unwrap().1.dims(), &[2, 4, 8, 8]);

    // the LoRA A/B and the learned fusion receive (non-zero) gradients; every other tensor of
    // the model is a frozen plain tensor (candle still computes its gradient — see docs/train.md)
    let loss = t.micro_loss(0).unwrap();
    let store = loss.backward().unwrap();
    let got: HashSet<_> = store.get_ids().copied().collect();
    for (n, v) in t.opt.vars() {
        assert!(got.contains(&v.as_tensor().id()), "{n} got no gradient");
        assert!(v.as_tensor().is_variable());
    }
    let grads = t.opt.collect_grads(&store).unwrap();
    let nonzero = grads
        .iter()
        .filter(|g| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        })
        .count();
    // B starts at zero, so A's gradient is zero at step 0; B's and the fusion's are not
    assert!(
        nonzero >= grads.len() / 2,
        "{nonzero} of {} gradients are non-zero",
        grads.len()
    );
    let mut frozen_vars = 0;
    strata_models::lora::VisitLinears::visit_linears(&t.unet, &mut |l| {
        frozen_vars += l.weight().is_variable() as usize
    });
    assert_eq!(frozen_vars, 0);
    let _: HashSet<()> = HashSet::new();
    let n_lora = t
        .opt
        .vars()
        .iter()
        .filter(|(n, _)| n.starts_with("lora."))
        .count();
    let n_fusion = t
        .opt
        .vars()
        .iter()
        .filter(|(n, _)| n.starts_with("fusion."))
        .count();
    assert_eq!(n_fusion, 4);
    assert_eq!(
        n_lora,
        2 * t
            .unet
            .projection_paths()
            .iter()
            .filter(|p| p.contains(".attn"))
            .count()
    );
    let before_fusion = t.fusion.as_ref().unwrap().schedule.weights(500.0).unwrap();

    let before = eval_loss(&t);
    for _ in 0..40 {
        t.train_step("none").unwrap();
    }
    let after = eval_loss(&t);
    assert!(after < before * 0.97, "loss {before} → {after}");
    let after_fusion = t.fusion.as_ref().unwrap().schedule.weights(500.0).unwrap();
    assert_ne!(before_fusion, after_fusion, "the learned fusion trained");
    // frozen weights did not move: without its adapters the UNet equals the base model
    let mut u = t.unet.clone();
    strata_models::lora::VisitLinears::visit_linears_mut(&mut u, &mut |l| l.lora = None);
    let base = strata_models::loading::load_diffusers(&model, DType::F32, &Device::Cpu, false)
        .unwrap()
        .unet;
    let x = strata_models::pipeline::seeded_normal(&[1, 4, 8, 8], 1, &Device::Cpu).unwrap();
    let cond = strata_models::conditioning::Conditioning::Context(
        strata_models::pipeline::seeded_normal(&[1, 77, 32], 2, &Device::Cpu).unwrap(),
    );
    let ts = Tensor::new(&[200f32], &Device::Cpu).unwrap();
    let d = (u.forward(&x, &ts, &cond).unwrap() - base.forward(&x, &ts, &cond).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
}

#[test]
fn kohya_export_import_gives_identical_outputs_and_peft_layout_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let mut cfg = tiny_cfg(&model, &data, &tmp.path().join("run"));
    cfg.captions = Captions::Flat;
    let mut t = Trainer::new(cfg, &mut quiet()).unwrap();
    for _ in 0..3 {
        t.train_step("none").unwrap();
    }
    let file = tmp.path().join("lora.safetensors");
    let meta = std::collections::HashMap::from([("ss_network_dim".to_string(), "2".to_string())]);
    let n = strata_models::lora_file::export_kohya(&t.unet, &file, meta).unwrap();
    assert!(n > 0);
    let (tensors, md) = strata_models::safetensors_io::load(&file, &Device::Cpu).unwrap();
    assert_eq!(md["ss_network_dim"], "2");
    assert!(tensors.keys().any(|k| k == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"), "{:?}", tensors.keys().take(3).collect::<Vec<_>>());
    assert!(tensors.keys().all(|k| k.starts_with("lora_unet_")
        && (k.ends_with(".lora_down.weight")
            || k.ends_with(".lora_up.weight")
            || k.ends_with(".alpha"))));

    let x = strata_models::pipeline::seeded_normal(&[1, 4, 8, 8], 1, &Device::Cpu).unwrap();
    let ctx = strata_models::pipeline::seeded_normal(&[1, 77, 32], 2, &Device::Cpu).unwrap();
    let cond = strata_models::conditioning::Conditioning::Context(ctx);
    let ts = Tensor::new(&[321f32], &Device::Cpu).unwrap();
    let want = t.unet.forward(&x, &ts, &cond).unwrap();

    let fresh = || {
        strata_models::loading::load_diffusers(&model, DType::F32, &Device::Cpu, false)
            .unwrap()
            .unet
    };
    let base = fresh().forward(&x, &ts, &cond).unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(diff(&want, &base) > 1e-5, "training changed the model");

    let mut u = fresh();
    let imp = strata_models::lora_file::import(&u, &file, &Device::Cpu).unwrap();
    assert_eq!(imp.layout, strata_models::lora_file::LoraLayout::Kohya);
    strata_models::lora_file::install(&mut u, &imp, 1.0).unwrap();
    assert_eq!(
        diff(&u.forward(&x, &ts, &cond).unwrap(), &want),
        0.0,
        "kohya round trip is exact"
    );

    let peft = tmp.path().join("peft.safetensors");
    strata_models::lora_file::export_peft(&t.unet, &peft).unwrap();
    let mut u = fresh();
    let imp = strata_models::lora_file::import(&u, &peft, &Device::Cpu).unwrap();
    assert_eq!(imp.layout, strata_models::lora_file::LoraLayout::Peft);
    strata_models::lora_file::install(&mut u, &imp, 1.0).unwrap();
    assert!(diff(&u.forward(&x, &ts, &cond).unwrap(), &want) < 1e-5);

    // a key that names no projection is reported, not dropped
    let bad = tmp.path().join("bad.safetensors");
    let mut m = std::collections::HashMap::new();
    m.insert(
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight".to_string(),
        Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    strata_models::safetensors_io::save(&bad, &m, None).unwrap();
    let e = strata_models::lora_file::import(&fresh(), &bad, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("lora_te_text_model") && e.contains("bad.safetensors"),
        "{e}"
    );
}

#[test]
fn resume_is_bit_exact_and_run_folder_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let mut cfg = tiny_cfg(&model, &data, &tmp.path().join("a"));
    cfg.max_steps = Some(6);
    cfg.gradient_accumulation = 2;
    cfg.fusion = FusionKind::Learned;
    cfg.fusion_mode = strata_models::fusion::FusionMode::Decoupled;
    let noop = &mut |_: &strata_train::StepReport| {};
    let a = strata_train::train(
        cfg.clone(),
        strata_train::RunOptions {
            resume: false,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    assert_eq!(a.steps, 6);
    let run_a = tmp.path().join("a");
    assert!(run_a.join("lora.safetensors").is_file() && run_a.join("config.toml").is_file());
    let log = std::fs::read_to_string(run_a.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6);
    // interrupted run: 3 steps and a checkpoint, then resumed from the folder
    let run_b = tmp.path().join("b");
    let mut cb = cfg.clone();
    cb.out = run_b.clone();
    std::fs::create_dir_all(&run_b).unwrap();
    std::fs::write(run_b.join("config.toml"), cb.to_toml()).unwrap();
    let mut t = Trainer::new(cb, &mut quiet()).unwrap();
    for _ in 0..3 {
        t.train_step("none").unwrap();
    }
    strata_train::run::save_checkpoint(&t, &run_b).unwrap();
    drop(t);
    let cfg_b = strata_train::run::read_run_config(&run_b).unwrap();
    let b = strata_train::train(
        cfg_b,
        strata_train::RunOptions {
            resume: true,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    assert_eq!(b.steps, 6);
    let (wa, wb) = (trainable(&run_a), trainable(&run_b));
    assert_eq!(wa.len(), wb.len());
    for (k, ta) in &wa {
        let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = wb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k} differs after resume"
        );
    }
    assert_eq!(
        std::fs::read(run_a.join("lora.safetensors")).unwrap(),
        std::fs::read(run_b.join("lora.safetensors")).unwrap()
    );
    // starting again in a folder that holds a run is refused
    let e = strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume: false,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn full_dreambooth_and_textual_inversion_run_and_their_outputs_load_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let noop = &mut |_: &strata_train::StepReport| {};
    // full fine-tune → a diffusers folder that loads and differs from the base
    let mut cfg = tiny_cfg(&model, &data, &tmp.path().join("full"));
    cfg.method = Method::Full;
    cfg.max_steps = Some(2);
    cfg.lr = 1e-3;
    let s = strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume: false,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    let m = strata_models::pipeline::load_model(&s.output, None, None, DType::F32, &Device::Cpu)
        .unwrap();
    let base =
        strata_models::pipeline::load_model(&model, None, None, DType::F32, &Device::Cpu).unwrap();
    let x = strata_models::pipeline::seeded_normal(&[1, 4, 8, 8], 1, &Device::Cpu).unwrap();
    let cond = strata_models::conditioning::Conditioning::Context(
        strata_models::pipeline::seeded_normal(&[1, 77, 32], 2, &Device::Cpu).unwrap(),
    );
    let ts = Tensor::new(&[500f32], &Device::Cpu).unwrap();
    let d = (m.models.unet.forward(&x, &ts, &cond).unwrap()
        - base.models.unet.forward(&x, &ts, &cond).unwrap())
    .unwrap()
    .abs()
    .unwrap()
    .sum_all()
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    assert!(d > 1e-4, "full fine-tune changed the UNet ({d})");

    // DreamBooth: full fine-tune with a prior-preservation class dataset
    let class = tmp.path().join("class");
    strata_synth::dataset::write_dataset(
        &class,
        &strata_synth::dataset::DatasetOptions {
            count: 4,
            size: 64,
            seed: 9,
            classes: vec![],
        },
        &|| {},
    )
    .unwrap();
    let mut cfg = tiny_cfg(&model, &data, &tmp.path().join("db"));
    cfg.method = Method::Dreambooth;
    cfg.class_data = Some(class);
    cfg.max_steps = Some(2);
    let s = strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume: false,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    strata_models::pipeline::load_model(&s.output, None, None, DType::F32, &Device::Cpu).unwrap();

    // textual inversion: only the new rows train; A1111-style embedding file
    let mut cfg = tiny_cfg(&model, &data, &tmp.path().join("ti"));
    cfg.method = Method::TextualInversion;
    cfg.placeholder_token = "<aaad>".into();
    cfg.num_vectors = 2;
    cfg.initializer_token = "road".into();
    cfg.max_steps = Some(3);
    let mut t = Trainer::new(cfg.clone(), &mut quiet()).unwrap();
    assert_eq!(t.opt.vars().len(), 1);
    let store = t.micro_loss(0).unwrap().backward().unwrap();
    let g = t.opt.collect_grads(&store).unwrap();
    assert!(
        g[0].abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0,
        "the new rows get a gradient"
    );
    assert!(
        !t.text.token_embedding.weight.is_variable(),
        "the vocabulary is frozen"
    );
    let before = t.ti.as_ref().unwrap().as_tensor().copy().unwrap();
    t.train_step("none").unwrap();
    let moved = (t.ti.as_ref().unwrap().as_tensor() - &before)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 0.0);
    drop(t);
    let s = strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume: false,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    assert!(s.output.ends_with("embeddings/aaad.safetensors"));
    let (e, meta) = strata_models::safetensors_io::load(&s.output, &Device::Cpu).unwrap();
    assert_eq!(e["emb_params"].dims(), &[2, 32]);
    assert_eq!(meta["strata_placeholder_token"], "<aaad>");
}

#[test]
fn bad_options_and_bad_data_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = TrainConfig {
        model: "m".into(),
        data: "d".into(),
        out: "o".into(),
        ..TrainConfig::default()
    };
    c.caption_dropout = 1.5;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("caption-dropout"));
    let c = TrainConfig {
        method: Method::Dreambooth,
        model: "m".into(),
        data: "d".into(),
        out: "o".into(),
        ..TrainConfig::default()
    };
    assert!(c.validate().unwrap_err().to_string().contains("class-data"));
    let e = TrainConfig::from_toml_str("batch_size = 4\nbogus = 1\n", Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.toml") && e.contains("bogus"), "{e}");
    let ok = TrainConfig::from_toml_str(
        "method = \"textual-inversion\"\nbatch_size = 4\nmin_snr_gamma = 5.0\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(
        (ok.method, ok.batch_size, ok.min_snr_gamma, ok.lr),
        (Method::TextualInversion, 4, Some(5.0), 1e-4)
    );
    // a dataset folder without metadata
    let model = tmp.path().join("model");
    strata_models::testing::write_tiny_model(&model, 1).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cfg = tiny_cfg(&model, &empty, &tmp.path().join("r"));
    let e = Trainer::new(cfg, &mut quiet()).err().unwrap().to_string();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn validation_images_are_written_every_n_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let run = tmp.path().join("run");
    let mut cfg = tiny_cfg(&model, &data, &run);
    cfg.max_steps = Some(4);
    cfg.validation_every = 2;
    cfg.validation_steps = 2;
    cfg.validation_prompts = vec![
        "park | a road crosses the park | road, tree".into(),
        "square".into(),
    ];
    let noop = &mut |_: &strata_train::StepReport| {};
    strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume: false,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(run.join("validation"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "step-00000002-0.png",
            "step-00000002-1.png",
            "step-00000004-0.png",
            "step-00000004-1.png"
        ]
    );
    let img = strata_models::pipeline::read_png_image(
        &run.join("validation/step-00000004-0.png"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(img.dims(), &[1, 3, 16, 16]);
    let bytes = std::fs::read(run.join("validation/step-00000004-0.png")).unwrap();
    assert!(bytes.windows(10).any(|w| w == b"parameters"));
}
