//! The text side of training and generation: a finite-difference check of the text-encoder
//! LoRA gradient, a `--lora-text-encoder` run (kohya `lora_te_*` output), and round trips
//! (LoRA + text encoder, textual inversion, DreamBooth, full fine-tuning): after a few steps
//! the text encodings generation builds for a training caption (through
//! `strata_models::text_side`, the code `strata generate` runs) equal the trainer's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use strata_models::clip::{ClipTextConfig, ClipTextTransformer};
use strata_models::conditioning::Conditioning;
use strata_models::lora::{self, LoraConfig, LoraTargets};
use strata_models::segments::SegmentTexts;
use strata_models::text_side::{
    apply_text_additions, caption_encodings, CaptionInput, EmbeddingSpec,
};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};
use strata_train::{Captions, Method, TrainConfig, Trainer};

#[allow(dead_code)]
mod common;

/// A tiny model folder and a synthetic dataset (8 images, the last two the test split).
fn setup(root: &Path) -> (PathBuf, PathBuf) {
    common::tiny_model_and_split_scenes(root)
}

fn tiny_cfg(model: &Path, data: &Path, out: &Path) -> TrainConfig {
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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

/// Random f32 weights of a fresh module, as an f64 `VarBuilder` (frozen tensors).
fn random_f64<T>(seed: u64, build: impl Fn(VarBuilder) -> T) -> VarBuilder<'static> {
    let vm = VarMap::new();
    build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu));
    strata_models::init::randomize(&vm, seed).unwrap();
    let tensors: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().to_dtype(DType::F64).unwrap()))
        .collect();
    VarBuilder::from_tensors(tensors, DType::F64, &Device::Cpu)
}

/// The small text encoder of the finite-difference checks (40 tokens, width 32, 2 layers).
fn gradcheck_text_config() -> ClipTextConfig {
    ClipTextConfig {
        vocab_size: 40,
        hidden_size: 32,
        intermediate_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        max_position_embeddings: 77,
        ..ClipTextConfig::tiny()
    }
}

#[test]
fn text_encoder_lora_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let tcfg = gradcheck_text_config();
    let vb = random_f64(3, |vb| {
        ClipTextTransformer::new(&tcfg, vb.pp("text_model")).unwrap()
    });
    let mut text = ClipTextTransformer::new(&tcfg, vb.pp("text_model")).unwrap();
    let ucfg = UNetConfig::tiny();
    let vb = random_f64(4, |vb| UNet2DConditionModel::new(ucfg.clone(), vb).unwrap());
    let unet = UNet2DConditionModel::new(ucfg, vb).unwrap();
    let n = lora::attach(
        &mut text,
        &LoraConfig {
            rank: 2,
            alpha: 3.0,
            targets: LoraTargets {
                attention: true,
                proj: false,
                ff: true,
            },
            seed: 9,
        },
    )
    .unwrap();
    assert_eq!(n, 12);
    // B starts at zero (no gradient reaches A then): give it values
    for (i, (_, a)) in lora::adapters(&text).into_iter().enumerate() {
        let r = strata_models::pipeline::seeded_normal(a.b.dims(), 100 + i as u64, &dev)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        a.b.set(&(r * 0.3).unwrap()).unwrap();
    }
    let mut ids: Vec<u32> = vec![38, 5, 17, 3, 29, 39];
    ids.resize(77, 39);
    let ids = Tensor::from_vec(ids, (1, 77), &dev).unwrap();
    let x = Tensor::randn(0f64, 1.0, (1, 4, 8, 8), &dev).unwrap();
    let target = Tensor::randn(0f64, 1.0, (1, 4, 8, 8), &dev).unwrap();
    let ts = Tensor::new(&[400f64], &dev).unwrap();
    let loss_of = |text: &ClipTextTransformer| -> Tensor {
        let c = text.forward(&ids).unwrap();
        let pred = unet.forward(&x, &ts, &Conditioning::Context(c)).unwrap();
        (pred - &target).unwrap().sqr().unwrap().mean_all().unwrap()
    };
    let grads = loss_of(&text).backward().unwrap();
    let adapters: HashMap<String, lora::LoraAdapter> = lora::adapters(&text).into_iter().collect();
    let h = 1e-6;
    let mut worst = 0f64;
    for path in [
        "text_model.encoder.layers.0.self_attn.q_proj",
        "text_model.encoder.layers.0.self_attn.v_proj",
        "text_model.encoder.layers.1.self_attn.out_proj",
        "text_model.encoder.layers.1.mlp.fc1",
        "text_model.encoder.layers.0.mlp.fc2",
    ] {
        let ad = &adapters[path];
        for (which, var) in [("A", &ad.a), ("B", &ad.b)] {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {path} {which}"))
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
            let k = orig.len();
            for &i in &[0, k / 2, k - 1] {
                let eval = |d: f64| {
                    let mut p = orig.clone();
                    p[i] += d;
                    var.set(&Tensor::from_vec(p, var.dims(), &dev).unwrap())
                        .unwrap();
                    loss_of(&text).to_scalar::<f64>().unwrap()
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                var.set(&Tensor::from_vec(orig.clone(), var.dims(), &dev).unwrap())
                    .unwrap();
                let err = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(1e-6);
                worst = worst.max(err);
                assert!(
                    err < 1e-4,
                    "{path} {which}[{i}]: backprop {} vs finite difference {fd} (relative error {err})",
                    g[i]
                );
            }
        }
    }
    eprintln!("text-encoder LoRA gradient: worst relative error {worst:.2e}");
}

