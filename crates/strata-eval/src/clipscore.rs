//! CLIPScore with a CLIP model in the Hugging Face transformers layout
//! (`openai/clip-vit-base-patch32`, `openai/clip-vit-large-patch14`: a folder with
//! `model.safetensors`, `config.json`, `vocab.json`, `merges.txt`).
//!
//! The text tower is strata's own (`strata_models::clip::ClipTextTransformer`, prefix
//! `text_model.`); the image tower is a ViT written here from the same encoder blocks
//! (`vision_model.*`); `text_projection` / `visual_projection` map both to the joint space.
//! Images are preprocessed as `CLIPImageProcessor` does: shortest side to the model's size
//! with Pillow bicubic, centre crop (rounding down), CLIP mean/std.
//!
//! Two numbers are reported, labelled: torchmetrics' `CLIPScore` =
//! `max(100 · mean(cos), 0)` and the plain mean cosine (0–1 scale).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use strata_models::clip::{Activation, ClipEncoderLayer, ClipTextConfig, ClipTextTransformer};
use strata_models::ops::LayerNorm;
use strata_models::tokenizer::ClipTokenizer;

use crate::error::EvalError;
use crate::images::to_tensor;
use crate::images::Rgb;
use strata_image::{center_crop, resize as resize_pil, shortest_edge_size, Crop, Filter};

pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Shape of the image tower.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
}

/// CLIP's image tower (`vision_model`).
#[derive(Debug, Clone)]
pub struct ClipVision {
    pub config: VisionConfig,
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl ClipVision {
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.hidden_size;
        let grid = cfg.image_size / cfg.patch_size;
        let emb = vb.pp("embeddings");
        // The encoder blocks are the text tower's (same weights layout), without a mask.
        let block_cfg = ClipTextConfig {
            vocab_size: 0,
            hidden_size: d,
            intermediate_size: cfg.intermediate_size,
            num_hidden_layers: cfg.num_hidden_layers,
            num_attention_heads: cfg.num_attention_heads,
            max_position_embeddings: grid * grid + 1,
            layer_norm_eps: cfg.layer_norm_eps,
            hidden_act: cfg.hidden_act,
        };
        Ok(ClipVision {
            config: cfg.clone(),
            class_embedding: emb.get(d, "class_embedding")?,
            patch_embedding: emb.get(
                (d, 3, cfg.patch_size, cfg.patch_size),
                "patch_embedding.weight",
            )?,
            position_embedding: emb.get((grid * grid + 1, d), "position_embedding.weight")?,
            pre_layrnorm: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            layers: (0..cfg.num_hidden_layers)
                .map(|i| {
                    let path = format!("vision_model.encoder.layers.{i}");
                    ClipEncoderLayer::new(&block_cfg, vb.pp(format!("encoder.layers.{i}")), &path)
                })
                .collect::<candle_core::Result<_>>()?,
            post_layernorm: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("post_layernorm"))?,
        })
    }

    /// Pooled output `(N, D)`: post-layernorm of the class token. `pixels`: N×3×S×S,
    /// already normalised with the CLIP mean/std.
    pub fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let n = pixels.dim(0)?;
        let d = self.config.hidden_size;
        let p = pixels.conv2d(&self.patch_embedding, 0, self.config.patch_size, 1, 1)?;
        let p = p.flatten_from(2)?.transpose(1, 2)?; // N×G²×D
        let cls = self.class_embedding.reshape((1, 1, d))?.repeat((n, 1, 1))?;
        let x =
            Tensor::cat(&[&cls, &p], 1)?.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut h = self.pre_layrnorm.forward(&x)?;
        for l in &self.layers {
            h = l.forward(&h, None)?;
        }
        self.post_layernorm.forward(&h.i((.., 0))?.contiguous()?)
    }
}

