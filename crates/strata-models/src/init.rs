//! Randomly initialised models of a named size, written as a diffusers folder (`unet/`,
//! `vae/`, `text_encoder/`, `tokenizer/`, configs) that `crate::loading` reads like any
//! downloaded model. The starting point of the embedded base model (`strata model init`), which
//! `strata train --method vae` and `--method full` then train from scratch.
//!
//! The tokenizer is the real CLIP BPE vocabulary (49 408 tokens), written as `vocab.json` +
//! `merges.txt` so the folder is self-contained.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::clip::{ClipTextConfig, ClipTextTransformer};
use crate::error::{ce, io, ModelError, Result};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

/// A named model size.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub text: ClipTextConfig,
    /// The image side the preset is meant for.
    pub resolution: usize,
}

/// Names accepted by [`preset`].
pub const PRESETS: &[&str] = &["base64", "tiny"];

/// The preset called `name`.
pub fn preset(name: &str) -> Result<Preset> {
    let text = |width: usize, layers: usize, heads: usize| ClipTextConfig {
        vocab_size: 49408,
        hidden_size: width,
        intermediate_size: 2 * width,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        ..ClipTextConfig::tiny()
    };
    Ok(match name {
        // 64-px images, ×4 VAE (16×16×4 latents), three-level UNet with cross-attention at
        // the two upper levels, small CLIP text transformer over the full vocabulary.
        "base64" => Preset {
            name: "base64",
            summary: "64 px images, x4 VAE 16/32/32, UNet 48/96/96 (cross-attention at 2 levels), CLIP width 64 x 2 layers",
            unet: UNetConfig {
                block_out_channels: vec![48, 96, 96],
                cross_attention: vec![true, true, false],
                layers_per_block: 1,
                attention_heads: vec![2, 4, 4],
                cross_attention_dim: 64,
                norm_num_groups: 8,
                ..UNetConfig::small()
            },
            vae: VaeConfig {
                block_out_channels: vec![16, 32, 32],
                layers_per_block: 1,
                norm_num_groups: 8,
                ..VaeConfig::tiny()
            },
            text: text(64, 2, 4),
            resolution: 64,
        },
        // For tests: the library's tiny configurations (×2 VAE).
        "tiny" => Preset {
            name: "tiny",
            summary: "tests only: UNet 32/64, x2 VAE 8/16, CLIP width 32 x 2 layers",
            unet: UNetConfig::tiny(),
            vae: VaeConfig::tiny(),
            text: text(32, 2, 4),
            resolution: 32,
        },
        other => {
            return Err(ModelError::Config {
                field: "preset".into(),
                what: format!("unknown preset {other:?}: use one of {}", PRESETS.join(", ")),
            })
        }
    })
}

/// Writes the tokenizer as a diffusers `tokenizer/` folder: `vocab.json`, `merges.txt` and the
/// two small configs naming the special tokens.
pub fn write_tokenizer(tok: &ClipTokenizer, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir, "creating"))?;
    let mut vocab = serde_json::Map::new();
    for id in 0..tok.vocab_size() as u32 {
        if let Some(t) = tok.token(id) {
            vocab.insert(t.to_string(), serde_json::json!(id));
        }
    }
    crate::safetensors_io::write_atomic(
        &dir.join("vocab.json"),
        serde_json::to_string(&vocab).expect("json").as_bytes(),
    )?;
    let mut merges = String::from("#version: 0.2\n");
    for (a, b) in tok.merges() {
        merges.push_str(&a);
        merges.push(' ');
        merges.push_str(&b);
        merges.push('\n');
    }
    crate::safetensors_io::write_atomic(&dir.join("merges.txt"), merges.as_bytes())?;
    let bos = tok
        .token(tok.bos_id())
        .unwrap_or("<|startoftext|>")
        .to_string();
    let eos = tok
        .token(tok.eos_id())
        .unwrap_or("<|endoftext|>")
        .to_string();
    let cfg = serde_json::json!({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
        "bos_token": bos, "eos_token": eos, "pad_token": eos, "unk_token": eos,
        "do_lower_case": true,
    });
    crate::safetensors_io::write_atomic(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&cfg).expect("json").as_bytes(),
    )?;
    let special =
        serde_json::json!({"bos_token": bos, "eos_token": eos, "pad_token": eos, "unk_token": eos});
    crate::safetensors_io::write_atomic(
        &dir.join("special_tokens_map.json"),
        serde_json::to_string_pretty(&special)
            .expect("json")
            .as_bytes(),
    )
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    crate::safetensors_io::write_atomic(
        path,
        serde_json::to_string_pretty(v).expect("json").as_bytes(),
    )
}

