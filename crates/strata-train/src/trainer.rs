//! The training loop: batches from a seeded data order, DDPM noising, the ε-prediction loss
//! (paper Eq. 7) with optional min-SNR-γ weighting, caption dropout, gradient accumulation,
//! AdamW with cosine schedule, checkpoints and bit-exact resume.
//!
//! Randomness: every micro-batch `k` draws its timesteps, dropout and noise from generators
//! seeded by `(seed, k)`, and epoch `e`'s data order is a permutation seeded by `(seed, e)`.
//! A checkpoint therefore restores every random state from the step count alone; it also
//! records the current epoch's order for inspection.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use strata_models::clip::ClipTextTransformer;
use strata_models::conditioning::Conditioning;
use strata_models::fusion::{Fusion, LearnedConfig, LearnedSchedule, Schedule};
use strata_models::lora::{self, LoraConfig};
use strata_models::schedulers::{self, PredictionType, Scheduler, SchedulerConfig};
use strata_models::segments::{SegmentTexts, NUM_SEGMENTS};
use strata_models::tokenizer::{ClipTokenizer, CONTEXT_LENGTH, MAX_CONTENT_TOKENS};
use strata_models::unet::UNet2DConditionModel;
use strata_models::vae::AutoencoderKL;

use crate::config::{Captions, FusionKind, Method, MixedPrecision, TrainConfig};
use crate::data::sampler::Sampler;
use crate::data::{DataOptions, Dataset, LatentStream, StreamOptions};
use crate::error::{ce, Result, TrainError};
use crate::optim::{lr_at, AdamW, LossScaler};

/// Salt of DreamBooth's class-image stream (its batches and noise).
const CLASS_SALT: u64 = 0xC1A55;

/// Below this loss scale an f16 run is considered diverged (every step overflows).
const MIN_LOSS_SCALE: f64 = 1.0 / 1024.0;

/// How captions become text encodings. Every method encodes the captions of each
/// micro-batch at its step (nothing per item is held beyond the caption text).
pub(crate) enum Encodings {
    /// Through the frozen text encoder (every method but textual inversion).
    Frozen,
    /// Textual inversion: token ids, encoded at every step through the new embeddings.
    Live {
        ids: Vec<Vec<u32>>,
        uncond: Vec<u32>,
    },
}

/// What one optimiser step reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub step: u64,
    pub total: u64,
    pub epoch: u64,
    pub loss: f32,
    pub lr: f64,
}

/// Saved beside the tensors of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: u64,
    pub total_steps: u64,
    pub optimizer_t: u64,
    pub seed: u64,
    /// How the random streams are derived (they depend only on `seed` and the step).
    pub rng: String,
    pub epoch: u64,
    /// The current epoch's data order (indices into the train split).
    pub data_order: Vec<usize>,
    pub last_loss: f32,
    pub trainable: Vec<String>,
}

/// A training run.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub device: Device,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub text: ClipTextTransformer,
    pub tokenizer: ClipTokenizer,
    pub fusion: Option<Fusion>,
    /// The train split's metadata (captions, files, sizes); no pixels.
    pub data: Dataset,
    /// Latents of the train split's micro-batches, streamed.
    stream: LatentStream,
    /// DreamBooth's class images, their stream and encodings.
    class: Option<(Dataset, LatentStream, Encodings)>,
    pub(crate) enc: Encodings,
    pub opt: AdamW,
    /// Full UNet weights (full fine-tune and DreamBooth), diffusers names.
    full: Option<Vec<(String, Var)>>,
    /// Text-encoder weights trained with them (`train_text_encoder`), transformers names
    /// (`text_model.…`).
    full_text: Option<Vec<(String, Var)>>,
    /// Textual inversion rows `(num_vectors, D)`.
    pub ti: Option<Var>,
    /// The base model's noise schedule (its `scheduler/scheduler_config.json`, else
    /// SD-1.5's) as the training-side scheduler: noising and loss targets.
    noise_scheduler: Box<dyn Scheduler>,
    pub step: u64,
    pub total_steps: u64,
    pub last_loss: f32,
    /// Steps skipped by f16 loss scaling (non-finite gradients) in this process.
    pub skipped_steps: u64,
    /// dtype of the UNet's frozen weights and activations (`mixed_precision`).
    pub compute_dtype: DType,
}

use crate::data::sampler::mix;