fn quiet() -> impl FnMut(&str) {
    |_| {}
}

fn train_steps(t: &mut Trainer, n: usize) {
    for _ in 0..n {
        t.train_step("none").unwrap();
    }
}

/// The generation-side encodings of training item `i` (caption as the trainer sees it,
/// `ti` prefixing the scene or flat caption with a placeholder as textual inversion does).
fn generate_side(
    model_dir: &Path,
    t: &Trainer,
    i: usize,
    embeddings: &[EmbeddingSpec],
    lora_file: Option<&Path>,
    ti: Option<&str>,
) -> Tensor {
    let dev = Device::Cpu;
    let mut loaded =
        strata_models::pipeline::load_model(model_dir, None, None, DType::F32, &dev).unwrap();
    let (ph, _) =
        apply_text_additions(&mut loaded, embeddings, lora_file.map(|p| (p, 1.0)), &dev).unwrap();
    let item = &t.data.items[i];
    let prefix = |s: &str| match ti {
        Some(p) => format!("{p} {s}"),
        None => s.to_string(),
    };
    let input = match t.cfg.captions {
        Captions::Flat => CaptionInput::Flat(prefix(&item.flat)),
        Captions::Hierarchical => CaptionInput::Segments(SegmentTexts {
            scene: prefix(&item.segments.scene),
            ..item.segments.clone()
        }),
    };
    let (c, _) = caption_encodings(&loaded.text, &loaded.tokenizer, &ph, &input).unwrap();
    c
}

fn assert_round_trip(what: &str, t: &Trainer, gen: impl Fn(usize) -> Tensor) {
    assert_round_trip_within(what, t, 1e-6, gen)
}

/// [`assert_round_trip`] with tolerance `tol` on the largest absolute difference.
fn assert_round_trip_within(what: &str, t: &Trainer, tol: f32, gen: impl Fn(usize) -> Tensor) {
    let mut worst = 0f32;
    for i in 0..t.data.items.len() {
        let want = t.text_encodings(&[i]).unwrap();
        let got = gen(i);
        assert_eq!(got.dims(), want.dims(), "{what}: item {i}");
        let d = max_abs_diff(&got, &want);
        worst = worst.max(d);
        assert!(d < tol, "{what}: item {i}: max |diff| = {d}");
    }
    eprintln!("{what}: generate vs trainer text encodings, worst max |diff| = {worst:.2e}");
}

