//! CLIP checkpoints for the tagger: transformers' `CLIPModel` folders and open_clip state
//! dicts (RemoteCLIP, GeoRSCLIP, open_clip's hub layout), run by the same two towers
//! (`strata_eval::clipscore`).
//!
//! An open_clip state dict is renamed onto transformers' names ([`remap_open_clip`]):
//! `visual.conv1` → patch embedding, `visual.class_embedding`, `visual.positional_embedding`,
//! `ln_pre` / `ln_post`, every `resblocks.N` (`attn.in_proj_*` split into `q/k/v_proj`,
//! `attn.out_proj`, `ln_1/2`, `mlp.c_fc/c_proj`), `visual.proj` and `text_projection`
//! (transposed: open_clip multiplies `x @ proj`, transformers stores a `Linear` weight),
//! `token_embedding`, `positional_embedding`, `ln_final`, `logit_scale`.
//!
//! What open_clip does not store and is taken from elsewhere:
//! * the activation: `quick_gelu` of `open_clip_config.json` (or of an open_clip model-config
//!   JSON given with [`ClipOptions::config`]); without a config, [`ClipOptions::quick_gelu`],
//!   else the file name ([`activation_from_name`]: `*quickgelu*` and GeoRSCLIP's
//!   `RS5M_ViT-B-32*` use quick GELU), else exact GELU (open_clip's default for `ViT-B-32`,
//!   what RemoteCLIP runs with);
//! * the head counts: `vision_cfg.head_width` / `text_cfg.heads` of the config, else width / 64
//!   (every open_clip ViT-B/L/H config);
//! * the tokenizer: none ships with an open_clip checkpoint. In order: [`ClipOptions::tokenizer`],
//!   `vocab.json` + `merges.txt` or `bpe_simple_vocab_16e6.txt.gz` beside the weights, else the
//!   CLIP BPE vocabulary built into this crate (the repository's `models/strata-base` one);
//! * the image preprocessing: shortest side to the model size (Pillow bicubic), torchvision's
//!   centre crop, `preprocess_cfg.mean/std` of the config (else CLIP's).
//!
//! Torch `.pt` / `.bin` zip checkpoints are read as data (candle's pickle parser, nothing is
//! executed), including training checkpoints that wrap the weights in `state_dict` with
//! `module.` prefixes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use strata_eval::clipscore::{ClipScorer, CLIP_MEAN, CLIP_STD};
use strata_image::{Crop, RgbImage};
use strata_models::tokenizer::ClipTokenizer;

use crate::error::{CaptionerError, Result};

/// OpenAI's CLIP BPE merges (the repository's `models/strata-base` tokenizer): the
/// vocabulary of every CLIP / open_clip ViT checkpoint.
const EMBEDDED_MERGES: &str = include_str!("../../../models/strata-base/tokenizer/merges.txt");

/// Where a CLIP's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipLayout {
    /// transformers' `CLIPModel` (`vision_model.*`, `text_model.*`).
    Transformers,
    /// An open_clip state dict (`visual.*`, `transformer.*`).
    OpenClip,
}

impl ClipLayout {
    pub fn name(self) -> &'static str {
        match self {
            ClipLayout::Transformers => "transformers",
            ClipLayout::OpenClip => "open_clip",
        }
    }
}

/// What open_clip checkpoints do not carry (see the module header).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClipOptions {
    /// Quick GELU (`x·σ(1.702x)`) instead of exact GELU, for an open_clip checkpoint without
    /// a config. A config that says otherwise is an error.
    pub quick_gelu: Option<bool>,
    /// An `open_clip_config.json` or open_clip model-config JSON (`ViT-B-32.json`), for a
    /// checkpoint without one beside it.
    pub config: Option<PathBuf>,
    /// A tokenizer: a BPE `.txt(.gz)` file or a folder with `vocab.json` + `merges.txt`.
    pub tokenizer: Option<PathBuf>,
}

/// A loaded CLIP (either layout) with its preprocessing.
pub struct ClipModel {
    pub scorer: ClipScorer,
    pub layout: ClipLayout,
    /// The weights file read.
    pub weights: PathBuf,
    /// The folder or file the user gave.
    pub source: PathBuf,
    /// FNV-1a 64 of the weights file, hex: identifies the model in head files.
    pub fingerprint: String,
    /// Joint image-text embedding width.
    pub embed_dim: usize,
    /// How the activation, heads and tokenizer were chosen (for provenance).
    pub notes: Vec<String>,
    device: Device,
}

