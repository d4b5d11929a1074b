//! VAE training (`--method vae`) and the random-model initialiser (`strata_models::init`):
//! finite-difference gradient check of the VAE loss, a short run that lowers the
//! reconstruction loss and writes a loadable model, resume, and init's folder loading through
//! the real loader.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use strata_models::init;
use strata_models::vae::{AutoencoderKL, VaeConfig};
use strata_train::config::{Captions, Method, TrainConfig};
use strata_train::vae_train::{vae_loss, VaeStepLog};

/// The tokenizer committed with the embedded base model (the real CLIP vocabulary).
fn real_tokenizer() -> strata_models::tokenizer::ClipTokenizer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/strata-base/tokenizer");
    strata_models::tokenizer::ClipTokenizer::load(&dir).expect("committed base-model tokenizer")
}

#[test]
fn vae_loss_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let cfg = VaeConfig {
        in_channels: 3,
        out_channels: 3,
        latent_channels: 2,
        block_out_channels: vec![4, 8],
        layers_per_block: 1,
        norm_num_groups: 2,
        scaling_factor: 0.7,
    };
    let vm = VarMap::new();
    let vae = AutoencoderKL::new(cfg, VarBuilder::from_varmap(&vm, DType::F64, &dev)).unwrap();
    // non-trivial norm scales and biases so every term is exercised
    {
        let data = vm.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for (i, n) in names.into_iter().enumerate() {
            let v = &data[n];
            if v.dims().len() == 1 {
                let r = Tensor::randn(0f64, 0.3, v.dims(), &dev).unwrap();
                let base = if n.ends_with("weight") { 1.0 } else { 0.0 };
                v.set(&(r + base).unwrap()).unwrap();
            }
            let _ = i;
        }
    }
    let x = Tensor::randn(0f64, 0.6, (2, 3, 8, 8), &dev).unwrap();
    let noise = Tensor::randn(0f64, 1.0, (2, 2, 4, 4), &dev).unwrap();
    let kl_w = 0.05;
    let loss_of = |vae: &AutoencoderKL| -> f64 {
        vae_loss(vae, &x, &noise, kl_w)
            .unwrap()
            .0
            .to_scalar::<f64>()
            .unwrap()
    };
    let (loss, _, _) = vae_loss(&vae, &x, &noise, kl_w).unwrap();
    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap().clone();
    let checked = [
        "encoder.conv_in.weight",
        "encoder.down_blocks.0.resnets.0.norm1.weight",
        "encoder.down_blocks.0.downsamplers.0.conv.weight",
        "encoder.mid_block.attentions.0.to_q.weight",
        "encoder.mid_block.attentions.0.group_norm.bias",
        "quant_conv.weight",
        "quant_conv.bias",
        "post_quant_conv.weight",
        "decoder.mid_block.attentions.0.to_v.weight",
        "decoder.up_blocks.0.upsamplers.0.conv.weight",
        "decoder.up_blocks.1.resnets.1.conv2.weight",
        "decoder.conv_norm_out.weight",
        "decoder.conv_out.bias",
    ];
    let h = 1e-6;
    let mut worst = 0f64;
    for name in checked {
        let var: &Var = data
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let orig = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let n = orig.len();
        for &i in &[0, n / 2, n - 1] {
            let mut p = orig.clone();
            p[i] += h;
            var.set(&Tensor::from_vec(p, var.dims(), &dev).unwrap())
                .unwrap();
            let lp = loss_of(&vae);
            let mut m = orig.clone();
            m[i] -= h;
            var.set(&Tensor::from_vec(m, var.dims(), &dev).unwrap())
                .unwrap();
            let lm = loss_of(&vae);
            var.set(&Tensor::from_vec(orig.clone(), var.dims(), &dev).unwrap())
                .unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let err = (fd - g[i]).abs() / (fd.abs().max(g[i].abs()).max(1e-4));
            worst = worst.max(err);
            assert!(
                err < 1e-3,
                "{name}[{i}]: backprop {} vs finite difference {fd} (relative error {err})",
                g[i]
            );
        }
    }
    eprintln!("worst relative error {worst:.2e}");
}

fn synth(dir: &Path, count: usize, size: u32) {
    let opts = strata_synth::DatasetOptions {
        count,
        size,
        seed: 5,
        classes: vec![],
    };
    strata_synth::write_dataset(dir, &opts, &|| {}).expect("synthetic dataset");
}