#[test]
fn lora_text_encoder_run_writes_lora_te_keys_and_generation_matches_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    for captions in [Captions::Hierarchical, Captions::Flat] {
        let run = tmp.path().join(format!("run-{captions:?}"));
        let mut cfg = tiny_cfg(&model, &data, &run);
        cfg.captions = captions;
        cfg.lora_text_encoder = true;
        cfg.text_encoder_lr = Some(2e-2);
        cfg.max_steps = Some(3);
        let mut t = Trainer::new(cfg, &mut quiet()).unwrap();
        let before = t.text_encodings(&[0]).unwrap();
        train_steps(&mut t, 3);
        // the text encoder's adapters were trained: the encodings moved
        let moved = max_abs_diff(&before, &t.text_encodings(&[0]).unwrap());
        assert!(moved > 1e-4, "text encodings did not change ({moved})");
        std::fs::create_dir_all(&run).unwrap();
        let file = strata_train::run::write_output(&t, &run).unwrap();
        let (tensors, meta) = strata_models::safetensors_io::load(&file, &Device::Cpu).unwrap();
        let te: Vec<&String> = tensors
            .keys()
            .filter(|k| k.starts_with("lora_te_text_model_encoder_layers_"))
            .collect();
        // 2 layers × (q, k, v, out, fc1, fc2) × (down, up, alpha)
        assert_eq!(te.len(), 2 * 6 * 3, "{te:?}");
        assert!(tensors.keys().any(|k| k.starts_with("lora_unet_")));
        assert_eq!(meta["ss_network_train_unet_only"], "False");
        assert_eq!(meta["ss_text_encoder_lr"], "0.02");
        assert_round_trip(&format!("LoRA + text encoder ({captions:?})"), &t, |i| {
            generate_side(&model, &t, i, &[], Some(&file), None)
        });
    }
}

#[test]
fn text_encoder_lr_is_refused_without_lora_text_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny_cfg(
        &tmp.path().join("m"),
        &tmp.path().join("d"),
        &tmp.path().join("r"),
    );
    cfg.text_encoder_lr = Some(1e-4);
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("text-encoder-lr"), "{e}");
    cfg.text_encoder_lr = None;
    cfg.lora_text_encoder = true;
    cfg.method = Method::Full;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("lora-text-encoder"), "{e}");
}

#[test]
fn textual_inversion_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    for captions in [Captions::Hierarchical, Captions::Flat] {
        let run = tmp.path().join(format!("ti-{captions:?}"));
        let cfg = TrainConfig {
            method: Method::TextualInversion,
            placeholder_token: "<rs-x>".into(),
            num_vectors: 2,
            initializer_token: "road".into(),
            captions,
            max_steps: Some(2),
            ..tiny_cfg(&model, &data, &run)
        };
        let mut t = Trainer::new(cfg, &mut quiet()).unwrap();
        train_steps(&mut t, 2);
        std::fs::create_dir_all(&run).unwrap();
        let file = strata_train::run::write_output(&t, &run).unwrap();
        // the recorded placeholder is used (the file stem is "rs-x")
        let spec = EmbeddingSpec {
            file: file.clone(),
            token: None,
        };
        assert_round_trip(&format!("textual inversion ({captions:?})"), &t, |i| {
            generate_side(
                &model,
                &t,
                i,
                std::slice::from_ref(&spec),
                None,
                Some("<rs-x>"),
            )
        });
    }
}

#[test]
fn dreambooth_and_full_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    for method in [Method::Dreambooth, Method::Full] {
        let run = tmp.path().join(format!("{method:?}"));
        let cfg = TrainConfig {
            method,
            class_data: (method == Method::Dreambooth).then(|| data.clone()),
            max_steps: Some(1),
            lr: 1e-4,
            ..tiny_cfg(&model, &data, &run)
        };
        let mut t = Trainer::new(cfg, &mut quiet()).unwrap();
        train_steps(&mut t, 1);
        std::fs::create_dir_all(&run).unwrap();
        let out = strata_train::run::write_output(&t, &run).unwrap();
        assert_round_trip(&format!("{method:?}"), &t, |i| {
            generate_side(&out, &t, i, &[], None, None)
        });
    }
}