/// Token ids (77) of `text` where `placeholder` stands for the ids `first..first+n`.
pub fn ids_with_placeholder(
    tok: &ClipTokenizer,
    text: &str,
    placeholder: &str,
    first: u32,
    n: usize,
) -> Vec<u32> {
    let mut content = vec![];
    for (i, piece) in text.split(placeholder).enumerate() {
        if i > 0 {
            content.extend((0..n as u32).map(|j| first + j));
        }
        content.extend(tok.tokenize(piece));
    }
    content.truncate(MAX_CONTENT_TOKENS);
    let mut ids = vec![tok.bos_id()];
    ids.extend(content);
    ids.push(tok.eos_id());
    ids.resize(CONTEXT_LENGTH, tok.pad_id());
    ids
}

/// Name prefix of the text-encoder LoRA variables (`lora_te.<module path>.{down,up}`).
pub const TEXT_LORA_PREFIX: &str = "lora_te.";

/// Attaches fresh LoRA adapters (rank, α of the run; seeded apart from the UNet's) to every
/// attention and MLP projection of the text encoder; returns their variables.
fn attach_text_encoder_lora(
    cfg: &TrainConfig,
    text: &mut ClipTextTransformer,
) -> Result<Vec<(String, Var)>> {
    let lc = LoraConfig {
        rank: cfg.lora_rank,
        alpha: cfg.lora_alpha,
        targets: lora::LoraTargets {
            attention: true,
            proj: false,
            ff: true,
        },
        seed: mix(cfg.seed, 0x7E7E, 0),
    };
    lora::attach(text, &lc).map_err(ce("attaching text-encoder LoRA adapters"))?;
    Ok(lora::adapters(text)
        .into_iter()
        .flat_map(|(p, a)| {
            [
                (format!("{TEXT_LORA_PREFIX}{p}.down"), a.a),
                (format!("{TEXT_LORA_PREFIX}{p}.up"), a.b),
            ]
        })
        .collect())
}

/// Name prefix of the fully trained text encoder's variables (`text_encoder.text_model.…`).
pub const TEXT_ENCODER_PREFIX: &str = "text_encoder.";

/// sha256 (hex) of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// The file whose hash identifies the base model: the single file, or the UNet weights of a
/// diffusers folder.
pub fn base_weights_file(model: &Path) -> Option<PathBuf> {
    if model.is_file() {
        return Some(model.to_path_buf());
    }
    strata_models::loading::weights_file(&model.join("unet"), "diffusion_pytorch_model", false).ok()
}

