//! CLIP text encoder: parity with transformers.CLIPTextModel (fixture from
//! scripts/fixtures/text_clip.py) and with candle-transformers' CLIP, single-file loading,
//! and a finite-difference gradient check of the token-embedding path.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use strata_models::clip::{
    infer_config, load_text_encoder, text_encoder_from_safetensors, Activation, ClipTextConfig,
    ClipTextTransformer,
};
use strata_models::lora::{LoraLinear, ProjKind};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/clip_tiny")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn fixture_io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("io.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn matches_transformers_clip_text_model() {
    let model = load_text_encoder(&fixture_dir(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.config.hidden_act, Activation::QuickGelu);
    assert_eq!(model.config.num_attention_heads, 4);
    let io = fixture_io();
    let ids = io["input_ids"].to_dtype(DType::U32).unwrap();
    let h = model.forward(&ids).unwrap();
    let d = max_abs_diff(&h, &io["last_hidden_state"]);
    assert!(d < 1e-4, "last_hidden_state max |diff| = {d}");
    eprintln!("transformers parity: last_hidden_state max |diff| = {d:.2e}");
    let pooled = model.pooled(&h, &ids, 999).unwrap();
    let d = max_abs_diff(&pooled, &io["pooler_output"]);
    assert!(d < 1e-4, "pooler_output max |diff| = {d}");
    eprintln!("transformers parity: pooler_output max |diff| = {d:.2e}");
}

#[test]
fn loads_single_file_checkpoint_keys() {
    // Re-key the fixture the way a single-file SD-1.x checkpoint stores it, next to tensors
    // of other parts of the model.
    let te = fixture_dir().join("text_encoder");
    let tensors =
        candle_core::safetensors::load(te.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut single: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (format!("cond_stage_model.transformer.{k}"), v.clone()))
        .collect();
    single.insert(
        "model.diffusion_model.out.2.bias".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sd15-like.safetensors");
    candle_core::safetensors::save(&single, &file).unwrap();

    let cfg: ClipTextConfig =
        serde_json::from_str(&std::fs::read_to_string(te.join("config.json")).unwrap()).unwrap();
    let model = text_encoder_from_safetensors(&file, Some(&cfg), DType::F32, &Device::Cpu).unwrap();
    let io = fixture_io();
    let ids = io["input_ids"].to_dtype(DType::U32).unwrap();
    let d = max_abs_diff(&model.forward(&ids).unwrap(), &io["last_hidden_state"]);
    assert!(d < 1e-4, "single-file load max |diff| = {d}");

    // Without a config the shape is inferred (heads assume width 64 per head).
    let shapes: HashMap<String, Vec<usize>> = single
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    let inferred = infer_config(&shapes, "cond_stage_model.transformer.text_model.").unwrap();
    assert_eq!(
        (
            inferred.vocab_size,
            inferred.hidden_size,
            inferred.intermediate_size,
            inferred.num_hidden_layers,
            inferred.max_position_embeddings
        ),
        (1000, 32, 48, 2, 77)
    );

    // A mis-shaped config is an error naming the file.
    let mut wrong = cfg.clone();
    wrong.intermediate_size = 50;
    let err =
        text_encoder_from_safetensors(&file, Some(&wrong), DType::F32, &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sd15-like.safetensors") && msg.contains("fc1"),
        "{msg}"
    );

    // A file without a text encoder says so.
    let empty = dir.path().join("unet-only.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([(
            "model.diffusion_model.out.2.bias".to_string(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        )]),
        &empty,
    )
    .unwrap();
    let msg = load_text_encoder(&empty, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no CLIP text-encoder tensors"), "{msg}");
}

/// Deterministic pseudo-random weights for every tensor of a text encoder.
fn random_weights(cfg: &ClipTextConfig, dtype: DType, seed: u64) -> HashMap<String, Tensor> {
    let d = cfg.hidden_size;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "text_model.embeddings.token_embedding.weight".into(),
            vec![cfg.vocab_size, d],
        ),
        (
            "text_model.embeddings.position_embedding.weight".into(),
            vec![cfg.max_position_embeddings, d],
        ),
        ("text_model.final_layer_norm.weight".into(), vec![d]),
        ("text_model.final_layer_norm.bias".into(), vec![d]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("text_model.encoder.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            shapes.push((format!("{p}.self_attn.{proj}.weight"), vec![d, d]));
            shapes.push((format!("{p}.self_attn.{proj}.bias"), vec![d]));
        }
        shapes.push((
            format!("{p}.mlp.fc1.weight"),
            vec![cfg.intermediate_size, d],
        ));
        shapes.push((format!("{p}.mlp.fc1.bias"), vec![cfg.intermediate_size]));
        shapes.push((
            format!("{p}.mlp.fc2.weight"),
            vec![d, cfg.intermediate_size],
        ));
        shapes.push((format!("{p}.mlp.fc2.bias"), vec![d]));
        for ln in ["layer_norm1", "layer_norm2"] {
            shapes.push((format!("{p}.{ln}.weight"), vec![d]));
            shapes.push((format!("{p}.{ln}.bias"), vec![d]));
        }
    }
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let is_ln_weight = name.contains("norm") && name.ends_with("weight");
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    if is_ln_weight {
                        1.0 + 0.3 * next()
                    } else {
                        0.35 * next()
                    }
                })
                .collect();
            let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            (name, t)
        })
        .collect()
}