#[test]
fn full_text_encoder_gradient_matches_finite_differences() {
    // every kind of text-encoder weight as a trainable variable (f64), the loss through the
    // UNet's cross-attention, backprop against central differences
    let dev = Device::Cpu;
    let tcfg = gradcheck_text_config();
    let frozen = random_f64(5, |vb| {
        ClipTextTransformer::new(&tcfg, vb.pp("text_model")).unwrap()
    });
    // the same weights as variables, the way the trainer rebuilds the text encoder
    let probe = VarMap::new();
    ClipTextTransformer::new(
        &tcfg,
        VarBuilder::from_varmap(&probe, DType::F64, &dev).pp("text_model"),
    )
    .unwrap();
    let names: Vec<String> = probe.data().lock().unwrap().keys().cloned().collect();
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for n in &names {
            let t = frozen.get_unchecked_dtype(n, DType::F64).unwrap();
            data.insert(n.clone(), candle_core::Var::from_tensor(&t).unwrap());
        }
    }
    let text = ClipTextTransformer::new(
        &tcfg,
        VarBuilder::from_varmap(&vm, DType::F64, &dev).pp("text_model"),
    )
    .unwrap();
    let ucfg = UNetConfig::tiny();
    let vb = random_f64(6, |vb| UNet2DConditionModel::new(ucfg.clone(), vb).unwrap());
    let unet = UNet2DConditionModel::new(ucfg, vb).unwrap();
    let mut ids: Vec<u32> = vec![38, 5, 17, 3, 29, 39];
    ids.resize(77, 39);
    let ids = Tensor::from_vec(ids, (1, 77), &dev).unwrap();
    let x = Tensor::randn(0f64, 1.0, (1, 4, 8, 8), &dev).unwrap();
    let target = Tensor::randn(0f64, 1.0, (1, 4, 8, 8), &dev).unwrap();
    let ts = Tensor::new(&[300f64], &dev).unwrap();
    let loss_of = || -> Tensor {
        let c = text.forward(&ids).unwrap();
        let pred = unet.forward(&x, &ts, &Conditioning::Context(c)).unwrap();
        (pred - &target).unwrap().sqr().unwrap().mean_all().unwrap()
    };
    let grads = loss_of().backward().unwrap();
    let data = vm.data().lock().unwrap();
    // every weight gets a gradient
    for n in &names {
        assert!(
            grads.get(data[n].as_tensor()).is_some(),
            "no gradient for {n}"
        );
    }
    let h = 1e-6;
    let mut worst = 0f64;
    // (tensor, flat indices): token rows 5 (used) and 7 (unused: gradient 0), positions 0
    // and 5, every layer type
    let row = |r: usize, c: usize| r * 32 + c;
    let checks: Vec<(&str, Vec<usize>)> = vec![
        (
            "text_model.embeddings.token_embedding.weight",
            vec![row(5, 0), row(5, 31), row(38, 7), row(7, 3)],
        ),
        (
            "text_model.embeddings.position_embedding.weight",
            vec![row(0, 1), row(5, 30)],
        ),
        (
            "text_model.encoder.layers.0.self_attn.q_proj.weight",
            vec![0, 511, 1023],
        ),
        (
            "text_model.encoder.layers.0.self_attn.k_proj.weight",
            vec![0, 1000],
        ),
        (
            "text_model.encoder.layers.0.self_attn.q_proj.bias",
            vec![0, 31],
        ),
        // a key bias adds the same score to every key of a query: softmax ignores it
        (
            "text_model.encoder.layers.0.self_attn.k_proj.bias",
            vec![0, 31],
        ),
        (
            "text_model.encoder.layers.1.self_attn.v_proj.weight",
            vec![3, 700],
        ),
        (
            "text_model.encoder.layers.1.self_attn.out_proj.bias",
            vec![2],
        ),
        (
            "text_model.encoder.layers.0.layer_norm1.weight",
            vec![0, 17],
        ),
        ("text_model.encoder.layers.1.layer_norm2.bias", vec![9]),
        (
            "text_model.encoder.layers.0.mlp.fc1.weight",
            vec![0, 300, 511],
        ),
        ("text_model.encoder.layers.1.mlp.fc2.bias", vec![4]),
        ("text_model.final_layer_norm.weight", vec![0, 31]),
        ("text_model.final_layer_norm.bias", vec![15]),
    ];
    for (name, idx) in checks {
        let var = &data[name];
        let g = grads
            .get(var.as_tensor())
            .unwrap()
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
        for i in idx {
            let eval = |d: f64| {
                let mut p = orig.clone();
                p[i] += d;
                var.set(&Tensor::from_vec(p, var.dims(), &dev).unwrap())
                    .unwrap();
                loss_of().to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(orig.clone(), var.dims(), &dev).unwrap())
                .unwrap();
            if name.ends_with("token_embedding.weight") && i == row(7, 3) {
                // token 7 is not in the caption: no gradient, and the loss does not move
                assert_eq!(g[i], 0.0, "{name}[{i}]");
                assert!(fd.abs() < 1e-9, "{name}[{i}]: finite difference {fd}");
                continue;
            }
            if name.ends_with("k_proj.bias") {
                assert!(g[i].abs() < 1e-12, "{name}[{i}]: backprop {}", g[i]);
                assert!(fd.abs() < 1e-8, "{name}[{i}]: finite difference {fd}");
                continue;
            }
            let err = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(1e-6);
            worst = worst.max(err);
            assert!(
                err < 1e-4,
                "{name}[{i}]: backprop {} vs finite difference {fd} (relative error {err})",
                g[i]
            );
        }
    }
    eprintln!("full text-encoder gradient: worst relative error {worst:.2e}");
}