impl Trainer {
    /// Loads the model and data and prepares the method's trainable tensors.
    pub fn new(cfg: TrainConfig, progress: &mut dyn FnMut(&str)) -> Result<Self> {
        cfg.validate()?;
        let device = cfg.device.open()?;
        progress("loading the model");
        let loaded = strata_models::pipeline::load_model(
            &cfg.model,
            cfg.tokenizer.as_deref(),
            None,
            DType::F32,
            &device,
        )?;
        let (mut unet, vae) = (loaded.models.unet, loaded.models.vae);
        let (mut text, tokenizer) = (loaded.text, loaded.tokenizer);
        let compute_dtype = cfg.mixed_precision.compute_dtype();
        if compute_dtype != DType::F32
            && matches!(cfg.method, Method::Lora | Method::TextualInversion)
        {
            // Mixed precision: the frozen UNet in half precision. The VAE and text encoder
            // stay in f32 (latents and text encodings are computed in f32 for each
            // micro-batch; for textual inversion the trainable rows pass through them).
            progress("loading the half-precision UNet");
            unet = strata_models::pipeline::load_model(
                &cfg.model,
                cfg.tokenizer.as_deref(),
                None,
                compute_dtype,
                &device,
            )?
            .models
            .unet;
        }
        let f = vae.config.downscale();
        if !cfg.resolution.is_multiple_of(f) {
            return Err(TrainError::Config {
                field: "resolution".into(),
                what: format!(
                    "{} is not a multiple of the VAE's downscale {f}",
                    cfg.resolution
                ),
            });
        }
        let multiple = f * (1 << unet.config.block_out_channels.len().saturating_sub(1));
        let data_opts = DataOptions {
            resolution: cfg.resolution,
            bucket: cfg.bucket_options(multiple)?,
        };
        progress("checking the training images");
        let data = crate::data::scan(&cfg.data, &data_opts)?;
        let class_data = match (&cfg.class_data, cfg.method) {
            (Some(dir), Method::Dreambooth) => Some(crate::data::scan(dir, &data_opts)?),
            _ => None,
        };
        let stream_opts = StreamOptions::default();
        let mut streams = vec![];
        for (d, salt) in
            std::iter::once((&data, 0)).chain(class_data.iter().map(|d| (d, CLASS_SALT)))
        {
            let cache = if cfg.cache_latents {
                let dir = cfg
                    .latent_cache_dir
                    .clone()
                    .unwrap_or_else(|| d.default_cache_dir());
                let c = crate::data::open_cache(&dir, &cfg.model)?;
                let what = if salt == 0 { "training" } else { "class" };
                let mut last = std::time::Instant::now();
                let n = crate::data::fill_cache(d, &c, &vae, &device, stream_opts, &mut |i, n| {
                    if i == 0 || i == n || last.elapsed().as_secs_f64() > 2.0 {
                        last = std::time::Instant::now();
                        progress(&format!(
                            "caching the latents of the {what} images: {i}/{n}"
                        ));
                    }
                })?;
                if n == 0 {
                    progress(&format!(
                        "the {what} images' latents are all cached in {}",
                        dir.display()
                    ));
                }
                Some(c)
            } else {
                None
            };
            let sampler = Sampler {
                seed: cfg.seed,
                salt,
                batch_size: cfg.batch_size,
                n: d.items.len(),
                buckets: d.bucket_groups(),
            };
            streams.push(LatentStream::new(d, sampler, cache, stream_opts, 0));
        }
        let class_stream = if class_data.is_some() {
            streams.pop()
        } else {
            None
        };
        let stream = streams.pop().expect("the train split's stream");
        let class = class_data
            .zip(class_stream)
            .map(|(d, s)| (d, s, Encodings::Frozen));
        let fusion = match cfg.captions {
            Captions::Flat => None,
            Captions::Hierarchical => {
                let fixed = cfg.fixed_schedule();
                let schedule = match cfg.fusion {
                    FusionKind::Fixed => Schedule::Fixed(fixed),
                    FusionKind::Learned => Schedule::Learned(
                        LearnedSchedule::init_from_fixed(
                            &fixed,
                            LearnedConfig::default(),
                            cfg.seed,
                            &device,
                        )
                        .map_err(|e| TrainError::Config {
                            field: "fusion".into(),
                            what: e.to_string(),
                        })?,
                    ),
                };
                Some(Fusion::new(schedule, cfg.fusion_mode))
            }
        };
        let mut vars: Vec<(String, Var)> = vec![];
        let mut full = None;
        let mut full_text = None;
        let mut ti = None;
        let enc;
        match cfg.method {
            Method::Vae => {
                return Err(TrainError::Config {
                    field: "method".into(),
                    what: "the VAE is trained by strata_train::vae_train (strata_train::train dispatches to it)".into(),
                })
            }
            Method::Lora => {
                let lc = LoraConfig {
                    rank: cfg.lora_rank,
                    alpha: cfg.lora_alpha,
                    targets: cfg.targets()?,
                    seed: cfg.seed,
                };
                let n = lora::attach(&mut unet, &lc).map_err(ce("attaching LoRA adapters"))?;
                if n == 0 {
                    return Err(TrainError::Config {
                        field: "lora-targets".into(),
                        what: "no UNet projection matches the chosen targets".into(),
                    });
                }
                for (p, a) in lora::adapters(&unet) {
                    vars.push((format!("lora.{p}.down"), a.a));
                    vars.push((format!("lora.{p}.up"), a.b));
                }
                if cfg.lora_text_encoder {
                    // the captions go through the text encoder at every step anyway
                    // (Encodings::Frozen), so its adapters train with the UNet's
                    vars.extend(attach_text_encoder_lora(&cfg, &mut text)?);
                }
                enc = Encodings::Frozen;
            }
            Method::Full | Method::Dreambooth => {
                let (u, fv) = trainable_unet(&cfg.model, &unet, &device)?;
                unet = u;
                for (n, v) in &fv {
                    vars.push((format!("unet.{n}"), v.clone()));
                }
                full = Some(fv);
                if cfg.train_text_encoder {
                    // the captions go through the text encoder at every step
                    // (Encodings::Frozen only names the path; its weights are variables now)
                    let (t, tv) = trainable_text_encoder(&cfg.model, &text, &device)?;
                    text = t;
                    for (n, v) in &tv {
                        vars.push((format!("{TEXT_ENCODER_PREFIX}{n}"), v.clone()));
                    }
                    full_text = Some(tv);
                }
                enc = Encodings::Frozen;
            }
            Method::TextualInversion => {
                let init_ids = tokenizer.tokenize(&cfg.initializer_token);
                let id = *init_ids.first().ok_or_else(|| TrainError::Config {
                    field: "initializer-token".into(),
                    what: "tokenizes to nothing".into(),
                })?;
                let row = text
                    .token_embedding
                    .weight
                    .get(id as usize)
                    .map_err(ce("initializer row"))?;
                let rows = row
                    .unsqueeze(0)
                    .and_then(|r| r.repeat((cfg.num_vectors, 1)))
                    .map_err(ce("TI rows"))?;
                let v = Var::from_tensor(&rows).map_err(ce("TI rows"))?;
                text.set_extra_tokens(Some(v.as_tensor().clone()))
                    .map_err(ce("TI rows"))?;
                vars.push(("ti.embeddings".into(), v.clone()));
                ti = Some(v);
                let first = text.config.vocab_size as u32;
                let ph = cfg.placeholder_token.clone();
                let ids = data
                    .items
                    .iter()
                    .map(|it| match cfg.captions {
                        Captions::Flat => vec![ids_with_placeholder(
                            &tokenizer,
                            &format!("{ph} {}", it.flat),
                            &ph,
                            first,
                            cfg.num_vectors,
                        )],
                        Captions::Hierarchical => {
                            let s = &it.segments;
                            vec![
                                ids_with_placeholder(
                                    &tokenizer,
                                    &format!("{ph} {}", s.scene),
                                    &ph,
                                    first,
                                    cfg.num_vectors,
                                ),
                                tokenizer.encode(&s.relation).ids,
                                tokenizer.encode(&s.elements).ids,
                            ]
                        }
                    })
                    .map(|v: Vec<Vec<u32>>| v.concat())
                    .collect();
                enc = Encodings::Live {
                    ids,
                    uncond: tokenizer.encode("").ids,
                };
            }
        }
        if let (Some(f), Method::Lora | Method::Full | Method::Dreambooth) = (&fusion, cfg.method) {
            if let Schedule::Learned(l) = &f.schedule {
                for (n, v) in [
                    "linear_1.weight",
                    "linear_1.bias",
                    "linear_2.weight",
                    "linear_2.bias",
                ]
                .iter()
                .zip(l.vars())
                {
                    vars.push((format!("fusion.{n}"), v));
                }
            }
        }
        let mut opt = AdamW::new(vars, cfg.adam()).map_err(ce("optimizer"))?;
        if let Some(te_lr) = cfg.text_encoder_lr {
            opt.set_lr_scale(TEXT_LORA_PREFIX, te_lr / cfg.lr);
            opt.set_lr_scale(TEXT_ENCODER_PREFIX, te_lr / cfg.lr);
        }
        // No weight decay on the token table. Decoupled decay shrinks every row by
        // (1 − lr·λ) per step whether or not its token occurred, while a row's Adam update is
        // exactly zero as long as its token never did: with decay, the rows of words the
        // captions never use (49 000 of CLIP's 49 408, among them the words a later
        // fine-tune brings, such as held-out class names) would decay towards zero and
        // arrive at that fine-tune as near-empty vectors instead of their initial ones.
        // Without it they stay exactly as initialised. Every other weight (position table
        // included: all 77 positions take part in every step) keeps the configured decay.
        if let Some(tv) = &full_text {
            for (n, _) in tv {
                if n.ends_with("embeddings.token_embedding.weight") {
                    opt.set_weight_decay(&format!("{TEXT_ENCODER_PREFIX}{n}"), 0.0);
                }
            }
        }
        if cfg.mixed_precision == MixedPrecision::F16 {
            opt.scaler = Some(LossScaler::default());
        }
        let total_steps = cfg
            .max_steps
            .unwrap_or_else(|| match &stream.sampler().buckets {
                None => {
                    let n = data.items.len() as u64;
                    (cfg.epochs as u64 * n)
                        .div_ceil((cfg.batch_size * cfg.gradient_accumulation) as u64)
                }
                Some(_) => {
                    let per_epoch = stream.sampler().micro_batches_per_epoch() as u64;
                    (cfg.epochs as u64 * per_epoch).div_ceil(cfg.gradient_accumulation as u64)
                }
            })
            .max(1);
        let sched_cfg = schedulers::read_model_scheduler_config(&cfg.model)
            .map_err(|e| TrainError::Config {
                field: "model".into(),
                what: e.to_string(),
            })?
            .unwrap_or_else(SchedulerConfig::sd15);
        let noise_scheduler = schedulers::training_scheduler(&sched_cfg);
        Ok(Self {
            cfg,
            device,
            unet,
            vae,
            text,
            tokenizer,
            fusion,
            data,
            stream,
            class,
            enc,
            opt,
            full,
            full_text,
            ti,
            noise_scheduler,
            step: 0,
            total_steps,
            last_loss: f32::NAN,
            skipped_steps: 0,
            compute_dtype,
        })
    }