fn weights_err(path: &Path, what: impl Into<String>, hint: impl Into<String>) -> CaptionerError {
    CaptionerError::Weights {
        path: path.to_path_buf(),
        what: what.into(),
        hint: hint.into(),
    }
}

fn eval_err(path: &Path, e: strata_eval::EvalError) -> CaptionerError {
    weights_err(
        path,
        strata_eval::error::chain(&e),
        "give a transformers CLIP folder or an open_clip checkpoint (see docs/caption-clip.md)",
    )
}

const HINT: &str = "give a transformers CLIP folder (config.json + model.safetensors), an open_clip hub folder (open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin) or an open_clip checkpoint file (.pt / .bin / .safetensors, e.g. RemoteCLIP-ViT-B-32.pt)";

/// The weights file of a CLIP folder or file.
fn weights_file(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(weights_err(path, "no such file or folder", HINT));
    }
    for name in [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin",
        "model.safetensors",
        "pytorch_model.bin",
    ] {
        let f = path.join(name);
        if f.is_file() {
            return Ok(f);
        }
    }
    // A folder holding a single checkpoint file (RemoteCLIP, GeoRSCLIP downloads).
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| CaptionerError::Io {
            path: path.to_path_buf(),
            what: "listing the CLIP folder".into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("pt" | "pth" | "bin" | "safetensors")
                )
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(weights_err(path, "the folder holds no CLIP weights", HINT)),
        _ => Err(weights_err(
            path,
            format!(
                "the folder holds several checkpoint files ({}); name one",
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            HINT,
        )),
    }
}

/// Every tensor of a weights file as f32, unwrapping a training checkpoint's `state_dict`
/// and `module.` prefixes.
pub fn read_checkpoint(file: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, u64)> {
    let bytes = std::fs::read(file).map_err(|source| CaptionerError::Io {
        path: file.to_path_buf(),
        what: "reading the CLIP weights".into(),
        source,
    })?;
    let fingerprint = strata_io::hash::fnv1a64(&bytes);
    let mut tensors = None;
    if bytes.starts_with(b"PK\x03\x04") {
        // open_clip training checkpoints: {"epoch", "state_dict", "optimizer", ...}
        if let Ok(list) = candle_core::pickle::read_all_with_key(file, Some("state_dict")) {
            let mut m = HashMap::new();
            for (k, t) in list {
                m.insert(k, t.to_dtype(candle_core::DType::F32)?.to_device(device)?);
            }
            if !m.is_empty() {
                tensors = Some(m);
            }
        }
    }
    let tensors = match tensors {
        Some(t) => t,
        None => strata_eval::weights::read_tensors_from(&bytes, file, device)
            .map_err(|e| eval_err(file, e))?,
    };
    let stripped = tensors
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .collect();
    Ok((stripped, fingerprint))
}

/// Which layout a set of tensor names is.
pub fn detect_layout(tensors: &HashMap<String, Tensor>) -> Option<ClipLayout> {
    if tensors.contains_key("vision_model.embeddings.patch_embedding.weight") {
        Some(ClipLayout::Transformers)
    } else if tensors.contains_key("visual.conv1.weight") {
        Some(ClipLayout::OpenClip)
    } else {
        None
    }
}

