//! UNet parity (diffusers fixtures, candle-transformers' UNet), single-file mapping, LoRA
//! gradients, load errors. Fixtures: scripts/fixtures/diffusion_models.py.

use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strata_models::conditioning::Conditioning;
use strata_models::loading::{self, LoadError};
use strata_models::lora::{self, LoraConfig, LoraTargets, VisitLinears};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion")
}

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("models_io.safetensors"), &Device::Cpu)
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn fixture_cfg() -> UNetConfig {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("tiny_model/unet/config.json")).unwrap(),
    )
    .unwrap();
    UNetConfig::from_diffusers_json(&v).unwrap()
}

fn load_unet(dtype: DType) -> UNet2DConditionModel {
    let m = loading::load_diffusers(
        &fixture_dir().join("tiny_model"),
        dtype,
        &Device::Cpu,
        false,
    )
    .unwrap();
    m.unet
}

#[test]
fn unet_matches_diffusers_flat_context() {
    let t = io();
    let unet = load_unet(DType::F32);
    let out = unet
        .forward(
            &t["unet_sample"],
            &t["unet_timesteps"],
            &Conditioning::Context(t["unet_context"].clone()),
        )
        .unwrap();
    let d = max_abs_diff(&out, &t["unet_out"]);
    assert!(d <= 1e-4, "max |Δ| = {d}");
}

#[test]
fn unet_matches_diffusers_decoupled_segments() {
    let t = io();
    let unet = load_unet(DType::F32);
    let cond = Conditioning::Decoupled {
        segments: t["dec_segments"].clone(),
        weights: t["dec_weights"].clone(),
    };
    let out = unet
        .forward(&t["unet_sample"], &t["unet_timesteps"], &cond)
        .unwrap();
    let d = max_abs_diff(&out, &t["unet_decoupled_out"]);
    assert!(d <= 1e-4, "max |Δ| = {d}");
    // and it really differs from attending one segment only
    let flat = unet
        .forward(
            &t["unet_sample"],
            &t["unet_timesteps"],
            &Conditioning::Context(
                t["dec_segments"]
                    .narrow(1, 0, 1)
                    .unwrap()
                    .squeeze(1)
                    .unwrap(),
            ),
        )
        .unwrap();
    assert!(max_abs_diff(&flat, &out) > 1e-3);
}

/// Random weights (seeded) for `cfg`, written to a safetensors file in diffusers layout.
fn write_random_unet(cfg: &UNetConfig, path: &Path) {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    UNet2DConditionModel::new(cfg.clone(), vb).unwrap();
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let v = &data[name];
        let dims = v.dims().to_vec();
        let fan_in: usize = if dims.len() > 1 {
            dims[1..].iter().product()
        } else {
            1
        };
        let t = if dims.len() == 1 && name.contains("norm") && name.ends_with("weight") {
            (seeded(&dims, i as u64, 0.1) + 1.0).unwrap()
        } else if dims.len() == 1 {
            seeded(&dims, i as u64, 0.1)
        } else {
            seeded(&dims, i as u64, 1.7 / (fan_in as f64).sqrt())
        };
        v.set(&t.to_dtype(DType::F32).unwrap()).unwrap();
    }
    drop(data);
    vm.save(path).unwrap();
}

