//! The parts of a BLIP folder's JSON files that the captioner reads: `config.json`
//! (`BlipConfig` with `vision_config` and `text_config`) and the image processor settings
//! (`preprocessor_config.json` as published, or the `image_processor` section of the
//! `processor_config.json` that transformers 5 writes).

use std::path::Path;

use serde_json::Value;

use crate::error::{CaptionerError, Result};

/// Where a user gets a complete folder; every missing-file error carries it.
pub const HINT: &str = "download Salesforce/blip-image-captioning-base (or -large) from Hugging Face \
(huggingface-cli download Salesforce/blip-image-captioning-base --local-dir blip-base) and pass that folder";

/// The activation functions a BLIP config may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Exact (erf) GELU, transformers' `gelu`.
    Gelu,
    /// tanh approximation, `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
    Relu,
    QuickGelu,
}

impl Act {
    fn parse(path: &Path, field: &str, v: &Value) -> Result<Self> {
        match v.as_str().unwrap_or("gelu") {
            "gelu" => Ok(Act::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Act::GeluTanh),
            "relu" => Ok(Act::Relu),
            "quick_gelu" => Ok(Act::QuickGelu),
            other => Err(CaptionerError::BadField {
                path: path.to_path_buf(),
                field: field.into(),
                what: format!(
                    "activation `{other}` is not one BLIP uses (gelu, gelu_new, relu, quick_gelu)"
                ),
            }),
        }
    }

    pub fn apply(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Act::Gelu => x.gelu_erf(),
            Act::GeluTanh => x.gelu(),
            Act::Relu => x.relu(),
            Act::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        }
    }
}

/// `BlipVisionConfig`: the ViT.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Act,
}

/// `BlipTextConfig`: the BERT decoder with cross-attention.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the image features the cross-attention reads (the ViT's `hidden_size`).
    pub encoder_hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Act,
    /// `[DEC]`: replaces `[CLS]` at the start of the decoder input.
    pub bos_token_id: u32,
    /// `[SEP]`: `generate()` uses it as the end-of-sequence token.
    pub sep_token_id: u32,
    pub pad_token_id: u32,
}

/// `BlipConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CaptionerError::Weights {
                path: path.to_path_buf(),
                what: format!("no {what}; expected a BlipForConditionalGeneration folder"),
                hint: HINT.into(),
            }
        } else {
            CaptionerError::Io {
                path: path.to_path_buf(),
                what: format!("reading the {what}"),
                source: e,
            }
        }
    })?;
    serde_json::from_str(&s).map_err(|e| CaptionerError::BadField {
        path: path.to_path_buf(),
        field: "(file)".into(),
        what: format!("not valid JSON ({e})"),
    })
}

fn usize_field(
    path: &Path,
    obj: &Value,
    section: &str,
    key: &str,
    default: usize,
) -> Result<usize> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(n as usize),
            // transformers allows `image_size` / `patch_size` as [h, w]; BLIP uses squares.
            None => match v.as_array().and_then(|a| {
                let a: Vec<u64> = a.iter().filter_map(Value::as_u64).collect();
                (a.len() == 2 && a[0] == a[1]).then_some(a[0])
            }) {
                Some(n) => Ok(n as usize),
                None => Err(CaptionerError::BadField {
                    path: path.to_path_buf(),
                    field: format!("{section}.{key}"),
                    what: format!("expected a non-negative integer, found {v}"),
                }),
            },
        },
    }
}

fn f64_field(path: &Path, obj: &Value, section: &str, key: &str, default: f64) -> Result<f64> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| CaptionerError::BadField {
            path: path.to_path_buf(),
            field: format!("{section}.{key}"),
            what: format!("expected a number, found {v}"),
        }),
    }
}