/// Writes every variable of `vm` in `dtype` as a diffusers weights file.
pub(crate) fn save_varmap(vm: &VarMap, path: &Path, dtype: DType) -> Result<()> {
    let data = vm.data().lock().expect("varmap lock");
    let mut tensors = HashMap::new();
    for (n, v) in data.iter() {
        tensors.insert(
            n.clone(),
            v.as_tensor().to_dtype(dtype).map_err(ce("converting"))?,
        );
    }
    crate::safetensors_io::save(
        path,
        &tensors,
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
    )
}

/// `text_encoder/config.json` for a CLIP text config and tokenizer.
pub fn text_encoder_json(cfg: &ClipTextConfig, tok: &ClipTokenizer) -> serde_json::Value {
    text_encoder_config(cfg, tok.bos_id(), tok.eos_id(), tok.pad_id())
}

/// `text_encoder/config.json` for a CLIP text config with the given special token ids.
pub fn text_encoder_config(
    cfg: &ClipTextConfig,
    bos: u32,
    eos: u32,
    pad: u32,
) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "layer_norm_eps": cfg.layer_norm_eps, "hidden_act": "quick_gelu",
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
    })
}

/// Writes a randomly initialised model of `preset` into `out` (a new folder, written under a
/// temporary name and renamed), with `tokenizer` (the real CLIP vocabulary). Same seed → same
/// bytes. Returns `out`.
pub fn write_model(
    preset: &Preset,
    tokenizer: &ClipTokenizer,
    out: &Path,
    seed: u64,
) -> Result<PathBuf> {
    if tokenizer.vocab_size() != preset.text.vocab_size {
        return Err(ModelError::Config {
            field: "tokenizer".into(),
            what: format!(
                "the tokenizer has {} tokens, the preset's text encoder {}; use the CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz or a tokenizer/ folder)",
                tokenizer.vocab_size(),
                preset.text.vocab_size
            ),
        });
    }
    if out.exists() {
        return Err(ModelError::Config {
            field: "out".into(),
            what: format!("{} already exists; choose a new folder", out.display()),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent, "creating"))?;
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.init-tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp, "removing a stale temporary folder"))?;
    }
    let dev = Device::Cpu;
    for sub in ["unet", "vae", "text_encoder", "tokenizer"] {
        let d = tmp.join(sub);
        std::fs::create_dir_all(&d).map_err(io(&d, "creating"))?;
    }
    // UNet
    let vm = VarMap::new();
    UNet2DConditionModel::new(
        preset.unet.clone(),
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )
    .map_err(ce("building the UNet"))?;
    randomize(&vm, seed).map_err(ce("initialising the UNet"))?;
    save_varmap(
        &vm,
        &tmp.join("unet/diffusion_pytorch_model.safetensors"),
        DType::F32,
    )?;
    write_json(
        &tmp.join("unet/config.json"),
        &preset.unet.to_diffusers_json(),
    )?;
    // VAE
    let vm = VarMap::new();
    AutoencoderKL::new(
        preset.vae.clone(),
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )
    .map_err(ce("building the VAE"))?;
    randomize(&vm, seed.wrapping_add(1)).map_err(ce("initialising the VAE"))?;
    save_varmap(
        &vm,
        &tmp.join("vae/diffusion_pytorch_model.safetensors"),
        DType::F32,
    )?;
    let mut vjson = preset.vae.to_diffusers_json();
    vjson["sample_size"] = serde_json::json!(preset.resolution);
    write_json(&tmp.join("vae/config.json"), &vjson)?;
    // text encoder
    let vm = VarMap::new();
    ClipTextTransformer::new(
        &preset.text,
        VarBuilder::from_varmap(&vm, DType::F32, &dev).pp("text_model"),
    )
    .map_err(ce("building the text encoder"))?;
    randomize(&vm, seed.wrapping_add(2)).map_err(ce("initialising the text encoder"))?;
    save_varmap(&vm, &tmp.join("text_encoder/model.safetensors"), DType::F32)?;
    write_json(
        &tmp.join("text_encoder/config.json"),
        &text_encoder_json(&preset.text, tokenizer),
    )?;
    write_tokenizer(tokenizer, &tmp.join("tokenizer"))?;
    write_json(
        &tmp.join("model_index.json"),
        &serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.35.2",
            "strata_preset": preset.name,
            "strata_seed": seed,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
        }),
    )?;
    crate::diffusers_folder::complete_model_index(&tmp)?;
    std::fs::rename(&tmp, out).map_err(io(out, "renaming the model folder into place"))?;
    Ok(out.to_path_buf())
}