/// The text-encoder weights of a model folder (f32, by name).
fn text_weights(model: &Path) -> HashMap<String, Tensor> {
    let dir = model.join("text_encoder");
    let f = ["model.safetensors", "model.fp16.safetensors"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .unwrap();
    strata_models::safetensors_io::load(&f, &Device::Cpu)
        .unwrap()
        .0
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
        .collect()
}

#[test]
fn train_text_encoder_trains_saves_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    for (method, captions) in [
        (Method::Full, Captions::Flat),
        (Method::Dreambooth, Captions::Hierarchical),
    ] {
        let run = tmp.path().join(format!("te-{method:?}"));
        let cfg = TrainConfig {
            method,
            captions,
            class_data: (method == Method::Dreambooth).then(|| data.clone()),
            train_text_encoder: true,
            text_encoder_lr: Some(5e-3),
            weight_decay: 0.1,
            max_steps: Some(3),
            lr: 1e-3,
            ..tiny_cfg(&model, &data, &run)
        };
        let mut t = Trainer::new(cfg, &mut quiet()).unwrap();
        assert!(t.text.token_embedding.weight.is_variable());
        let n_te = t.full_text_vars().unwrap().len();
        // 2 tables, 2 layers × (4 projections × 2 + 2 norms × 2 + 2 MLP × 2), final norm × 2
        assert_eq!(n_te, 2 + 2 * (8 + 4 + 4) + 2);
        let base = text_weights(&model);
        let before = t.text_encodings(&[0]).unwrap();
        train_steps(&mut t, 3);
        let moved = max_abs_diff(&before, &t.text_encodings(&[0]).unwrap());
        assert!(
            moved > 1e-4,
            "{method:?}: text encodings did not change ({moved})"
        );
        // every weight moved; the token table only in the rows of tokens the captions use
        let used: std::collections::BTreeSet<u32> = t
            .data
            .items
            .iter()
            .flat_map(|it| {
                let mut v = t.tokenizer.encode(&it.flat).ids;
                for s in [
                    &it.segments.scene,
                    &it.segments.relation,
                    &it.segments.elements,
                ] {
                    v.extend(t.tokenizer.encode(s).ids);
                }
                v
            })
            .chain(t.tokenizer.encode("").ids)
            .collect();
        for (n, v) in t.full_text_vars().unwrap() {
            let b = &base[n];
            if n.ends_with("token_embedding.weight") {
                let rows = b.dim(0).unwrap();
                let d = (v.as_tensor() - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max(1)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let changed: Vec<usize> = (0..rows).filter(|&r| d[r] > 0.0).collect();
                assert!(!changed.is_empty());
                for r in &changed {
                    assert!(
                        used.contains(&(*r as u32)),
                        "row {r} of an unused token moved"
                    );
                }
                // no weight decay on the table: an unused row is bit for bit the initial one
                let unused = (0..rows).find(|r| !used.contains(&(*r as u32))).unwrap();
                assert_eq!(d[unused], 0.0);
            } else {
                assert!(max_abs_diff(v.as_tensor(), b) > 0.0, "{n} did not change");
            }
        }
        std::fs::create_dir_all(&run).unwrap();
        let out = strata_train::run::write_output(&t, &run).unwrap();
        // transformers layout, f32, only model.safetensors in text_encoder/
        let files: Vec<String> = std::fs::read_dir(out.join("text_encoder"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        assert_eq!(files, vec!["model.safetensors".to_string()]);
        let saved = text_weights(&out);
        assert!(saved.keys().all(|k| k.starts_with("text_model.")));
        assert_eq!(saved.len(), n_te);
        // the real loader reads the trained encoder: generation's encodings equal training's
        // (up to f32 rounding: generation encodes one caption's segments as a batch of 3)
        assert_round_trip_within(&format!("{method:?} + text encoder"), &t, 1e-5, |i| {
            generate_side(&out, &t, i, &[], None, None)
        });
    }
}

#[test]
fn train_text_encoder_resume_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let noop = &mut |_: &strata_train::StepReport| {};
    let mut cfg = TrainConfig {
        method: Method::Full,
        captions: Captions::Flat,
        train_text_encoder: true,
        text_encoder_lr: Some(3e-3),
        max_steps: Some(5),
        lr: 1e-3,
        ..tiny_cfg(&model, &data, &tmp.path().join("a"))
    };
    let a = strata_train::train(
        cfg.clone(),
        strata_train::RunOptions {
            resume: false,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    // interrupted after 2 steps (a checkpoint), then resumed from the folder
    let run_b = tmp.path().join("b");
    cfg.out = run_b.clone();
    std::fs::create_dir_all(&run_b).unwrap();
    std::fs::write(run_b.join("config.toml"), cfg.to_toml()).unwrap();
    let mut t = Trainer::new(cfg, &mut quiet()).unwrap();
    train_steps(&mut t, 2);
    strata_train::run::save_checkpoint(&t, &run_b).unwrap();
    drop(t);
    let b = strata_train::train(
        strata_train::run::read_run_config(&run_b).unwrap(),
        strata_train::RunOptions {
            resume: true,
            on_status: &mut quiet(),
            on_step: noop,
        },
    )
    .unwrap();
    assert_eq!((a.steps, b.steps), (5, 5));
    let (wa, wb) = (
        common::trainable(&tmp.path().join("a")),
        common::trainable(&run_b),
    );
    assert!(wa.keys().any(|k| k.starts_with("text_encoder.text_model.")));
    assert_eq!(wa.len(), wb.len());
    for (k, ta) in &wa {
        let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = wb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k} differs after resume"
        );
    }
    for f in [
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.output.join(f)).unwrap(),
            std::fs::read(b.output.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn train_text_encoder_is_refused_outside_full_and_dreambooth() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny_cfg(
        &tmp.path().join("m"),
        &tmp.path().join("d"),
        &tmp.path().join("r"),
    );
    cfg.train_text_encoder = true;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("train-text-encoder"), "{e}");
    cfg.method = Method::Full;
    cfg.text_encoder_lr = Some(1e-4);
    cfg.validate().unwrap();
    // and a kohya-style TOML names it the same way
    let c = TrainConfig::from_toml_str(
        "method = \"full\"\ntrain_text_encoder = true\ntext_encoder_lr = 5e-5\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert!(c.train_text_encoder && c.text_encoder_lr == Some(5e-5));
}
