//! The BLIP relation captioner: `BlipForConditionalGeneration` in the Hugging Face
//! transformers layout (`Salesforce/blip-image-captioning-base` / `-large`), run with candle.
//!
//! A folder holds `config.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`; a zip `pytorch_model.bin` is read as data through candle's
//! pickle reader, never executed), the image processor settings
//! (`preprocessor_config.json`, or `processor_config.json` as transformers 5 writes it) and the
//! tokenizer (`tokenizer.json`, or `vocab.txt` with `tokenizer_config.json` /
//! `special_tokens_map.json`).
//!
//! What matches transformers, and how it is checked (`tests/blip_parity.rs`, fixture from
//! `scripts/fixtures/blip_tiny.py`):
//! * preprocessing as `BlipImageProcessor` with the Pillow backend: resize to the configured
//!   size with Pillow's filter (bicubic; `strata_image::resize` is bit-exact), rescale by
//!   1/255, CLIP mean / std;
//! * the decoder input `generate()` builds: `[DEC]` alone, or the prompt tokenized with
//!   `[CLS] … [SEP]`, `[CLS]` replaced by `[DEC]` and the trailing `[SEP]` dropped; `[SEP]`
//!   ends a sentence;
//! * logits to 1e-4; greedy and beam-search ids identical; decoded text as
//!   `decode(ids, skip_special_tokens=True)`, prompt included;
//! * nucleus sampling cannot reproduce torch's generator: it is deterministic per seed.
//!
//! [`BlipCaptioner`] implements [`ImageCaptioner`]: one candidate per `next`, drawn in the
//! order of its [`DecodePlan`]; with sampling steps in the plan (the default) the iterator
//! never ends, and the caller stops pulling.

pub mod config;
pub mod decode;
pub mod model;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use strata_image::RgbImage;

pub use config::{BlipConfig, ImageProcessing, TextConfig, VisionConfig, HINT};
pub use decode::{DecodePlan, Draw, EarlyStopping, Limits, Strategy, PLAN_GRAMMAR};
pub use model::{DecoderCache, ImageContext, TextDecoder, VisionModel};
pub use tokenizer::BlipTokenizer;

use crate::error::{CaptionerError, Result};
use crate::parts::{Candidate, ImageCaptioner};

fn weights_err(path: &Path, what: impl Into<String>) -> CaptionerError {
    CaptionerError::Weights {
        path: path.to_path_buf(),
        what: what.into(),
        hint: HINT.into(),
    }
}

/// Reads the weights of a folder: `model.safetensors`, the shards of
/// `model.safetensors.index.json`, or a zip `pytorch_model.bin`. Returns the tensors and the
/// file named in errors.
fn read_weights(dir: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, PathBuf)> {
    let st = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let bin = dir.join("pytorch_model.bin");
    let load_st = |p: &Path| -> Result<HashMap<String, Tensor>> {
        candle_core::safetensors::load(p, device)
            .map_err(|e| weights_err(p, format!("not a readable safetensors file ({e})")))
    };
    if st.is_file() {
        return Ok((load_st(&st)?, st));
    }
    if index.is_file() {
        let s = std::fs::read_to_string(&index).map_err(|e| CaptionerError::Io {
            path: index.clone(),
            what: "reading the shard index".into(),
            source: e,
        })?;
        let j: serde_json::Value =
            serde_json::from_str(&s).map_err(|e| CaptionerError::BadField {
                path: index.clone(),
                field: "(file)".into(),
                what: format!("not valid JSON ({e})"),
            })?;
        let mut files: Vec<String> = j
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.values()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(CaptionerError::BadField {
                path: index,
                field: "weight_map".into(),
                what: "names no shard files".into(),
            });
        }
        let mut all = HashMap::new();
        for f in files {
            let p = dir.join(&f);
            if !p.is_file() {
                return Err(weights_err(
                    &p,
                    format!("shard {f} named by model.safetensors.index.json is missing"),
                ));
            }
            all.extend(load_st(&p)?);
        }
        return Ok((all, index));
    }
    if bin.is_file() {
        let is_zip = std::fs::File::open(&bin)
            .and_then(|mut f| {
                use std::io::Read;
                let mut head = [0u8; 4];
                f.read_exact(&mut head).map(|_| head == *b"PK\x03\x04")
            })
            .unwrap_or(false);
        if !is_zip {
            return Err(weights_err(
                &bin,
                "a legacy (pre-zip) PyTorch file, which strata does not read; convert the folder to model.safetensors (transformers: BlipForConditionalGeneration.from_pretrained(folder).save_pretrained(folder, safe_serialization=True))",
            ));
        }
        let raw = candle_core::pickle::read_all(&bin).map_err(|e| {
            weights_err(
                &bin,
                format!("reading the PyTorch zip checkpoint failed ({e}); convert the folder to model.safetensors (BlipForConditionalGeneration.from_pretrained(folder).save_pretrained(folder, safe_serialization=True))"),
            )
        })?;
        let mut out = HashMap::new();
        for (k, t) in raw {
            out.insert(k, t.to_dtype(DType::F32)?.to_device(device)?);
        }
        return Ok((out, bin));
    }
    Err(weights_err(
        &st,
        "no model.safetensors (nor model.safetensors.index.json or pytorch_model.bin); expected a BlipForConditionalGeneration folder",
    ))
}