    /// The train split's item order in epoch `e` (bucketed runs: its batches in turn).
    pub fn epoch_order(&self, e: u64) -> Vec<usize> {
        self.stream.sampler().epoch_order(e)
    }

    /// The train split's items of micro-batch `k` and their latents `(B, C, h, w)`.
    pub fn batch_latents(&self, k: u64) -> Result<(Vec<usize>, Tensor)> {
        self.stream.batch(k, &self.vae, &self.device)
    }

    /// The train split's items of micro-batch `k`.
    pub fn batch_indices(&self, k: u64) -> Vec<usize> {
        self.stream.sampler().batch(k)
    }

    /// The text encodings of training items `idx` (instance data, no caption dropout) as the
    /// loss sees them: `(B, 3, 77, D)` for hierarchical captions, `(B, 77, D)` for flat ones,
    /// before fusion. Computed through the current text encoder for textual inversion and
    /// text-encoder LoRA.
    pub fn text_encodings(&self, idx: &[usize]) -> Result<Tensor> {
        self.encodings_of(&self.data, &self.enc, idx, &vec![false; idx.len()])
    }

    pub(crate) fn conditioning(
        &self,
        data: &Dataset,
        enc: &Encodings,
        idx: &[usize],
        drop: &[bool],
        ts: &[f64],
    ) -> Result<Conditioning> {
        let segments_or_flat = self.encodings_of(data, enc, idx, drop)?;
        match &self.fusion {
            Some(f) => f.condition(&segments_or_flat, ts).map_err(ce("fusion")),
            None => Ok(Conditioning::Context(segments_or_flat)),
        }
    }

