//! Loading the text encoder from a diffusers folder (`text_encoder/model.safetensors` +
//! `config.json`) or from the text-encoder part of a single-file SD-1.x checkpoint
//! (`cond_stage_model.transformer.text_model.*`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::config::{Activation, ClipTextConfig};
use super::text::ClipTextTransformer;

/// Key prefixes under which a text encoder is looked for, in order: diffusers /
/// transformers 4 (`text_model.`), SD-1.x single files, old single files without the
/// `text_model` level, and transformers 5's `CLIPTextModel.save_pretrained` (no prefix).
pub const SINGLE_FILE_PREFIXES: [&str; 4] = [
    "text_model.",
    "cond_stage_model.transformer.text_model.",
    "cond_stage_model.transformer.",
    "",
];

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Config { path: PathBuf, what: String },
    #[error("no text encoder in {path}: looked for {tried}; give a diffusers model folder (with text_encoder/model.safetensors), a text_encoder/ folder, or a single-file SD-1.x .safetensors checkpoint")]
    NotFound { path: PathBuf, tried: String },
    #[error("{path} holds no CLIP text-encoder tensors (looked for `<prefix>embeddings.token_embedding.weight` with prefixes {prefixes}); SD-2.x OpenCLIP checkpoints (cond_stage_model.model.*) are not supported, convert them to diffusers first")]
    NoTensors { path: PathBuf, prefixes: String },
    // the mismatch is part of the message (named `detail`, not a `source`, so it prints once)
    #[error("{path}: text-encoder weights do not match the configuration: {detail}; check that config.json belongs to these weights")]
    Weights {
        path: PathBuf,
        detail: candle_core::Error,
    },
}

/// The configuration implied by tensor shapes under `prefix` (heads assumed 64 wide, as in
/// every released CLIP text encoder; activation quick-GELU for width 768, GELU otherwise).
pub fn infer_config(shapes: &HashMap<String, Vec<usize>>, prefix: &str) -> Option<ClipTextConfig> {
    let tok = shapes.get(&format!("{prefix}embeddings.token_embedding.weight"))?;
    let pos = shapes.get(&format!("{prefix}embeddings.position_embedding.weight"))?;
    let fc1 = shapes.get(&format!("{prefix}encoder.layers.0.mlp.fc1.weight"))?;
    let layers = (0..)
        .take_while(|i| shapes.contains_key(&format!("{prefix}encoder.layers.{i}.mlp.fc1.weight")))
        .count();
    let hidden = tok[1];
    Some(ClipTextConfig {
        vocab_size: tok[0],
        hidden_size: hidden,
        intermediate_size: fc1[0],
        num_hidden_layers: layers,
        num_attention_heads: (hidden / 64).max(1),
        max_position_embeddings: pos[0],
        layer_norm_eps: 1e-5,
        hidden_act: if hidden == 768 {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        },
    })
}

fn read_config(path: &Path) -> Result<ClipTextConfig, ClipError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClipError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ClipError::Config {
        path: path.to_path_buf(),
        what: format!("not JSON ({e})"),
    })?;
    // A full CLIPModel config nests the text part.
    let v = v.get("text_config").cloned().unwrap_or(v);
    serde_json::from_value(v).map_err(|e| ClipError::Config {
        path: path.to_path_buf(),
        what: format!("not a CLIP text config ({e}); it needs vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, max_position_embeddings"),
    })
}

/// A text encoder from one `.safetensors` file, whatever its key prefix
/// (see [`SINGLE_FILE_PREFIXES`]). `config`: `None` infers it from tensor shapes.
pub fn text_encoder_from_safetensors(
    file: &Path,
    config: Option<&ClipTextConfig>,
    dtype: DType,
    device: &Device,
) -> Result<ClipTextTransformer, ClipError> {
    let bytes_err = |e: candle_core::Error| ClipError::Weights {
        path: file.to_path_buf(),
        detail: e,
    };
    if !file.is_file() {
        return Err(ClipError::Io {
            path: file.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    // SAFETY: the file is memory-mapped read-only; like every mmap it must not be
    // truncated by another process while it is open.
    let st =
        unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }.map_err(bytes_err)?;
    let shapes: HashMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    let prefix = SINGLE_FILE_PREFIXES
        .iter()
        .find(|p| shapes.contains_key(&format!("{p}embeddings.token_embedding.weight")))
        .ok_or_else(|| ClipError::NoTensors {
            path: file.to_path_buf(),
            prefixes: SINGLE_FILE_PREFIXES
                .map(|p| if p.is_empty() { "(none)" } else { p })
                .join(", "),
        })?;
    let cfg = match config {
        Some(c) => c.clone(),
        None => infer_config(&shapes, prefix).ok_or_else(|| ClipError::Config {
            path: file.to_path_buf(),
            what: format!("cannot infer the text-encoder shape from tensors under `{prefix}` (position embedding or layer 0 missing)"),
        })?,
    };
    // SAFETY: as above.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[file], dtype, device) }
        .map_err(bytes_err)?;
    let vb = if prefix.is_empty() {
        vb
    } else {
        vb.pp(prefix.trim_end_matches('.'))
    };
    ClipTextTransformer::new(&cfg, vb).map_err(bytes_err)
}

/// A text encoder from a path: a diffusers model folder (`text_encoder/` inside), a
/// `text_encoder/` folder (`model.safetensors` or `model.fp16.safetensors` + `config.json`),
/// or a single `.safetensors` file (a diffusers `model.safetensors` with its `config.json`
/// beside it, or a single-file checkpoint whose configuration is inferred).
pub fn load_text_encoder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<ClipTextTransformer, ClipError> {
    if path.is_file() {
        let cfg_path = path.with_file_name("config.json");
        let cfg = if cfg_path.is_file() {
            Some(read_config(&cfg_path)?)
        } else {
            None
        };
        return text_encoder_from_safetensors(path, cfg.as_ref(), dtype, device);
    }
    let mut tried = Vec::new();
    for dir in [path.join("text_encoder"), path.to_path_buf()] {
        for name in ["model.safetensors", "model.fp16.safetensors"] {
            let f = dir.join(name);
            tried.push(f.display().to_string());
            if f.is_file() {
                let cfg_path = dir.join("config.json");
                let cfg = if cfg_path.is_file() {
                    Some(read_config(&cfg_path)?)
                } else {
                    None
                };
                return text_encoder_from_safetensors(&f, cfg.as_ref(), dtype, device);
            }
        }
    }
    Err(ClipError::NotFound {
        path: path.to_path_buf(),
        tried: tried.join(", "),
    })
}