impl BlipConfig {
    /// Reads `config.json` of a `BlipForConditionalGeneration` folder. Missing fields take
    /// transformers' `BlipVisionConfig` / `BlipTextConfig` defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let j = read_json(path, "config.json")?;
        if let Some(mt) = j.get("model_type").and_then(Value::as_str) {
            if mt != "blip" {
                return Err(CaptionerError::Weights {
                    path: path.to_path_buf(),
                    what: format!(
                        "model_type is `{mt}`, expected `blip` (a BlipForConditionalGeneration folder)"
                    ),
                    hint: HINT.into(),
                });
            }
        }
        if let Some(arch) = j.get("architectures").and_then(Value::as_array) {
            let names: Vec<&str> = arch.iter().filter_map(Value::as_str).collect();
            if !names.is_empty() && !names.contains(&"BlipForConditionalGeneration") {
                return Err(CaptionerError::Weights {
                    path: path.to_path_buf(),
                    what: format!(
                        "architectures is {names:?}; the captioner needs BlipForConditionalGeneration (image captioning), not a BLIP retrieval or question-answering model"
                    ),
                    hint: HINT.into(),
                });
            }
        }
        let null = Value::Null;
        let v = j.get("vision_config").unwrap_or(&null);
        let t = j.get("text_config").unwrap_or(&null);
        let vs = "vision_config";
        let ts = "text_config";
        let vision = VisionConfig {
            hidden_size: usize_field(path, v, vs, "hidden_size", 768)?,
            intermediate_size: usize_field(path, v, vs, "intermediate_size", 3072)?,
            num_hidden_layers: usize_field(path, v, vs, "num_hidden_layers", 12)?,
            num_attention_heads: usize_field(path, v, vs, "num_attention_heads", 12)?,
            image_size: usize_field(path, v, vs, "image_size", 384)?,
            patch_size: usize_field(path, v, vs, "patch_size", 16)?,
            layer_norm_eps: f64_field(path, v, vs, "layer_norm_eps", 1e-5)?,
            hidden_act: Act::parse(
                path,
                "vision_config.hidden_act",
                v.get("hidden_act").unwrap_or(&null),
            )?,
        };
        let id = |key: &str, default: usize| -> Result<u32> {
            Ok(usize_field(path, t, ts, key, default)? as u32)
        };
        let text = TextConfig {
            vocab_size: usize_field(path, t, ts, "vocab_size", 30524)?,
            hidden_size: usize_field(path, t, ts, "hidden_size", 768)?,
            // BlipConfig sets the decoder's encoder width to the ViT's.
            encoder_hidden_size: vision.hidden_size,
            intermediate_size: usize_field(path, t, ts, "intermediate_size", 3072)?,
            num_hidden_layers: usize_field(path, t, ts, "num_hidden_layers", 12)?,
            num_attention_heads: usize_field(path, t, ts, "num_attention_heads", 8)?,
            max_position_embeddings: usize_field(path, t, ts, "max_position_embeddings", 512)?,
            layer_norm_eps: f64_field(path, t, ts, "layer_norm_eps", 1e-12)?,
            hidden_act: Act::parse(
                path,
                "text_config.hidden_act",
                t.get("hidden_act").unwrap_or(&null),
            )?,
            bos_token_id: id("bos_token_id", 30522)?,
            sep_token_id: id("sep_token_id", 102)?,
            pad_token_id: id("pad_token_id", 0)?,
        };
        let check = |ok: bool, field: &str, what: String| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(CaptionerError::BadField {
                    path: path.to_path_buf(),
                    field: field.into(),
                    what,
                })
            }
        };
        check(
            vision.patch_size > 0 && vision.image_size.is_multiple_of(vision.patch_size),
            "vision_config.image_size",
            format!(
                "{} is not a multiple of patch_size {}",
                vision.image_size, vision.patch_size
            ),
        )?;
        check(
            vision.num_attention_heads > 0
                && vision
                    .hidden_size
                    .is_multiple_of(vision.num_attention_heads),
            "vision_config.num_attention_heads",
            format!(
                "{} heads do not divide hidden_size {}",
                vision.num_attention_heads, vision.hidden_size
            ),
        )?;
        check(
            text.num_attention_heads > 0
                && text.hidden_size.is_multiple_of(text.num_attention_heads),
            "text_config.num_attention_heads",
            format!(
                "{} heads do not divide hidden_size {}",
                text.num_attention_heads, text.hidden_size
            ),
        )?;
        for (name, v) in [
            ("bos_token_id", text.bos_token_id),
            ("sep_token_id", text.sep_token_id),
            ("pad_token_id", text.pad_token_id),
        ] {
            check(
                (v as usize) < text.vocab_size,
                &format!("text_config.{name}"),
                format!("{v} is outside the vocabulary ({} ids)", text.vocab_size),
            )?;
        }
        Ok(BlipConfig { vision, text })
    }
}

