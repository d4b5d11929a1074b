//! Tiny random models written in the real diffusers folder layout (`unet/`, `vae/`,
//! `text_encoder/`, `tokenizer/`), for tests, benchmarks and the CPU demo. Loading them goes
//! through `strata_models::loading` like any real model.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use strata_models::clip::{ClipTextConfig, ClipTextTransformer};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};
use strata_models::vae::{AutoencoderKL, VaeConfig};

/// Fills every variable of `vm` with seeded normal values: weights N(0, 1/fan_in), biases
/// N(0, 0.05²), norm scales 1 + N(0, 0.05²), embeddings N(0, 0.5²).
pub(crate) fn randomize(vm: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = vm.data().lock().expect("varmap lock");
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
        let normal = strata_models::pipeline::seeded_normal(
            &dims,
            seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            &Device::Cpu,
        )?;
        let t = if dims.len() == 1 && name.contains("norm") && name.ends_with("weight") {
            ((normal * 0.05)? + 1.0)?
        } else if dims.len() == 1 {
            (normal * 0.05)?
        } else if name.contains("embedding") {
            (normal * 0.5)?
        } else {
            (normal * (1.0 / (fan_in as f64).sqrt()))?
        };
        v.set(&t)?;
    }
    Ok(())
}

fn save(vm: &VarMap, path: &Path) -> candle_core::Result<()> {
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    vm.save(path)
}

/// A tiny byte-level BPE vocabulary (`vocab.json`, `merges.txt`) in the CLIP format:
/// 256 byte symbols, the same with `</w>`, a few merges, start and end tokens.
pub fn write_tiny_tokenizer(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let table = strata_models::tokenizer::bytes_to_unicode();
    let mut vocab: Vec<String> = table.iter().map(|(_, c)| c.to_string()).collect();
    vocab.extend(table.iter().map(|(_, c)| format!("{c}</w>")));
    let merges = [
        ("t", "h"),
        ("th", "e</w>"),
        ("r", "o"),
        ("a", "d</w>"),
        ("i", "n"),
        ("in", "g</w>"),
    ];
    for (a, b) in merges {
        vocab.push(format!("{a}{b}"));
    }
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::to_string(&map).expect("json"),
    )?;
    let mut m = String::from("#version: 0.2\n");
    for (a, b) in merges {
        m.push_str(&format!("{a} {b}\n"));
    }
    std::fs::write(dir.join("merges.txt"), m)?;
    Ok(vocab.len())
}

/// Writes a tiny random SD-layout model (tiny UNet, ×2 VAE, 2-layer width-32 CLIP with the
/// tiny vocabulary) into `dir` as a diffusers folder.
pub fn write_tiny_model(dir: &Path, seed: u64) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let vocab = write_tiny_tokenizer(&dir.join("tokenizer"))?;
    // UNet
    let ucfg = UNetConfig::tiny();
    let vm = VarMap::new();
    UNet2DConditionModel::new(ucfg.clone(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    randomize(&vm, seed)?;
    save(&vm, &dir.join("unet/diffusion_pytorch_model.safetensors"))?;
    std::fs::write(
        dir.join("unet/config.json"),
        serde_json::to_string_pretty(&ucfg.to_diffusers_json()).expect("json"),
    )?;
    // VAE
    let vcfg = VaeConfig::tiny();
    let vm = VarMap::new();
    AutoencoderKL::new(vcfg.clone(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    randomize(&vm, seed + 1)?;
    save(&vm, &dir.join("vae/diffusion_pytorch_model.safetensors"))?;
    std::fs::write(
        dir.join("vae/config.json"),
        serde_json::to_string_pretty(&vcfg.to_diffusers_json()).expect("json"),
    )?;
    // text encoder
    let tcfg = ClipTextConfig {
        vocab_size: vocab,
        ..ClipTextConfig::tiny()
    };
    let vm = VarMap::new();
    ClipTextTransformer::new(
        &tcfg,
        VarBuilder::from_varmap(&vm, DType::F32, &dev).pp("text_model"),
    )?;
    randomize(&vm, seed + 2)?;
    save(&vm, &dir.join("text_encoder/model.safetensors"))?;
    let tjson = serde_json::json!({
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": tcfg.vocab_size, "hidden_size": tcfg.hidden_size,
        "intermediate_size": tcfg.intermediate_size, "num_hidden_layers": tcfg.num_hidden_layers,
        "num_attention_heads": tcfg.num_attention_heads, "max_position_embeddings": tcfg.max_position_embeddings,
        "layer_norm_eps": tcfg.layer_norm_eps, "hidden_act": "quick_gelu",
        "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1,
    });
    std::fs::write(
        dir.join("text_encoder/config.json"),
        serde_json::to_string_pretty(&tjson).expect("json"),
    )?;
    std::fs::write(
        dir.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.35.2"}"#,
    )?;
    Ok(())
}