/// candle-transformers' SD UNet, same random weights from one diffusers-layout file, flat
/// context. (Its down/up blocks hard-code 32 GroupNorm groups, hence 32/64 channels here.)
#[test]
fn unet_matches_candle_transformers_unet() {
    use candle_transformers::models::stable_diffusion::unet_2d::{
        BlockConfig, UNet2DConditionModelConfig,
    };
    let mut cfg = UNetConfig::tiny();
    cfg.norm_num_groups = 32;
    cfg.block_out_channels = vec![32, 64];
    cfg.cross_attention_dim = 24;
    // candle-transformers uses tanh-GELU in its feed-forwards; so does our model when asked
    cfg.gelu_tanh = true;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("diffusion_pytorch_model.safetensors");
    write_random_unet(&cfg, &file);
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[&file], DType::F32, &Device::Cpu)
    }
    .unwrap();
    let ccfg = UNet2DConditionModelConfig {
        blocks: vec![
            BlockConfig {
                out_channels: 32,
                use_cross_attn: Some(1),
                attention_head_dim: 2,
            },
            BlockConfig {
                out_channels: 64,
                use_cross_attn: None,
                attention_head_dim: 2,
            },
        ],
        layers_per_block: 1,
        norm_num_groups: 32,
        cross_attention_dim: 24,
        ..Default::default()
    };
    let theirs = candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel::new(
        vb, 4, 4, false, ccfg,
    )
    .unwrap();
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let ours = loading::unet_from_tensors(cfg, tensors, &file, DType::F32, &Device::Cpu).unwrap();
    let x = seeded(&[2, 4, 8, 8], 11, 1.5).to_dtype(DType::F32).unwrap();
    let ctx = seeded(&[2, 7, 24], 12, 1.5).to_dtype(DType::F32).unwrap();
    for t in [3.0, 500.0, 981.0] {
        let a = theirs.forward(&x, t, &ctx).unwrap();
        let b = ours
            .forward_t(&x, t, &Conditioning::Context(ctx.clone()))
            .unwrap();
        let scale = a
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(scale > 0.1, "outputs are not trivially small ({scale})");
        let d = max_abs_diff(&a, &b);
        assert!(d <= 1e-4, "t={t}: max |Δ| = {d}");
    }
}