fn read_log(run: &Path) -> Vec<VaeStepLog> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn init_writes_a_model_the_loader_reads_and_vae_training_lowers_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    let preset = init::preset("tiny").unwrap();
    init::write_model(&preset, &real_tokenizer(), &model, 3).unwrap();
    // the real loader reads every part
    let loaded = strata_models::pipeline::load_model(&model, None, None, DType::F32, &Device::Cpu)
        .expect("init's folder loads");
    assert_eq!(loaded.models.unet.config, preset.unet);
    assert_eq!(
        loaded.models.vae.config.block_out_channels,
        preset.vae.block_out_channels
    );
    assert_eq!(loaded.text.config.vocab_size, 49408);
    assert_eq!(loaded.tokenizer.vocab_size(), 49408);
    assert_eq!(
        loaded
            .tokenizer
            .encode("a remote sensing image of park")
            .ids,
        real_tokenizer()
            .encode("a remote sensing image of park")
            .ids
    );
    // same seed, same bytes; an existing folder is refused
    let again = tmp.path().join("m2");
    init::write_model(&preset, &real_tokenizer(), &again, 3).unwrap();
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(model.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap()
        );
    }
    assert!(init::write_model(&preset, &real_tokenizer(), &model, 3).is_err());
    assert!(init::preset("nope").is_err());

    let data = tmp.path().join("data");
    synth(&data, 8, 64);
    let run = tmp.path().join("run");
    let cfg = TrainConfig {
        method: Method::Vae,
        model: model.clone(),
        data: data.clone(),
        out: run.clone(),
        captions: Captions::Flat,
        resolution: 32,
        batch_size: 4,
        max_steps: Some(30),
        lr: 3e-3,
        lr_schedule: strata_train::optim::LrSchedule::Constant,
        checkpoint_every: 15,
        vae_crop: 16,
        ..TrainConfig::default()
    };
    let s = strata_train::train(
        cfg.clone(),
        strata_train::RunOptions {
            resume: false,
            on_status: &mut |_| {},
            on_step: &mut |_| {},
        },
    )
    .unwrap();
    assert_eq!(s.steps, 30);
    let log = read_log(&run);
    assert_eq!(log.len(), 30);
    let first: f32 = log[..4].iter().map(|r| r.l1).sum::<f32>() / 4.0;
    let last: f32 = log[26..].iter().map(|r| r.l1).sum::<f32>() / 4.0;
    eprintln!("L1 first 4 steps {first:.4}, last 4 {last:.4}");
    assert!(
        last < 0.7 * first,
        "L1 {first} → {last}: not lowered enough"
    );
    // the output loads, carries the trained VAE and a measured scaling factor
    let out = strata_models::pipeline::load_model(&s.output, None, None, DType::F32, &Device::Cpu)
        .unwrap();
    let sf = out.models.vae.config.scaling_factor;
    assert!(
        sf.is_finite() && sf > 0.0 && (sf - 0.18215).abs() > 1e-6,
        "scaling factor {sf}"
    );
    assert_ne!(
        std::fs::read(s.output.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
        std::fs::read(model.join("vae/diffusion_pytorch_model.safetensors")).unwrap()
    );
    // the UNet is untouched
    assert_eq!(
        std::fs::read(s.output.join("unet/diffusion_pytorch_model.safetensors")).unwrap(),
        std::fs::read(model.join("unet/diffusion_pytorch_model.safetensors")).unwrap()
    );

    // resume: a run stopped at step 15 and resumed redoes steps 16..30 identically
    let run2 = tmp.path().join("run2");
    let mut c2 = TrainConfig {
        out: run2.clone(),
        max_steps: Some(15),
        ..cfg.clone()
    };
    strata_train::train(
        c2.clone(),
        strata_train::RunOptions {
            resume: false,
            on_status: &mut |_| {},
            on_step: &mut |_| {},
        },
    )
    .unwrap();
    // continue to 30 steps from the step-15 checkpoint
    c2.max_steps = Some(30);
    std::fs::write(run2.join("config.toml"), c2.to_toml()).unwrap();
    let mut c3 = strata_train::run::read_run_config(&run2).unwrap();
    c3.progress = false;
    let s2 = strata_train::train(
        c3,
        strata_train::RunOptions {
            resume: true,
            on_status: &mut |_| {},
            on_step: &mut |_| {},
        },
    )
    .unwrap();
    assert_eq!(s2.steps, 30);
    let l2 = read_log(&run2);
    assert_eq!(l2.len(), 30);
    // the lr schedule is constant, so steps 16..30 equal the uninterrupted run's
    for (a, b) in log[15..].iter().zip(&l2[15..]) {
        assert_eq!(a.loss, b.loss, "step {}", a.step);
    }
}