/// Renames an open_clip CLIP state dict onto transformers' `CLIPModel` names (module header).
/// Tensors with no counterpart keep their name, so the model builder lists them as unexpected.
pub fn remap_open_clip(
    tensors: HashMap<String, Tensor>,
    file: &Path,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (k, t) in tensors {
        // open_clip's CustomTextCLIP keeps the text tower under `text.`
        let k = k.strip_prefix("text.").map(str::to_string).unwrap_or(k);
        let (tower, rest) = if let Some(r) = k.strip_prefix("visual.") {
            ("vision_model", r)
        } else {
            ("text_model", k.as_str())
        };
        let block = |r: &str| -> Option<(usize, String)> {
            let r = r.strip_prefix("transformer.resblocks.")?;
            let (n, tail) = r.split_once('.')?;
            Some((n.parse().ok()?, tail.to_string()))
        };
        if let Some((n, tail)) = block(rest) {
            let p = format!("{tower}.encoder.layers.{n}");
            match tail.as_str() {
                "attn.in_proj_weight" | "attn.in_proj_bias" => {
                    let kind = if tail.ends_with("weight") {
                        "weight"
                    } else {
                        "bias"
                    };
                    let rows = t.dim(0)?;
                    if rows % 3 != 0 {
                        return Err(CaptionerError::BadField {
                            path: file.to_path_buf(),
                            field: k.clone(),
                            what: format!("{rows} rows, not three equal q/k/v parts"),
                        });
                    }
                    let d = rows / 3;
                    for (i, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        out.insert(
                            format!("{p}.self_attn.{name}.{kind}"),
                            t.narrow(0, i * d, d)?.contiguous()?,
                        );
                    }
                    continue;
                }
                _ => {}
            }
            let mapped = tail
                .strip_prefix("attn.out_proj.")
                .map(|s| format!("self_attn.out_proj.{s}"))
                .or_else(|| {
                    tail.strip_prefix("ln_1.")
                        .map(|s| format!("layer_norm1.{s}"))
                })
                .or_else(|| {
                    tail.strip_prefix("ln_2.")
                        .map(|s| format!("layer_norm2.{s}"))
                })
                .or_else(|| {
                    tail.strip_prefix("mlp.c_fc.")
                        .map(|s| format!("mlp.fc1.{s}"))
                })
                .or_else(|| {
                    tail.strip_prefix("mlp.c_proj.")
                        .map(|s| format!("mlp.fc2.{s}"))
                });
            match mapped {
                Some(m) => out.insert(format!("{p}.{m}"), t),
                None => out.insert(k.clone(), t),
            };
            continue;
        }
        let (name, t) = match (tower, rest) {
            ("vision_model", "conv1.weight") => {
                ("vision_model.embeddings.patch_embedding.weight".into(), t)
            }
            ("vision_model", "class_embedding") => {
                ("vision_model.embeddings.class_embedding".into(), t)
            }
            ("vision_model", "positional_embedding") => (
                "vision_model.embeddings.position_embedding.weight".into(),
                t,
            ),
            ("vision_model", "proj") => ("visual_projection.weight".into(), t.t()?.contiguous()?),
            ("vision_model", r) if r.starts_with("ln_pre.") => {
                (format!("vision_model.pre_layrnorm.{}", &r[7..]), t)
            }
            ("vision_model", r) if r.starts_with("ln_post.") => {
                (format!("vision_model.post_layernorm.{}", &r[8..]), t)
            }
            (_, "token_embedding.weight") => {
                ("text_model.embeddings.token_embedding.weight".into(), t)
            }
            (_, "positional_embedding") => {
                ("text_model.embeddings.position_embedding.weight".into(), t)
            }
            (_, "text_projection") => ("text_projection.weight".into(), t.t()?.contiguous()?),
            (_, r) if r.starts_with("ln_final.") => {
                (format!("text_model.final_layer_norm.{}", &r[9..]), t)
            }
            (_, "logit_scale") => ("logit_scale".into(), t),
            // the causal mask open_clip registers as a buffer in some versions
            (_, "attn_mask") => continue,
            _ => (k.clone(), t),
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// The open_clip model config (`model_cfg` of an `open_clip_config.json`, or the root of an
/// open_clip model-config JSON), with the preprocessing config when there is one.
fn read_open_clip_config(path: &Path) -> Result<(serde_json::Value, serde_json::Value)> {
    let text = std::fs::read_to_string(path).map_err(|source| CaptionerError::Io {
        path: path.to_path_buf(),
        what: "reading the open_clip config".into(),
        source,
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CaptionerError::BadField {
            path: path.to_path_buf(),
            field: "(file)".into(),
            what: format!("not JSON ({e})"),
        })?;
    let model = if v.get("model_cfg").is_some() {
        v["model_cfg"].clone()
    } else {
        v.clone()
    };
    if !model.is_object() || model.get("vision_cfg").is_none() {
        return Err(CaptionerError::BadField {
            path: path.to_path_buf(),
            field: "model_cfg.vision_cfg".into(),
            what: "missing: not an open_clip model config".into(),
        });
    }
    for (tower, key, ok) in [
        ("vision_cfg", "timm_model_name", None),
        ("text_cfg", "hf_model_name", None),
        ("vision_cfg", "attentional_pool", Some(false)),
        ("vision_cfg", "final_ln_after_pool", Some(false)),
        ("text_cfg", "final_ln_after_pool", Some(false)),
        ("text_cfg", "embed_cls", Some(false)),
        ("text_cfg", "no_causal_mask", Some(false)),
    ] {
        let val = &model[tower][key];
        let bad = match ok {
            None => !val.is_null(),
            Some(b) => val.as_bool().is_some_and(|v| v != b),
        };
        if bad {
            return Err(CaptionerError::BadField {
                path: path.to_path_buf(),
                field: format!("model_cfg.{tower}.{key}"),
                what: format!(
                    "{val}: this open_clip variant is not supported (plain ViT CLIPs only)"
                ),
            });
        }
    }
    for (tower, default) in [("vision_cfg", "tok"), ("text_cfg", "argmax")] {
        if let Some(p) = model[tower]["pool_type"].as_str() {
            if p != default {
                return Err(CaptionerError::BadField {
                    path: path.to_path_buf(),
                    field: format!("model_cfg.{tower}.pool_type"),
                    what: format!("`{p}`: only `{default}` pooling is supported"),
                });
            }
        }
    }
    let pre = v.get("preprocess_cfg").cloned().unwrap_or_default();
    Ok((model, pre))
}

fn resolve_tokenizer(
    dir: &Path,
    opts: &ClipOptions,
    notes: &mut Vec<String>,
) -> Result<ClipTokenizer> {
    let load = |p: &Path| {
        ClipTokenizer::load(p).map_err(|e| {
            weights_err(
                p,
                e.to_string(),
                "give a CLIP BPE file (bpe_simple_vocab_16e6.txt.gz) or a folder with vocab.json and merges.txt",
            )
        })
    };
    if let Some(t) = &opts.tokenizer {
        notes.push(format!("tokenizer {}", t.display()));
        return load(t);
    }
    if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
        notes.push(format!("tokenizer {}", dir.display()));
        return load(dir);
    }
    for name in ["bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.txt"] {
        let f = dir.join(name);
        if f.is_file() {
            notes.push(format!("tokenizer {}", f.display()));
            return load(&f);
        }
    }
    notes.push("tokenizer: built-in CLIP BPE".into());
    embedded_tokenizer()
}

/// OpenAI's CLIP tokenizer from the vocabulary built into this crate.
pub fn embedded_tokenizer() -> Result<ClipTokenizer> {
    ClipTokenizer::from_bpe_text(EMBEDDED_MERGES, Path::new("(built-in CLIP BPE merges)")).map_err(
        |e| CaptionerError::Setting(format!("the built-in CLIP vocabulary does not load: {e}")),
    )
}

impl ClipModel {
    /// Loads a transformers CLIP folder / file or an open_clip folder / checkpoint, telling
    /// them apart by their tensor names. The error names the file when it is neither.
    pub fn load(path: &Path, device: &Device, opts: &ClipOptions) -> Result<Self> {
        let file = weights_file(path)?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let (tensors, fp) = read_checkpoint(&file, device)?;
        let layout = detect_layout(&tensors).ok_or_else(|| {
            let mut some: Vec<&String> = tensors.keys().collect();
            some.sort();
            some.truncate(4);
            weights_err(
                &file,
                format!(
                    "neither a transformers CLIPModel (no `vision_model.embeddings.patch_embedding.weight`) nor an open_clip CLIP (no `visual.conv1.weight`); first tensors: {}",
                    some.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
                HINT,
            )
        })?;
        let mut notes = vec![];
        let embed_dim;
        let (scorer, crop_mean_std) = match layout {
            ClipLayout::Transformers => {
                let cfg: serde_json::Value = match std::fs::read_to_string(dir.join("config.json"))
                {
                    Ok(s) => serde_json::from_str(&s).map_err(|e| CaptionerError::BadField {
                        path: dir.join("config.json"),
                        field: "(file)".into(),
                        what: format!("not JSON ({e})"),
                    })?,
                    Err(_) => serde_json::Value::Null,
                };
                notes.push(format!(
                    "activation from {}",
                    if cfg.is_null() {
                        "transformers' default (quick GELU)"
                    } else {
                        "config.json"
                    }
                ));
                let tok = resolve_tokenizer(&dir, opts, &mut notes)?;
                embed_dim = proj_rows(&tensors)?;
                let s = ClipScorer::from_tensors(tensors, &cfg, tok, &file, path, device)
                    .map_err(|e| eval_err(&file, e))?;
                (s, None)
            }
            ClipLayout::OpenClip => {
                let cfg_path = opts
                    .config
                    .clone()
                    .or_else(|| Some(dir.join("open_clip_config.json")).filter(|p| p.is_file()));
                let (model_cfg, pre) = match &cfg_path {
                    Some(p) => read_open_clip_config(p)?,
                    None => (serde_json::Value::Null, serde_json::Value::Null),
                };
                let quick = match (&cfg_path, model_cfg["quick_gelu"].as_bool(), opts.quick_gelu) {
                    (Some(p), Some(c), Some(o)) if c != o => {
                        return Err(CaptionerError::BadField {
                            path: p.clone(),
                            field: "model_cfg.quick_gelu".into(),
                            what: format!("{c}, but quick GELU was set to {o}: leave the option out, the config decides"),
                        })
                    }
                    (Some(p), Some(c), _) => {
                        notes.push(format!("quick_gelu={c} from {}", p.display()));
                        c
                    }
                    (Some(p), None, o) => {
                        let q = o.unwrap_or(false);
                        notes.push(format!("quick_gelu={q} ({} says nothing)", p.display()));
                        q
                    }
                    (None, _, Some(o)) => {
                        notes.push(format!("quick_gelu={o} (option)"));
                        o
                    }
                    (None, _, None) => {
                        let (q, why) = activation_from_name(&file);
                        notes.push(format!("quick_gelu={q} ({why})"));
                        q
                    }
                };
                let act = if quick { "quick_gelu" } else { "gelu" };
                let vw = tensors
                    .get("visual.conv1.weight")
                    .map(|t| t.dim(0))
                    .transpose()?
                    .unwrap_or(0);
                let vheads = model_cfg["vision_cfg"]["head_width"]
                    .as_u64()
                    .map(|hw| vw / hw.max(1) as usize)
                    .unwrap_or((vw / 64).max(1));
                let mut text_cfg = serde_json::json!({"hidden_act": act, "layer_norm_eps": 1e-5});
                if let Some(h) = model_cfg["text_cfg"]["heads"].as_u64() {
                    text_cfg["num_attention_heads"] = h.into();
                }
                let hf_cfg = serde_json::json!({
                    "text_config": text_cfg,
                    "vision_config": {"hidden_act": act, "layer_norm_eps": 1e-5, "num_attention_heads": vheads},
                });
                let tensors = remap_open_clip(tensors, &file)?;
                let tok = resolve_tokenizer(&dir, opts, &mut notes)?;
                let rows = tensors
                    .get("text_model.embeddings.token_embedding.weight")
                    .map(|t| t.dim(0))
                    .transpose()?
                    .unwrap_or(0);
                if tok.vocab_size() > rows {
                    return Err(weights_err(
                        &file,
                        format!(
                            "the tokenizer has {} tokens but the token embedding only {rows} rows",
                            tok.vocab_size()
                        ),
                        "give the tokenizer the model was trained with (vocab.json + merges.txt beside the weights)",
                    ));
                }
                embed_dim = proj_rows(&tensors)?;
                let s = ClipScorer::from_tensors(tensors, &hf_cfg, tok, &file, path, device)
                    .map_err(|e| eval_err(&file, e))?;
                let mean = json3(&pre["mean"]).unwrap_or(CLIP_MEAN);
                let std = json3(&pre["std"]).unwrap_or(CLIP_STD);
                (s, Some((Crop::Torchvision, mean, std)))
            }
        };
        let mut scorer = scorer;
        if let Some((crop, mean, std)) = crop_mean_std {
            scorer.crop = crop;
            scorer.mean = mean;
            scorer.std = std;
        }
        Ok(ClipModel {
            scorer,
            layout,
            weights: file,
            source: path.to_path_buf(),
            fingerprint: format!("{fp:016x}"),
            embed_dim,
            notes,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Image embeddings `N×E` (not normalised), preprocessing included.
    pub fn image_embeddings(&self, imgs: &[RgbImage]) -> Result<Tensor> {
        let mut parts = vec![];
        for chunk in imgs.chunks(16) {
            let px = self
                .scorer
                .preprocess(chunk, &self.device)
                .map_err(|e| eval_err(&self.weights, e))?;
            parts.push(
                self.scorer
                    .image_features(&px)
                    .map_err(|e| eval_err(&self.weights, e))?,
            );
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Text embeddings `N×E` (not normalised). Each batch runs only up to its longest
    /// prompt's end token: under the causal mask the padding after it cannot change the
    /// pooled end-token state, so this is exact and several times faster than 77 tokens.
    pub fn text_embeddings(&self, texts: &[String]) -> Result<Tensor> {
        let eos = self.scorer.tokenizer.eos_id();
        let mut parts = vec![];
        for chunk in texts.chunks(64) {
            let mut ids = self.scorer.token_ids(chunk);
            let len = ids
                .iter()
                .map(|r| r.iter().position(|&i| i == eos).map_or(r.len(), |p| p + 1))
                .max()
                .unwrap_or(1);
            for r in &mut ids {
                r.truncate(len);
            }
            parts.push(
                self.scorer
                    .text_features_ids(&ids, &self.device)
                    .map_err(|e| eval_err(&self.weights, e))?,
            );
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// `layout:path` and the fingerprint, for provenance and head files.
    pub fn identity(&self) -> String {
        format!(
            "{}:{} (fnv64 {})",
            self.layout.name(),
            self.source.display(),
            self.fingerprint
        )
    }
}

/// The activation a checkpoint without a config was trained with, from its file name:
/// open_clip's `*-quickgelu*` models and GeoRSCLIP's ViT-B-32 (`RS5M_ViT-B-32*.pt`, fine-tuned
/// from OpenAI's weights, which open_clip builds with quick GELU) use quick GELU; everything
/// else open_clip's default, exact GELU (RemoteCLIP included).
pub fn activation_from_name(file: &Path) -> (bool, &'static str) {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.contains("quickgelu") || name.contains("quick_gelu") {
        (true, "file name says quickgelu")
    } else if name.starts_with("rs5m_vit-b-32") {
        (
            true,
            "GeoRSCLIP ViT-B-32, fine-tuned from OpenAI's quick-GELU weights",
        )
    } else {
        (false, "no config: open_clip's default exact GELU")
    }
}

/// Rows of `text_projection.weight` (the joint embedding width); 0 when absent (the model
/// builder then reports the missing tensor).
fn proj_rows(tensors: &HashMap<String, Tensor>) -> Result<usize> {
    Ok(tensors
        .get("text_projection.weight")
        .map(|t| t.dim(0))
        .transpose()?
        .unwrap_or(0))
}

fn json3(v: &serde_json::Value) -> Option<[f32; 3]> {
    let a = v.as_array()?;
    if a.len() != 3 {
        return None;
    }
    Some([
        a[0].as_f64()? as f32,
        a[1].as_f64()? as f32,
        a[2].as_f64()? as f32,
    ])
}

/// L2-normalises the rows of an `N×E` matrix.
pub fn normalize_rows(t: &Tensor) -> Result<Tensor> {
    let n = t.sqr()?.sum_keepdim(1)?.sqrt()?;
    Ok(t.broadcast_div(&n)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_from_known_file_names() {
        assert!(activation_from_name(Path::new("ckpt/RS5M_ViT-B-32.pt")).0);
        assert!(activation_from_name(Path::new("ViT-B-32-quickgelu.safetensors")).0);
        assert!(!activation_from_name(Path::new("RemoteCLIP-ViT-B-32.pt")).0);
        assert!(!activation_from_name(Path::new("RS5M_ViT-H-14.pt")).0);
    }

    #[test]
    fn embedded_vocabulary_is_openai_clip() {
        let t = embedded_tokenizer().unwrap();
        assert_eq!(t.vocab_size(), 49408);
        assert_eq!(t.bos_id(), 49406);
        assert_eq!(t.eos_id(), 49407);
        // "a photo of a cat" in OpenAI CLIP ids
        let ids = t.encode("a photo of a cat").ids;
        assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    }

    #[test]
    fn in_proj_is_split_in_q_k_v_order_and_projections_are_transposed() {
        let d = 2;
        let w = Tensor::arange(0f32, (3 * d * d) as f32, &Device::Cpu)
            .unwrap()
            .reshape((3 * d, d))
            .unwrap();
        let proj = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let mut m = HashMap::new();
        m.insert(
            "visual.transformer.resblocks.1.attn.in_proj_weight".to_string(),
            w,
        );
        m.insert("visual.proj".to_string(), proj.clone());
        m.insert("text_projection".to_string(), proj);
        let out = remap_open_clip(m, Path::new("x")).unwrap();
        let k = out["vision_model.encoder.layers.1.self_attn.k_proj.weight"]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(k, vec![vec![4.0, 5.0], vec![6.0, 7.0]]);
        let v = out["visual_projection.weight"].to_vec2::<f32>().unwrap();
        assert_eq!(v, vec![vec![0.0, 3.0], vec![1.0, 4.0], vec![2.0, 5.0]]);
        assert!(out.contains_key("text_projection.weight"));
    }
}