#[test]
fn single_file_ldm_layout_gives_identical_outputs() {
    let t = io();
    let dir = fixture_dir();
    let a =
        loading::load_diffusers(&dir.join("tiny_model"), DType::F32, &Device::Cpu, false).unwrap();
    let vcfg = a.vae.config.clone();
    let b = loading::load_single_file(
        &dir.join("tiny_ldm.safetensors"),
        fixture_cfg(),
        vcfg,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let cond = Conditioning::Context(t["unet_context"].clone());
    let oa = a
        .unet
        .forward(&t["unet_sample"], &t["unet_timesteps"], &cond)
        .unwrap();
    let ob = b
        .unet
        .forward(&t["unet_sample"], &t["unet_timesteps"], &cond)
        .unwrap();
    assert_eq!(max_abs_diff(&oa, &ob), 0.0);
    let da = a.vae.decode(&t["vae_decode_in"]).unwrap();
    let db = b.vae.decode(&t["vae_decode_in"]).unwrap();
    assert_eq!(max_abs_diff(&da, &db), 0.0);
    let ea = a.vae.encode(&t["vae_image"], None).unwrap();
    let eb = b.vae.encode(&t["vae_image"], None).unwrap();
    assert_eq!(max_abs_diff(&ea, &eb), 0.0);
}

#[test]
fn module_paths_are_diffusers_names() {
    let unet = load_unet(DType::F32);
    let paths = unet.projection_paths();
    assert!(
        paths.contains(&"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q".to_string())
    );
    assert!(
        paths.contains(&"mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0".to_string())
    );
    assert!(
        paths.contains(&"up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj".to_string())
    );
    assert!(paths.contains(&"up_blocks.1.attentions.0.proj_in".to_string()));
    // down 1 + mid 1 + up 2 transformers; each: proj_in/out + 8 attention + 2 ff
    assert_eq!(paths.len(), 4 * 12);
}

fn seeded(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| r.gen_range(-1.0..1.0) * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn lora_gradients_exist_only_for_adapters_and_match_finite_differences() {
    let t = io();
    let mut unet = load_unet(DType::F64);
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: LoraTargets {
            attention: true,
            proj: true,
            ff: true,
        },
        seed: 3,
    };
    let n = lora::attach(&mut unet, &cfg).unwrap();
    assert_eq!(n, 48);
    let ads = lora::adapters(&unet);
    assert_eq!(ads.len(), 48);
    assert!(ads[0].0.starts_with("down_blocks.0.attentions.0."));
    // B starts at zero: the adapted model equals the base one
    let x = t["unet_sample"].to_dtype(DType::F64).unwrap();
    let ts = t["unet_timesteps"].clone();
    let cond = Conditioning::Context(t["unet_context"].to_dtype(DType::F64).unwrap());
    let base = load_unet(DType::F64).forward(&x, &ts, &cond).unwrap();
    let with0 = unet.forward(&x, &ts, &cond).unwrap();
    assert_eq!(max_abs_diff(&base, &with0), 0.0);
    // give B non-zero values so that both A and B receive gradient
    for (i, (_, a)) in ads.iter().enumerate() {
        a.b.set(&seeded(a.b.dims(), 100 + i as u64, 0.05)).unwrap();
    }
    let r = seeded(base.dims(), 7, 1.0);
    let loss = |u: &UNet2DConditionModel| -> Tensor {
        (u.forward(&x, &ts, &cond).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let l = loss(&unet);
    let grads = l.backward().unwrap();
    let vars = lora::trainable_vars(&unet);
    assert_eq!(vars.len(), 96);
    for v in &vars {
        let g = grads
            .get(v.as_tensor())
            .expect("every LoRA tensor has a gradient");
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(s > 0.0);
    }
    // frozen weights are plain tensors: no gradient is computed for them
    unet.visit_linears(&mut |l| {
        assert!(
            grads.get(l.weight()).is_none(),
            "{} weight got a gradient",
            l.path
        );
        if let Some(b) = l.bias() {
            assert!(grads.get(b).is_none());
        }
    });
    assert!(grads.get(&x).is_none());
    // The same adapters on a UNet whose weights are trainable Vars (candle's own ops, which
    // also compute every weight gradient) get the same gradients: the frozen-weight ops change
    // nothing but the work done.
    let file = loading::weights_file(
        &fixture_dir().join("tiny_model/unet"),
        "diffusion_pytorch_model",
        false,
    )
    .unwrap();
    let vars_map: HashMap<String, Tensor> = loading::read_safetensors(&file, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let v = Var::from_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap();
            (k, v.as_tensor().clone())
        })
        .collect();
    let mut trainable = UNet2DConditionModel::new(
        fixture_cfg(),
        candle_nn::VarBuilder::from_tensors(vars_map, DType::F64, &Device::Cpu),
    )
    .unwrap();
    for (p, a) in &ads {
        lora::install(&mut trainable, p, a.clone()).unwrap();
    }
    let grads_full = loss(&trainable).backward().unwrap();
    for (p, a) in &ads {
        for v in [&a.a, &a.b] {
            let (g1, g2) = (
                grads.get(v.as_tensor()).unwrap(),
                grads_full.get(v.as_tensor()).unwrap(),
            );
            let d = (g1 - g2).unwrap().abs().unwrap().max_all().unwrap();
            let m = g2.abs().unwrap().max_all().unwrap();
            let (d, m) = (d.to_scalar::<f64>().unwrap(), m.to_scalar::<f64>().unwrap());
            assert!(
                d <= 1e-10 * m.max(1e-30),
                "{p}: LoRA gradient differs by {d} (max {m})"
            );
        }
    }
    // finite differences on a few entries of A and B (attention, proj, ff, mid, up)
    let picks = [
        (0usize, true, 1usize),
        (2, false, 3),
        (10, true, 0),
        (13, false, 5),
        (30, true, 7),
        (47, false, 2),
    ];
    for (ai, is_a, flat) in picks {
        let var: &Var = if is_a { &ads[ai].1.a } else { &ads[ai].1.b };
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[flat];
        let orig = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let eps = 1e-5;
        let mut fd = 0.0;
        for (sgn, k) in [(1.0, 1.0), (-1.0, -1.0)] {
            let mut v = orig.clone();
            v[flat] += sgn * eps;
            var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            fd += k * loss(&unet).to_scalar::<f64>().unwrap();
        }
        fd /= 2.0 * eps;
        var.set(&Tensor::from_vec(orig, var.dims(), &Device::Cpu).unwrap())
            .unwrap();
        let rel = (g - fd).abs() / g.abs().max(fd.abs()).max(1e-8);
        assert!(
            rel < 1e-5,
            "{} {}[{flat}]: autograd {g} vs finite difference {fd}",
            ads[ai].0,
            if is_a { "A" } else { "B" }
        );
    }
}

#[test]
fn lora_install_and_multiplier() {
    let t = io();
    let mut unet = load_unet(DType::F32);
    let cond = Conditioning::Context(t["unet_context"].clone());
    let base = unet
        .forward(&t["unet_sample"], &t["unet_timesteps"], &cond)
        .unwrap();
    let path = "mid_block.attentions.0.transformer_blocks.0.attn2.to_v";
    let a = lora::LoraAdapter::init(16, 32, 4, 4.0, 1, DType::F32, &Device::Cpu).unwrap();
    a.b.set(&(seeded(&[32, 4], 9, 0.5).to_dtype(DType::F32).unwrap()))
        .unwrap();
    lora::install(&mut unet, path, a).unwrap();
    let on = unet
        .forward(&t["unet_sample"], &t["unet_timesteps"], &cond)
        .unwrap();
    assert!(max_abs_diff(&on, &base) > 1e-4);
    lora::set_multiplier(&mut unet, 0.0);
    let off = unet
        .forward(&t["unet_sample"], &t["unet_timesteps"], &cond)
        .unwrap();
    assert!(max_abs_diff(&off, &base) < 1e-6);
    // wrong names and shapes are errors
    let bad = lora::LoraAdapter::init(8, 32, 4, 4.0, 1, DType::F32, &Device::Cpu).unwrap();
    assert!(lora::install(&mut unet, path, bad.clone()).is_err());
    assert!(lora::install(&mut unet, "mid_block.nope", bad).is_err());
}

#[test]
fn load_errors_list_missing_unexpected_and_misshaped_tensors() {
    let dir = fixture_dir();
    let file = dir.join("tiny_model/unet/diffusion_pytorch_model.fp16.safetensors");
    let mut ts = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    ts.remove("conv_in.bias").unwrap();
    ts.remove("mid_block.attentions.0.proj_out.weight").unwrap();
    ts.insert(
        "extra.tensor".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    ts.insert(
        "conv_out.weight".into(),
        Tensor::zeros((4, 16, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let err =
        loading::unet_from_tensors(fixture_cfg(), ts, &file, DType::F32, &Device::Cpu).unwrap_err();
    match &err {
        LoadError::Tensors(r) => {
            let (missing, unexpected, mismatched) = (&r.missing, &r.unexpected, &r.mismatched);
            assert_eq!(missing.len(), 2, "{missing:?}");
            assert!(missing.iter().any(|m| m.starts_with("conv_in.bias")));
            assert_eq!(unexpected, &vec!["extra.tensor".to_string()]);
            assert_eq!(mismatched.len(), 1);
            assert_eq!(mismatched[0].expected, vec![4, 16, 3, 3]);
        }
        e => panic!("unexpected error {e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("conv_in.bias")
            && msg.contains("extra.tensor")
            && msg.contains("conv_out.weight"),
        "{msg}"
    );
    assert!(msg.contains("diffusion_pytorch_model.fp16.safetensors"));
}

#[test]
fn pickle_checkpoints_are_refused_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("v1-5-pruned.ckpt");
    std::fs::write(&p, b"PK\x03\x04").unwrap();
    let e = loading::ModelSource::detect(&p).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("pickle") && msg.contains("from_single_file") && msg.contains(".safetensors"),
        "{msg}"
    );
    // a diffusers folder with only .bin weights is refused the same way
    let d = tmp.path().join("m");
    std::fs::create_dir_all(d.join("unet")).unwrap();
    std::fs::write(d.join("unet/diffusion_pytorch_model.bin"), b"x").unwrap();
    let e = loading::weights_file(&d.join("unet"), "diffusion_pytorch_model", false).unwrap_err();
    assert!(matches!(e, LoadError::Pickle { .. }));
}