    fn encodings_of(
        &self,
        data: &Dataset,
        enc: &Encodings,
        idx: &[usize],
        drop: &[bool],
    ) -> Result<Tensor> {
        let segments_or_flat = match enc {
            // a dropped caption is the empty one (all segments empty)
            Encodings::Frozen => match self.cfg.captions {
                Captions::Hierarchical => {
                    let segs: Vec<SegmentTexts> = idx
                        .iter()
                        .zip(drop)
                        .map(|(&i, &d)| {
                            if d {
                                SegmentTexts::unconditional()
                            } else {
                                data.items[i].segments.clone()
                            }
                        })
                        .collect();
                    strata_models::segments::encode_segments(&self.text, &self.tokenizer, &segs)
                        .map_err(ce("encoding the segment captions"))?
                }
                Captions::Flat => {
                    let p: Vec<&str> = idx
                        .iter()
                        .zip(drop)
                        .map(|(&i, &d)| if d { "" } else { data.items[i].flat.as_str() })
                        .collect();
                    strata_models::segments::encode_flat(&self.text, &self.tokenizer, &p)
                        .map_err(ce("encoding the flat captions"))?
                }
            },
            Encodings::Live { ids, uncond } => {
                let per = if self.cfg.captions == Captions::Hierarchical {
                    NUM_SEGMENTS
                } else {
                    1
                };
                let mut all = vec![];
                for (&i, &d) in idx.iter().zip(drop) {
                    if d {
                        for _ in 0..per {
                            all.extend_from_slice(uncond);
                        }
                    } else {
                        all.extend_from_slice(&ids[i]);
                    }
                }
                let rows = idx.len() * per;
                let t = Tensor::from_vec(all, (rows, CONTEXT_LENGTH), &self.device)
                    .map_err(ce("ids"))?;
                let h = self.text.forward(&t).map_err(ce("text encoder"))?;
                let d = h.dim(D::Minus1).map_err(ce("text encoder"))?;
                if per == 1 {
                    h
                } else {
                    h.reshape((idx.len(), NUM_SEGMENTS, CONTEXT_LENGTH, d))
                        .map_err(ce("segments"))?
                }
            }
        };
        Ok(segments_or_flat)
    }