/// An image ready for decoding: the ViT features and the decoder's cross-attention keys and
/// values.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    pub context: ImageContext,
}

/// BLIP captioning with a decode plan.
pub struct BlipCaptioner {
    pub config: BlipConfig,
    pub vision: VisionModel,
    pub decoder: TextDecoder,
    pub tokenizer: BlipTokenizer,
    pub image_processing: ImageProcessing,
    plan: DecodePlan,
    folder: PathBuf,
    device: Device,
}

impl std::fmt::Debug for BlipCaptioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlipCaptioner")
            .field("folder", &self.folder)
            .field("plan", &self.plan)
            .finish()
    }
}

impl BlipCaptioner {
    /// Loads a `BlipForConditionalGeneration` folder onto `device` (f32), with the default
    /// [`DecodePlan`].
    pub fn load(folder: &Path, device: &Device) -> Result<Self> {
        if !folder.is_dir() {
            return Err(weights_err(
                folder,
                if folder.exists() {
                    "not a folder; expected a BlipForConditionalGeneration folder (config.json, model.safetensors, tokenizer files)"
                } else {
                    "no such folder; expected a BlipForConditionalGeneration folder (config.json, model.safetensors, tokenizer files)"
                },
            ));
        }
        let config = BlipConfig::load(&folder.join("config.json"))?;
        let (mut tensors, file) = read_weights(folder, device)?;
        // buffers some exports carry; not weights
        tensors.retain(|k, _| !k.ends_with(".position_ids"));
        let own_w = tensors.contains_key("text_decoder.cls.predictions.decoder.weight");
        let own_b = tensors.contains_key("text_decoder.cls.predictions.decoder.bias");
        let (vision, decoder) = strata_models::loading::build_checked(
            tensors,
            &file,
            "BLIP captioning model",
            DType::F32,
            device,
            |vb| {
                let vision = VisionModel::new(&config.vision, vb.pp("vision_model"))?;
                let decoder = TextDecoder::new(&config.text, vb.pp("text_decoder"), own_w, own_b)?;
                Ok((vision, decoder))
            },
        )
        .map_err(|e| {
            weights_err(
                &file,
                format!("the weights do not fit config.json (a BlipForConditionalGeneration checkpoint is expected): {e}"),
            )
        })?;
        let tokenizer = BlipTokenizer::load(folder)?;
        if tokenizer.vocab_size() > config.text.vocab_size {
            return Err(CaptionerError::BadField {
                path: tokenizer.source.clone(),
                field: "vocabulary".into(),
                what: format!(
                    "{} tokens, more than the decoder's vocab_size {} in config.json; the tokenizer belongs to another model",
                    tokenizer.vocab_size(),
                    config.text.vocab_size
                ),
            });
        }
        let (image_processing, ip_file) = ImageProcessing::load(folder, config.vision.image_size)?;
        if image_processing.filter().is_none() {
            return Err(CaptionerError::BadField {
                path: ip_file.unwrap_or_else(|| folder.to_path_buf()),
                field: "resample".into(),
                what: format!(
                    "Pillow filter code {} is unknown (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)",
                    image_processing.resample
                ),
            });
        }
        if image_processing.height != config.vision.image_size
            || image_processing.width != config.vision.image_size
        {
            return Err(CaptionerError::BadField {
                path: ip_file.unwrap_or_else(|| folder.to_path_buf()),
                field: "size".into(),
                what: format!(
                    "{}x{} does not match the ViT's image_size {} in config.json",
                    image_processing.width, image_processing.height, config.vision.image_size
                ),
            });
        }
        Ok(BlipCaptioner {
            config,
            vision,
            decoder,
            tokenizer,
            image_processing,
            plan: DecodePlan::default(),
            folder: folder.to_path_buf(),
            device: device.clone(),
        })
    }

