//! Tiny random models written in the real diffusers folder layout (`unet/`, `vae/`,
//! `text_encoder/`, `tokenizer/`), for tests, benchmarks and the CPU demo. Loading them goes
//! through `crate::loading` like any real model.

use std::path::Path;

use crate::clip::{ClipTextConfig, ClipTextTransformer};
use crate::init::randomize;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

fn save(vm: &VarMap, path: &Path) -> candle_core::Result<()> {
    crate::init::save_varmap(vm, path, DType::F32).map_err(candle_core::Error::wrap)
}

/// A tiny byte-level BPE vocabulary (`vocab.json`, `merges.txt`) in the CLIP format:
/// 256 byte symbols, the same with `</w>`, a few merges, start and end tokens.
pub fn write_tiny_tokenizer(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let table = crate::tokenizer::bytes_to_unicode();
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
    let (bos, eos) = (vocab as u32 - 2, vocab as u32 - 1);
    let tjson = crate::init::text_encoder_config(&tcfg, bos, eos, eos);
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