    /// Loss of micro-batch `k` on `data` / `stream` / `enc` (salt separates the class
    /// stream's noise).
    fn batch_loss(
        &self,
        data: &Dataset,
        stream: &LatentStream,
        enc: &Encodings,
        k: u64,
        salt: u64,
    ) -> Result<Tensor> {
        let (idx, x0) = stream.batch(k, &self.vae, &self.device)?;
        let b = idx.len();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, k, 0x7135 ^ salt));
        let t_max = self.noise_scheduler.schedule().train_steps();
        let ts: Vec<usize> = (0..b).map(|_| rng.gen_range(0..t_max)).collect();
        let drop: Vec<bool> = (0..b)
            .map(|_| rng.gen::<f64>() < self.cfg.caption_dropout)
            .collect();
        let noise = strata_models::pipeline::seeded_normal(
            x0.dims(),
            mix(self.cfg.seed, k, 0x0015E ^ salt),
            &self.device,
        )
        .map_err(ce("noise"))?;
        let xt = self
            .noise_scheduler
            .add_noise(&x0, &noise, &ts)
            .map_err(ce("noising"))?;
        // ε for ε-prediction models, v for v-prediction ones
        let target = self
            .noise_scheduler
            .training_target(&x0, &noise, &ts)
            .map_err(ce("loss target"))?;
        let tsf: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
        let cond = self.conditioning(data, enc, &idx, &drop, &tsf)?;
        let t_tensor = Tensor::from_vec(
            ts.iter().map(|&t| t as f32).collect::<Vec<_>>(),
            b,
            &self.device,
        )
        .map_err(ce("timesteps"))?;
        let xt = strata_models::ops::cast(&xt, self.compute_dtype).map_err(ce("noising"))?;
        let pred = self
            .unet
            .forward(&xt, &t_tensor, &cond)
            .map_err(ce("UNet forward"))?;
        // Eq. 7: ‖ε − ε_θ(z_t, t, c)‖², mean over latent elements, per item.
        let per_item = (pred.to_dtype(DType::F32).map_err(ce("loss"))? - &target)
            .and_then(|d| d.sqr()?.flatten_from(1)?.mean(1))
            .map_err(ce("loss"))?;
        let weights: Vec<f32> = ts
            .iter()
            .map(|&t| match self.cfg.min_snr_gamma {
                None => 1.0,
                Some(g) => {
                    let a = self.noise_scheduler.schedule().alphas_cumprod[t];
                    let snr = a / (1.0 - a);
                    match self.noise_scheduler.prediction_type() {
                        PredictionType::Epsilon => (snr.min(g) / snr) as f32,
                        PredictionType::VPrediction => (snr.min(g) / (snr + 1.0)) as f32,
                    }
                }
            })
            .collect();
        let w = Tensor::from_vec(weights, b, &self.device).map_err(ce("weights"))?;
        (per_item * w)
            .and_then(|x| x.mean_all())
            .map_err(ce("loss"))
    }

    /// Loss of micro-batch `k` (instance + weighted prior for DreamBooth).
    pub fn micro_loss(&self, k: u64) -> Result<Tensor> {
        let inst = self.batch_loss(&self.data, &self.stream, &self.enc, k, 0)?;
        match &self.class {
            Some((d, s, e)) => {
                let prior = self.batch_loss(d, s, e, k, CLASS_SALT)?;
                (inst + (prior * self.cfg.prior_loss_weight).map_err(ce("prior loss"))?)
                    .map_err(ce("prior loss"))
            }
            None => Ok(inst),
        }
    }

    /// Gradients of the trainable tensors for step `step` (accumulated over micro-batches),
    /// and the mean loss.
    pub fn gradients(&self, step: u64) -> Result<(Vec<Tensor>, f32)> {
        let acc = self.cfg.gradient_accumulation as u64;
        let mut sum: Option<Vec<Tensor>> = None;
        // the loss stays on the device until the step's end: one scalar reaches the host
        let mut loss_sum: Option<Tensor> = None;
        for j in 0..acc {
            let loss = self.micro_loss(step * acc + j)?;
            let detached = loss.detach();
            loss_sum = Some(match loss_sum {
                None => detached,
                Some(s) => (s + detached).map_err(ce("loss"))?,
            });
            let scaled = match &self.opt.scaler {
                None => loss / acc as f64,
                Some(sc) => loss * (sc.scale / acc as f64),
            }
            .map_err(ce("loss"))?;
            let store = scaled.backward().map_err(ce("backward pass"))?;
            let g = self.opt.collect_grads(&store).map_err(ce("gradients"))?;
            sum =
                Some(crate::optim::accumulate_grads(sum, g).map_err(ce("accumulating gradients"))?);
        }
        let mut grads = sum.expect("at least one micro-batch");
        if let Some(sc) = &self.opt.scaler {
            // unscale (exact: the scale is a power of two)
            grads = grads
                .iter()
                .map(|g| g * (1.0 / sc.scale))
                .collect::<candle_core::Result<Vec<_>>>()
                .map_err(ce("unscaling gradients"))?;
        }
        let loss_sum = loss_sum
            .expect("at least one micro-batch")
            .to_dtype(DType::F32)
            .and_then(|l| l.to_scalar::<f32>())
            .map_err(ce("loss"))?;
        Ok((grads, loss_sum / acc as f32))
    }

    /// One optimiser step. A non-finite loss or gradient stops before any update.
    pub fn train_step(&mut self, last_checkpoint: &str) -> Result<StepReport> {
        let (grads, loss) = self.gradients(self.step)?;
        let gnorm_finite = crate::optim::grads_finite(&grads);
        if let Some(sc) = &mut self.opt.scaler {
            if !loss.is_finite() || !gnorm_finite {
                // f16 overflow: skip the update, halve the scale (the data of this step is
                // consumed and the schedule advances, as with PyTorch's GradScaler)
                sc.update(false);
                if sc.scale >= MIN_LOSS_SCALE {
                    self.step += 1;
                    self.skipped_steps += 1;
                    let lr = lr_at(
                        self.cfg.lr_schedule,
                        self.cfg.lr,
                        self.step - 1,
                        self.cfg.warmup_steps,
                        self.total_steps,
                    );
                    return Ok(StepReport {
                        step: self.step,
                        total: self.total_steps,
                        epoch: self.epoch(),
                        loss: if loss.is_finite() {
                            loss
                        } else {
                            self.last_loss
                        },
                        lr,
                    });
                }
            }
        }
        if !loss.is_finite() || !gnorm_finite {
            return Err(TrainError::NonFinite {
                step: self.step + 1,
                value: if loss.is_finite() { f32::NAN } else { loss },
                checkpoint: last_checkpoint.to_string(),
            });
        }
        let lr = lr_at(
            self.cfg.lr_schedule,
            self.cfg.lr,
            self.step,
            self.cfg.warmup_steps,
            self.total_steps,
        );
        self.opt.step_with(&grads, lr).map_err(ce("AdamW update"))?;
        if let Some(sc) = &mut self.opt.scaler {
            sc.update(true);
        }
        if let Some(v) = &self.ti {
            self.text
                .set_extra_tokens(Some(v.as_tensor().clone()))
                .map_err(ce("TI rows"))?;
        }
        self.step += 1;
        self.last_loss = loss;
        Ok(StepReport {
            step: self.step,
            total: self.total_steps,
            epoch: self.epoch(),
            loss,
            lr,
        })
    }

    /// The epoch of the next micro-batch.
    fn epoch(&self) -> u64 {
        self.stream
            .sampler()
            .epoch_of(self.step * self.cfg.gradient_accumulation as u64)
    }

    /// Checkpoint tensors of the trainable state.
    pub fn trainable_tensors(&self) -> HashMap<String, Tensor> {
        self.opt
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    pub fn checkpoint_state(&self) -> CheckpointState {
        let epoch = self.epoch();
        CheckpointState {
            step: self.step,
            total_steps: self.total_steps,
            optimizer_t: self.opt.t,
            seed: self.cfg.seed,
            rng: "ChaCha8 streams seeded by (seed, micro-batch index); data order by (seed, epoch)"
                .into(),
            epoch,
            data_order: self.epoch_order(epoch),
            last_loss: self.last_loss,
            trainable: self.opt.vars().iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// Restores trainable tensors and optimiser state from a checkpoint folder.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let state: CheckpointState = serde_json::from_str(
            &std::fs::read_to_string(dir.join("state.json")).map_err(|e| TrainError::Io {
                path: dir.join("state.json"),
                what: "reading",
                source: e,
            })?,
        )
        .map_err(|e| TrainError::Format {
            path: dir.join("state.json"),
            what: e.to_string(),
        })?;
        let (w, _) =
            strata_models::safetensors_io::load(&dir.join("trainable.safetensors"), &self.device)?;
        for (n, v) in self.opt.vars() {
            let t = w.get(n).ok_or_else(|| TrainError::Format {
                path: dir.join("trainable.safetensors"),
                what: format!("no tensor {n}; the checkpoint is from another configuration"),
            })?;
            v.set(&t.to_dtype(v.dtype()).map_err(ce("restoring"))?)
                .map_err(|e| TrainError::Format {
                    path: dir.join("trainable.safetensors"),
                    what: format!("{n}: {e}"),
                })?;
        }
        let (m, _) =
            strata_models::safetensors_io::load(&dir.join("optimizer.safetensors"), &self.device)?;
        self.opt
            .load_state(&m, state.optimizer_t)
            .map_err(|e| TrainError::Format {
                path: dir.join("optimizer.safetensors"),
                what: e.to_string(),
            })?;
        if let Some(v) = &self.ti {
            self.text
                .set_extra_tokens(Some(v.as_tensor().clone()))
                .map_err(ce("TI rows"))?;
        }
        self.step = state.step;
        self.last_loss = state.last_loss;
        Ok(())
    }

    pub fn full_vars(&self) -> Option<&[(String, Var)]> {
        self.full.as_deref()
    }

    /// The trained text encoder's weights (`train_text_encoder`), transformers names.
    pub fn full_text_vars(&self) -> Option<&[(String, Var)]> {
        self.full_text.as_deref()
    }
}