    /// The same captioner drawing with `plan`.
    pub fn with_plan(mut self, plan: DecodePlan) -> Self {
        self.plan = plan;
        self
    }

    pub fn plan(&self) -> &DecodePlan {
        &self.plan
    }

    pub fn set_plan(&mut self, plan: DecodePlan) {
        self.plan = plan;
    }

    /// Prompts each plan step is drawn with, in order (`None`: no prompt), e.g.
    /// `[None, Some("an aerial image of")]`.
    pub fn set_prompts(&mut self, prompts: Vec<Option<String>>) {
        let plan = std::mem::take(&mut self.plan);
        self.plan = plan.with_prompts(prompts);
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `pixel_values` (1, 3, S, S) as `BlipImageProcessor` (Pillow backend) makes them.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Tensor> {
        self.preprocess_batch(std::slice::from_ref(image))
    }

    /// [`Self::preprocess`] for several images: (N, 3, S, S).
    pub fn preprocess_batch(&self, images: &[RgbImage]) -> Result<Tensor> {
        let p = &self.image_processing;
        if images.is_empty() {
            return Err(CaptionerError::Setting("no images to preprocess".into()));
        }
        let filter = p.filter().ok_or_else(|| {
            CaptionerError::Setting(format!("unknown Pillow filter {}", p.resample))
        })?;
        let prepared: Vec<RgbImage> = images
            .iter()
            .map(|img| {
                if img.width == 0 || img.height == 0 {
                    return Err(CaptionerError::Setting(
                        "an empty (0-pixel) image cannot be captioned".into(),
                    ));
                }
                Ok(if p.do_resize {
                    strata_image::resize(img, p.width, p.height, filter)
                } else {
                    img.clone()
                })
            })
            .collect::<Result<_>>()?;
        Ok(model::pixel_tensor(&prepared, p, &self.device)?)
    }

    /// The ViT features (N, 1 + G², D) of preprocessed pixels.
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.vision.forward(pixels)?)
    }

    /// Runs the ViT on an image and the decoder's cross-attention projections on its features.
    pub fn prepare(&self, image: &RgbImage) -> Result<PreparedImage> {
        let emb = self.image_embeds(&self.preprocess(image)?)?;
        self.prepare_embeds(&emb)
    }

    /// [`Self::prepare`] from ViT features of one image (1, N, D).
    pub fn prepare_embeds(&self, embeds: &Tensor) -> Result<PreparedImage> {
        Ok(PreparedImage {
            context: self.decoder.image_context(embeds)?,
        })
    }

    /// The decoder input `generate()` builds: `[DEC]`, or `[DEC]` + the prompt's tokens.
    pub fn decoder_input(&self, prompt: Option<&str>) -> Result<Vec<u32>> {
        let bos = self.config.text.bos_token_id;
        match prompt {
            None => Ok(vec![bos]),
            Some(p) => {
                let mut ids = self.tokenizer.encode(p)?;
                if ids.is_empty() {
                    return Ok(vec![bos]);
                }
                ids[0] = bos;
                if ids.len() > 1 {
                    ids.pop();
                }
                Ok(ids)
            }
        }
    }

    /// The length limits for a decoder input of `input_len` tokens under the current plan.
    pub fn limits(&self, input_len: usize) -> Limits {
        let t = &self.config.text;
        Limits {
            max_length: (input_len + self.plan.max_new_tokens).min(t.max_position_embeddings),
            min_length: self.plan.min_length,
            eos: t.sep_token_id,
        }
    }

    /// Logits (L, V) of every position of `decoder_ids` for one image, as
    /// `BlipForConditionalGeneration(pixel_values, input_ids)` gives them.
    pub fn logits(&self, image: &PreparedImage, decoder_ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_vec(decoder_ids.to_vec(), (1, decoder_ids.len()), &self.device)?;
        let mut cache = DecoderCache::default();
        let l = self
            .decoder
            .forward(&ids, &image.context, &mut cache, true)?;
        Ok(l.squeeze(0)?)
    }

    /// The ids of one draw: decoder input, new tokens, and `[SEP]` when the sentence ended.
    pub fn generate(&self, image: &PreparedImage, draw: &Draw) -> Result<Vec<u32>> {
        let input = self.decoder_input(draw.prompt.as_deref())?;
        let lim = self.limits(input.len());
        let mut m = Session {
            decoder: &self.decoder,
            ctx: &image.context,
            cache: DecoderCache::default(),
            rows: 1,
            device: &self.device,
        };
        match &draw.strategy {
            Strategy::Greedy => decode::greedy(&mut m, &input, &lim),
            Strategy::Beam {
                num_beams,
                length_penalty,
                early_stopping,
            } => decode::beam_search(
                &mut m,
                &input,
                &lim,
                *num_beams,
                *length_penalty,
                *early_stopping,
            ),
            Strategy::Nucleus {
                top_p,
                temperature,
                top_k,
            } => {
                let mut rng = decode::rng_for(draw.seed.unwrap_or(0));
                decode::sample(&mut m, &input, &lim, *top_p, *temperature, *top_k, &mut rng)
            }
        }
    }

    /// One candidate sentence for a draw.
    pub fn caption(&self, image: &PreparedImage, draw: &Draw) -> Result<Candidate> {
        let ids = self.generate(image, draw)?;
        Ok(Candidate {
            text: self.tokenizer.decode(&ids)?,
            decoding: draw.label(),
        })
    }
}