/// Copies the diffusers folder `src` to the new folder `dst` with every `X.safetensors`
/// converted to half precision as `X.fp16.safetensors` (the name diffusers uses; the loader
/// falls back to it and converts to the compute dtype), halving the size. Other files are
/// copied; run folders' extras (checkpoints, logs) are not part of a model folder. Returns the
/// total size in bytes of `dst`.
pub fn export_half(src: &Path, dst: &Path) -> Result<u64> {
    for sub in ["unet", "vae", "text_encoder"] {
        if !src.join(sub).is_dir() {
            return Err(ModelError::Config {
                field: "model".into(),
                what: format!(
                    "{} has no {sub}/ folder: not a diffusers model folder",
                    src.display()
                ),
            });
        }
    }
    if dst.exists() {
        return Err(ModelError::Config {
            field: "out".into(),
            what: format!("{} already exists; choose a new folder", dst.display()),
        });
    }
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = parent.join(format!(
        ".{}.export-tmp",
        dst.file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp, "removing a stale temporary folder"))?;
    }
    let mut total = 0u64;
    convert_dir(src, &tmp, &mut total)?;
    std::fs::rename(&tmp, dst).map_err(io(dst, "renaming the exported folder into place"))?;
    Ok(total)
}

fn convert_dir(src: &Path, dst: &Path, total: &mut u64) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(io(dst, "creating"))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(io(src, "listing"))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() {
            convert_dir(&p, &dst.join(&name), total)?;
        } else if let Some(stem) = name.strip_suffix(".safetensors") {
            let stem = stem.strip_suffix(".fp16").unwrap_or(stem);
            let (tensors, meta) = crate::safetensors_io::load(&p, &Device::Cpu)?;
            let mut half = HashMap::new();
            for (k, t) in tensors {
                half.insert(k, t.to_dtype(DType::F16).map_err(ce("converting to f16"))?);
            }
            let out = dst.join(format!("{stem}.fp16.safetensors"));
            crate::safetensors_io::save(&out, &half, Some(meta))?;
            *total += std::fs::metadata(&out)
                .map_err(io(&out, "reading"))
                .map(|m| m.len())?;
        } else {
            let out = dst.join(&name);
            std::fs::copy(&p, &out).map_err(io(&p, "copying"))?;
            *total += std::fs::metadata(&out)
                .map_err(io(&out, "reading"))
                .map(|m| m.len())?;
        }
    }
    Ok(())
}

/// Fills every variable of `vm` with seeded normal values: weights N(0, 1/fan_in), biases
/// N(0, 0.05²), norm scales 1 + N(0, 0.05²), embeddings N(0, 0.5²).
pub fn randomize(vm: &VarMap, seed: u64) -> candle_core::Result<()> {
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
        let normal = crate::pipeline::seeded_normal(
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