/// Rebuilds the text encoder with every weight a trainable `Var`, from the model's
/// `text_encoder/` weights (`model.safetensors`, else `model.fp16.safetensors`; f32
/// variables either way). Returns the variables under their transformers names
/// (`text_model.…`, whatever prefix the file used): the token and position tables, every
/// layer's projections and norms, and the final norm. Other tensors of the file (e.g. the
/// integer `position_ids` buffer) are not weights and are left out.
fn trainable_text_encoder(
    model: &Path,
    loaded: &ClipTextTransformer,
    device: &Device,
) -> Result<(ClipTextTransformer, Vec<(String, Var)>)> {
    let dir = model.join("text_encoder");
    let file = ["model.safetensors", "model.fp16.safetensors"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| TrainError::Config {
            field: "model".into(),
            what: format!(
                "train_text_encoder needs the text encoder's weights in {} (model.safetensors or model.fp16.safetensors)",
                dir.display()
            ),
        })?;
    let tensors = strata_models::loading::read_safetensors(&file, device).map_err(|e| {
        TrainError::Config {
            field: "model".into(),
            what: e.to_string(),
        }
    })?;
    let prefix = strata_models::clip::SINGLE_FILE_PREFIXES
        .iter()
        .find(|p| tensors.contains_key(&format!("{p}embeddings.token_embedding.weight")))
        .ok_or_else(|| TrainError::Config {
            field: "model".into(),
            what: format!(
                "{}: no `text_model.embeddings.token_embedding.weight`; not a CLIP text encoder",
                file.display()
            ),
        })?;
    let layers = loaded.config.num_hidden_layers;
    let is_weight = |rel: &str| -> bool {
        rel == "embeddings.token_embedding.weight"
            || rel == "embeddings.position_embedding.weight"
            || rel.starts_with("final_layer_norm.")
            || rel
                .strip_prefix("encoder.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < layers)
    };
    let vm = candle_nn::VarMap::new();
    let mut names = vec![];
    {
        let mut data = vm.data().lock().expect("varmap lock");
        for (n, t) in &tensors {
            let Some(rel) = n.strip_prefix(prefix) else {
                continue;
            };
            if !is_weight(rel) || !t.dtype().is_float() {
                continue;
            }
            let t = t.to_dtype(DType::F32).map_err(ce("text-encoder weights"))?;
            data.insert(
                format!("text_model.{rel}"),
                Var::from_tensor(&t).map_err(ce("text-encoder weights"))?,
            );
            names.push(format!("text_model.{rel}"));
        }
    }
    names.sort();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, device);
    let text = ClipTextTransformer::new(&loaded.config, vb.pp("text_model")).map_err(|e| {
        TrainError::Config {
            field: "model".into(),
            what: format!("{}: {e}", file.display()),
        }
    })?;
    let data = vm.data().lock().expect("varmap lock");
    let vars = names.iter().map(|n| (n.clone(), data[n].clone())).collect();
    Ok((text, vars))
}