#[test]
fn matches_candle_transformers_clip() {
    let cfg = ClipTextConfig {
        vocab_size: 300,
        hidden_size: 48,
        intermediate_size: 80,
        num_hidden_layers: 2,
        num_attention_heads: 6,
        max_position_embeddings: 77,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    };
    let weights = random_weights(&cfg, DType::F32, 11);
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let ours = ClipTextTransformer::new(&cfg, vb.pp("text_model")).unwrap();
    use candle_transformers::models::clip::text_model as ct;
    let ccfg = ct::ClipTextConfig {
        vocab_size: cfg.vocab_size,
        embed_dim: cfg.hidden_size,
        activation: ct::Activation::QuickGelu,
        intermediate_size: cfg.intermediate_size,
        max_position_embeddings: cfg.max_position_embeddings,
        pad_with: None,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        projection_dim: cfg.hidden_size,
    };
    let theirs = ct::ClipTextTransformer::new(vb.pp("text_model"), &ccfg).unwrap();
    let ids: Vec<u32> = (0..2 * 77).map(|i| ((i * 37 + 5) % 299) as u32).collect();
    let ids = Tensor::from_vec(ids, (2, 77), &Device::Cpu).unwrap();
    let a = ours.forward(&ids).unwrap();
    let b = theirs.forward_with_mask(&ids, usize::MAX).unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "last hidden state max |diff| = {d}");
    eprintln!("candle-transformers parity: max |diff| = {d:.2e}");
    // Shorter sequences use the first positions.
    let short = ids.narrow(1, 0, 9).unwrap();
    let d = max_abs_diff(
        &ours.forward(&short).unwrap(),
        &theirs.forward_with_mask(&short, usize::MAX).unwrap(),
    );
    assert!(d < 1e-4, "9-token max |diff| = {d}");
}