/// A full CLIP model for scoring.
pub struct ClipScorer {
    pub text: ClipTextTransformer,
    pub vision: ClipVision,
    text_projection: Tensor,
    visual_projection: Tensor,
    pub tokenizer: ClipTokenizer,
    eos_id: u32,
    /// Model folder / file (for the protocol line).
    pub source: PathBuf,
    /// Centre-crop rounding: transformers' (the default) or torchvision's (open_clip).
    pub crop: Crop,
    /// Per-channel normalisation (CLIP's mean / std unless the checkpoint says otherwise).
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn werr(path: &Path, what: impl std::fmt::Display) -> EvalError {
    EvalError::WeightsFile {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

fn act_of(v: Option<&serde_json::Value>) -> Activation {
    match v.and_then(|v| v.as_str()) {
        Some("gelu") => Activation::Gelu,
        _ => Activation::QuickGelu,
    }
}

impl ClipScorer {
    /// `path`: a transformers CLIP folder (or its `model.safetensors`, with `config.json`,
    /// `vocab.json` and `merges.txt` beside it).
    pub fn load(path: &Path, device: &Device) -> Result<Self, EvalError> {
        let (dir, file) = if path.is_dir() {
            let st = path.join("model.safetensors");
            let bin = path.join("pytorch_model.bin");
            // transformers' pickle checkpoint is read as data (zip), never executed
            let f = if !st.is_file() && bin.is_file() {
                bin
            } else {
                st
            };
            (path.to_path_buf(), f)
        } else {
            (
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
                path.to_path_buf(),
            )
        };
        if !file.is_file() {
            return Err(werr(&file, "no such file: give a transformers CLIP folder (model.safetensors, config.json, vocab.json, merges.txt), e.g. a download of openai/clip-vit-base-patch32"));
        }
        let tensors = crate::weights::read_tensors(&file, device)?;
        let cfg_json: serde_json::Value = match std::fs::read_to_string(dir.join("config.json")) {
            Ok(s) => serde_json::from_str(&s)
                .map_err(|e| werr(&dir.join("config.json"), format!("not JSON ({e})")))?,
            Err(_) => serde_json::Value::Null,
        };
        let key = "text_model.embeddings.token_embedding.weight";
        if !tensors.contains_key(key) {
            return Err(werr(&file, format!("tensor `{key}` is missing: this is not a transformers CLIPModel file (openai/clip-vit-*)")));
        }
        let tokenizer = ClipTokenizer::load(&dir).map_err(|e| {
            werr(
                &dir,
                format!("{e}; the CLIP folder needs vocab.json and merges.txt beside the weights"),
            )
        })?;
        Self::from_tensors(tensors, &cfg_json, tokenizer, &file, path, device)
    }

    /// A scorer from tensors already named as transformers' `CLIPModel` names them
    /// (`text_model.*`, `vision_model.*`, `text_projection.weight`,
    /// `visual_projection.weight`), e.g. remapped from another layout. `cfg_json` is a
    /// transformers `config.json` value (or `Null`: heads = width / 64, quick GELU);
    /// `file` names the weights in errors, `source` goes into the protocol line.
    pub fn from_tensors(
        mut tensors: std::collections::HashMap<String, Tensor>,
        cfg_json: &serde_json::Value,
        tokenizer: ClipTokenizer,
        file: &Path,
        source: &Path,
        device: &Device,
    ) -> Result<Self, EvalError> {
        let file = file.to_path_buf();
        tensors.retain(|k, _| !k.ends_with("position_ids"));
        let shape = |k: &str| -> Result<Vec<usize>, EvalError> {
            tensors.get(k).map(|t| t.dims().to_vec()).ok_or_else(|| {
                werr(&file, format!("tensor `{k}` is missing: this is not a transformers CLIPModel file (openai/clip-vit-*)"))
            })
        };
        let tj = &cfg_json["text_config"];
        let vj = &cfg_json["vision_config"];
        let heads = |j: &serde_json::Value, hidden: usize| {
            j["num_attention_heads"]
                .as_u64()
                .map(|h| h as usize)
                .unwrap_or((hidden / 64).max(1))
        };
        let count = |pre: &str| {
            (0..)
                .take_while(|i| {
                    tensors.contains_key(&format!("{pre}.encoder.layers.{i}.mlp.fc1.weight"))
                })
                .count()
        };
        let tok = shape("text_model.embeddings.token_embedding.weight")?;
        let tpos = shape("text_model.embeddings.position_embedding.weight")?;
        let tfc1 = shape("text_model.encoder.layers.0.mlp.fc1.weight")?;
        let tcfg = ClipTextConfig {
            vocab_size: tok[0],
            hidden_size: tok[1],
            intermediate_size: tfc1[0],
            num_hidden_layers: count("text_model"),
            num_attention_heads: heads(tj, tok[1]),
            max_position_embeddings: tpos[0],
            layer_norm_eps: tj["layer_norm_eps"].as_f64().unwrap_or(1e-5),
            hidden_act: act_of(tj.get("hidden_act")),
        };
        let patch = shape("vision_model.embeddings.patch_embedding.weight")?;
        let vpos = shape("vision_model.embeddings.position_embedding.weight")?;
        let vfc1 = shape("vision_model.encoder.layers.0.mlp.fc1.weight")?;
        let grid = ((vpos[0] - 1) as f64).sqrt().round() as usize;
        let vcfg = VisionConfig {
            hidden_size: patch[0],
            intermediate_size: vfc1[0],
            num_hidden_layers: count("vision_model"),
            num_attention_heads: heads(vj, patch[0]),
            image_size: grid * patch[2],
            patch_size: patch[2],
            layer_norm_eps: vj["layer_norm_eps"].as_f64().unwrap_or(1e-5),
            hidden_act: act_of(vj.get("hidden_act")),
        };
        let tp = shape("text_projection.weight")?;
        let vp = shape("visual_projection.weight")?;
        let (text, vision, text_projection, visual_projection) =
            strata_models::loading::build_checked(
                tensors,
                &file,
                "CLIP model",
                DType::F32,
                device,
                |vb| {
                    let text = ClipTextTransformer::new(&tcfg, vb.pp("text_model"))?;
                    let vision = ClipVision::new(&vcfg, vb.pp("vision_model"))?;
                    let tpw = vb.get((tp[0], tcfg.hidden_size), "text_projection.weight")?;
                    let vpw = vb.get((vp[0], vcfg.hidden_size), "visual_projection.weight")?;
                    if vb.contains_tensor("logit_scale") {
                        vb.get((), "logit_scale")?;
                    }
                    Ok((text, vision, tpw, vpw))
                },
            )
            .map_err(|e| werr(&file, e))?;
        let eos_id = tokenizer.eos_id();
        Ok(ClipScorer {
            text,
            vision,
            text_projection,
            visual_projection,
            tokenizer,
            eos_id,
            source: source.to_path_buf(),
            crop: Crop::Transformers,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        })
    }

    /// `CLIPImageProcessor`'s preprocessing of 8-bit RGB images.
    pub fn preprocess(&self, imgs: &[Rgb], device: &Device) -> Result<Tensor, EvalError> {
        let s = self.vision.config.image_size;
        let prepared: Vec<Rgb> = imgs
            .iter()
            .map(|img| {
                let (w, h) = shortest_edge_size(img.width, img.height, s);
                let r = resize_pil(img, w, h, Filter::Bicubic);
                center_crop(&r, s, s, self.crop)
            })
            .collect();
        Ok(to_tensor(&prepared, self.mean, self.std, device)?)
    }

    /// `get_image_features`: N×E.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor, EvalError> {
        let pooled = self.vision.forward(pixels)?;
        Ok(pooled.matmul(&self.visual_projection.t()?)?)
    }

    /// Token ids as transformers' CLIP tokenizer gives them (start, ≤ 75 tokens, end, then
    /// padding), cut to the model's positions.
    pub fn token_ids(&self, texts: &[String]) -> Vec<Vec<u32>> {
        let max = self.text.config.max_position_embeddings;
        texts
            .iter()
            .map(|t| {
                let mut ids = self.tokenizer.encode(t).ids;
                ids.truncate(max);
                ids
            })
            .collect()
    }

    /// `get_text_features` for token ids (same length each): N×E.
    pub fn text_features_ids(
        &self,
        ids: &[Vec<u32>],
        device: &Device,
    ) -> Result<Tensor, EvalError> {
        let n = ids.len();
        let s = ids[0].len();
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (n, s), device)?;
        let h = self.text.forward(&ids)?;
        let pooled = self.text.pooled(&h, &ids, self.eos_id)?;
        Ok(pooled.matmul(&self.text_projection.t()?)?)
    }

    pub fn text_features(&self, texts: &[String], device: &Device) -> Result<Tensor, EvalError> {
        self.text_features_ids(&self.token_ids(texts), device)
    }

    /// Cosine similarity of each image with its caption.
    pub fn cosines(
        &self,
        imgs: &[Rgb],
        texts: &[String],
        device: &Device,
    ) -> Result<Vec<f32>, EvalError> {
        let mut out = Vec::with_capacity(imgs.len());
        for (ic, tc) in imgs.chunks(16).zip(texts.chunks(16)) {
            let a = self.image_features(&self.preprocess(ic, device)?)?;
            let b = self.text_features(tc, device)?;
            out.extend(cosine_rows(&a, &b)?);
        }
        Ok(out)
    }

    pub fn protocol(&self) -> String {
        let v = &self.vision.config;
        format!(
            "CLIP ViT (width {}, patch {}, {}px) + text tower from {}; images: shortest side to {} (Pillow bicubic), centre crop {}x{}, CLIP mean/std; text: the caption record's `text`, 77 tokens",
            v.hidden_size, v.patch_size, v.image_size, self.source.display(), v.image_size, v.image_size, v.image_size
        )
    }
}

/// Row-wise cosine similarity of two N×E matrices.
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Vec<f32>, EvalError> {
    let na = a.sqr()?.sum_keepdim(1)?.sqrt()?;
    let nb = b.sqr()?.sum_keepdim(1)?.sqrt()?;
    let c = (a.broadcast_div(&na)? * b.broadcast_div(&nb)?)?.sum(1)?;
    Ok(c.to_vec1::<f32>()?)
}

/// The two labelled CLIPScore numbers from per-pair cosines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipScore {
    /// torchmetrics `CLIPScore`: `max(100 · mean(cos), 0)`.
    pub torchmetrics: f64,
    /// Mean cosine, 0–1 scale.
    pub cosine: f64,
}

pub fn clip_score(cos: &[f32]) -> ClipScore {
    let mean = cos.iter().map(|&c| c as f64).sum::<f64>() / cos.len().max(1) as f64;
    ClipScore {
        torchmetrics: (100.0 * mean).max(0.0),
        cosine: mean,
    }
}