/// Rebuilds the UNet with every weight a trainable `Var` (full fine-tune), from the model's
/// UNet weights file (diffusers folder only).
fn trainable_unet(
    model: &Path,
    loaded: &UNet2DConditionModel,
    device: &Device,
) -> Result<(UNet2DConditionModel, Vec<(String, Var)>)> {
    if !model.is_dir() {
        return Err(TrainError::Config {
            field: "model".into(),
            what: "full fine-tuning and DreamBooth need a diffusers folder (they write one back)"
                .into(),
        });
    }
    let file =
        strata_models::loading::weights_file(&model.join("unet"), "diffusion_pytorch_model", false)
            .map_err(|e| TrainError::Config {
                field: "model".into(),
                what: e.to_string(),
            })?;
    let tensors = strata_models::loading::read_safetensors(&file, device).map_err(|e| {
        TrainError::Config {
            field: "model".into(),
            what: e.to_string(),
        }
    })?;
    let vm = candle_nn::VarMap::new();
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    {
        let mut data = vm.data().lock().expect("varmap lock");
        for n in &names {
            let t = tensors[n].to_dtype(DType::F32).map_err(ce("weights"))?;
            data.insert(n.clone(), Var::from_tensor(&t).map_err(ce("weights"))?);
        }
    }
    let vb = VarBuilder::from_varmap(&vm, DType::F32, device);
    let unet = UNet2DConditionModel::new(loaded.config.clone(), vb)
        .map_err(ce("building the trainable UNet"))?;
    let data = vm.data().lock().expect("varmap lock");
    let vars = names.iter().map(|n| (n.clone(), data[n].clone())).collect();
    Ok((unet, vars))
}

/// Appends one JSON line to `path`.
pub fn append_jsonl(path: &Path, v: &impl Serialize) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            what: "opening the log",
            source: e,
        })?;
    writeln!(f, "{}", serde_json::to_string(v).expect("serialises")).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        what: "writing the log",
        source: e,
    })
}