/// The decoder for one image as the strategies see it.
struct Session<'a> {
    decoder: &'a TextDecoder,
    ctx: &'a ImageContext,
    cache: DecoderCache,
    rows: usize,
    device: &'a Device,
}

impl decode::StepModel for Session<'_> {
    fn start(&mut self, input: &[u32]) -> Result<Vec<f32>> {
        self.cache = DecoderCache::default();
        self.rows = 1;
        let ids = Tensor::from_vec(input.to_vec(), (1, input.len()), self.device)?;
        let l = self
            .decoder
            .forward(&ids, self.ctx, &mut self.cache, false)?;
        Ok(l.squeeze(0)?.to_vec1::<f32>()?)
    }

    fn step(&mut self, rows: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let identity = rows.len() == self.rows && rows.iter().enumerate().all(|(i, &r)| i == r);
        if !identity {
            self.cache.select(rows)?;
            self.rows = rows.len();
        }
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), self.device)?;
        let l = self
            .decoder
            .forward(&ids, self.ctx, &mut self.cache, false)?;
        Ok(l.to_vec2::<f32>()?)
    }
}

impl ImageCaptioner for BlipCaptioner {
    fn name(&self) -> String {
        format!("blip:{}", self.folder.display())
    }

    fn candidates<'a>(
        &'a mut self,
        image: &'a RgbImage,
        seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Candidate>> + 'a>> {
        self.plan.check()?;
        let this: &'a BlipCaptioner = self;
        let mut prepared: Option<PreparedImage> = None;
        let mut index = 0usize;
        let mut failed = false;
        Ok(Box::new(std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let draw = this.plan.draw(index, seed)?;
            index += 1;
            let r = (|| {
                if prepared.is_none() {
                    prepared = Some(this.prepare(image)?);
                }
                let p = prepared.as_ref().expect("prepared above");
                this.caption(p, &draw)
            })();
            failed = r.is_err();
            Some(r)
        })))
    }
}