#[test]
fn token_embedding_path_gradient_check() {
    // f64 tiny model; two learnable extra token rows (textual inversion) used in the prompt.
    let cfg = ClipTextConfig {
        vocab_size: 20,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        max_position_embeddings: 10,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    };
    let dev = Device::Cpu;
    let weights = random_weights(&cfg, DType::F64, 3);
    let vb = VarBuilder::from_tensors(weights, DType::F64, &dev);
    let mut model = ClipTextTransformer::new(&cfg, vb.pp("text_model")).unwrap();
    let extra0: Vec<f64> = (0..16).map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.1).collect();
    let extra = Var::from_vec(extra0.clone(), (2, 8), &dev).unwrap();
    model
        .set_extra_tokens(Some(extra.as_tensor().clone()))
        .unwrap();
    // 20 and 21 are the new tokens; 21 appears twice, 20 once.
    let ids = Tensor::from_vec(vec![0u32, 5, 21, 20, 7, 21], (1, 6), &dev).unwrap();
    let r = Tensor::from_vec(
        (0..48)
            .map(|i| ((i * 13 % 17) as f64 - 8.0) / 8.0)
            .collect::<Vec<_>>(),
        (1, 6, 8),
        &dev,
    )
    .unwrap();
    let loss_of = |m: &ClipTextTransformer| -> Tensor {
        (m.forward(&ids).unwrap() * &r).unwrap().sum_all().unwrap()
    };

    let grads = loss_of(&model).backward().unwrap();
    let g = grads
        .get(extra.as_tensor())
        .expect("gradient reaches the extra token rows");
    let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-6;
    let mut worst = 0f64;
    for i in 0..extra0.len() {
        let f = |delta: f64| {
            let mut v = extra0.clone();
            v[i] += delta;
            let mut m = model.clone();
            m.set_extra_tokens(Some(Tensor::from_vec(v, (2, 8), &dev).unwrap()))
                .unwrap();
            loss_of(&m).to_scalar::<f64>().unwrap()
        };
        let fd = (f(h) - f(-h)) / (2.0 * h);
        let err = (fd - g[i]).abs() / (1.0 + fd.abs());
        worst = worst.max(err);
        assert!(
            err < 1e-6,
            "extra row element {i}: analytic {} vs numeric {fd}",
            g[i]
        );
    }
    assert!(
        g.iter().any(|x| x.abs() > 1e-3),
        "gradient is not trivially zero"
    );
    eprintln!("extra-token gradient: worst relative error {worst:.2e}");

    // The embedding override (forward_embeds) carries gradient to any caller tensor, and a
    // trainable base table gets gradient only in the rows the prompt uses.
    let base = Var::from_tensor(&model.token_embedding.weight).unwrap();
    let mut full = model.clone();
    full.token_embedding.weight = base.as_tensor().clone();
    let grads = loss_of(&full).backward().unwrap();
    let gb = grads
        .get(base.as_tensor())
        .expect("gradient reaches the base table");
    let norms: Vec<f64> = gb.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
    for (row, n) in norms.iter().enumerate() {
        let used = [0usize, 5, 7].contains(&row);
        assert_eq!(*n > 0.0, used, "row {row}: gradient norm {n}");
    }
    // Position embeddings and a projection weight receive gradient too (full fine-tune / LoRA).
    let q = Var::from_tensor(&model.layers[0].self_attn.q_proj.weight().clone()).unwrap();
    let mut m2 = model.clone();
    m2.layers[0].self_attn.q_proj = LoraLinear::from_parts(
        "q",
        ProjKind::Attention,
        q.as_tensor().clone(),
        m2.layers[0].self_attn.q_proj.bias().cloned(),
    );
    let gq = loss_of(&m2).backward().unwrap();
    let gq = gq.get(q.as_tensor()).expect("gradient reaches q_proj");
    let gq00: f64 = gq.get(0).unwrap().get(0).unwrap().to_scalar().unwrap();
    let w0: Vec<Vec<f64>> = model.layers[0].self_attn.q_proj.weight().to_vec2().unwrap();
    let f = |delta: f64| {
        let mut w = w0.clone();
        w[0][0] += delta;
        let flat: Vec<f64> = w.concat();
        let mut m = model.clone();
        m.layers[0].self_attn.q_proj = LoraLinear::from_parts(
            "q",
            ProjKind::Attention,
            Tensor::from_vec(flat, (8, 8), &dev).unwrap(),
            m.layers[0].self_attn.q_proj.bias().cloned(),
        );
        loss_of(&m).to_scalar::<f64>().unwrap()
    };
    let fd = (f(h) - f(-h)) / (2.0 * h);
    assert!(
        (fd - gq00).abs() < 1e-6 * (1.0 + fd.abs()),
        "q_proj[0,0]: analytic {gq00} vs numeric {fd}"
    );
}

#[test]
fn ids_beyond_the_table_are_an_error() {
    let cfg = ClipTextConfig {
        vocab_size: 20,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        max_position_embeddings: 10,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    };
    let vb = VarBuilder::from_tensors(
        random_weights(&cfg, DType::F32, 1),
        DType::F32,
        &Device::Cpu,
    );
    let model = ClipTextTransformer::new(&cfg, vb.pp("text_model")).unwrap();
    let ids = Tensor::from_vec(vec![0u32, 20], (1, 2), &Device::Cpu).unwrap();
    let msg = model.forward(&ids).unwrap_err().to_string();
    assert!(msg.contains("outside the embedding table"), "{msg}");
}