/// `BlipImageProcessor`'s settings: resize to `height × width` (Pillow filter `resample`),
/// rescale, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessing {
    pub do_resize: bool,
    pub height: usize,
    pub width: usize,
    /// PIL resampling code (3 = bicubic, BLIP's).
    pub resample: u8,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

impl ImageProcessing {
    /// transformers' defaults for BLIP at `image_size`.
    pub fn defaults(image_size: usize) -> Self {
        ImageProcessing {
            do_resize: true,
            height: image_size,
            width: image_size,
            resample: 3,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Reads `preprocessor_config.json`, else the `image_processor` section of
    /// `processor_config.json`; a folder with neither gets the defaults for `image_size`.
    /// Returns the settings and the file they came from.
    pub fn load(dir: &Path, image_size: usize) -> Result<(Self, Option<std::path::PathBuf>)> {
        let pre = dir.join("preprocessor_config.json");
        let proc_ = dir.join("processor_config.json");
        let (path, j) = if pre.is_file() {
            let j = read_json(&pre, "preprocessor_config.json")?;
            (pre, j)
        } else if proc_.is_file() {
            let j = read_json(&proc_, "processor_config.json")?;
            match j.get("image_processor") {
                Some(ip) => (proc_, ip.clone()),
                None => return Ok((Self::defaults(image_size), None)),
            }
        } else {
            return Ok((Self::defaults(image_size), None));
        };
        let mut p = Self::defaults(image_size);
        let bool_field = |k: &str, d: bool| j.get(k).and_then(Value::as_bool).unwrap_or(d);
        p.do_resize = bool_field("do_resize", true);
        p.do_rescale = bool_field("do_rescale", true);
        p.do_normalize = bool_field("do_normalize", true);
        if let Some(size) = j.get("size") {
            if let Some(n) = size.as_u64() {
                p.height = n as usize;
                p.width = n as usize;
            } else {
                let h = size.get("height").and_then(Value::as_u64);
                let w = size.get("width").and_then(Value::as_u64);
                match (h, w) {
                    (Some(h), Some(w)) => {
                        p.height = h as usize;
                        p.width = w as usize;
                    }
                    _ => {
                        return Err(CaptionerError::BadField {
                            path,
                            field: "size".into(),
                            what: format!(
                                "expected {{\"height\": N, \"width\": N}} as BlipImageProcessor writes it, found {size}"
                            ),
                        })
                    }
                }
            }
        }
        if let Some(r) = j.get("resample").and_then(Value::as_u64) {
            p.resample = r as u8;
        }
        p.rescale_factor = f64_field(&path, &j, "", "rescale_factor", p.rescale_factor)?;
        let triple = |k: &str, d: [f32; 3]| -> Result<[f32; 3]> {
            match j.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(v) => {
                    if let Some(x) = v.as_f64() {
                        return Ok([x as f32; 3]);
                    }
                    let a: Vec<f32> = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_f64)
                                .map(|x| x as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    if a.len() == 3 {
                        Ok([a[0], a[1], a[2]])
                    } else {
                        Err(CaptionerError::BadField {
                            path: path.clone(),
                            field: k.into(),
                            what: format!("expected three numbers (R, G, B), found {v}"),
                        })
                    }
                }
            }
        };
        p.mean = triple("image_mean", CLIP_MEAN)?;
        p.std = triple("image_std", CLIP_STD)?;
        if p.std.contains(&0.0) {
            return Err(CaptionerError::BadField {
                path,
                field: "image_std".into(),
                what: "a standard deviation of 0".into(),
            });
        }
        Ok((p, Some(path)))
    }

    /// The Pillow filter for `resample`.
    pub fn filter(&self) -> Option<strata_image::Filter> {
        use strata_image::Filter;
        match self.resample {
            0 => Some(Filter::Nearest),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            1 => Some(Filter::Lanczos),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }
}
