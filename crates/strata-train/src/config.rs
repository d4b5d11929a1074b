//! Every option of a training run, settable from a TOML file (`--config`) and the command
//! line. Defaults are the paper's (AdamW lr 1e-4 with cosine decay, batch 10, 10 epochs,
//! caption dropout 0.1).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::bucket::BucketOptions;
use crate::error::{Result, TrainError};
use crate::optim::{AdamWParams, LrSchedule};

/// What a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Low-rank adapters on the UNet's projections; the base weights stay frozen.
    Lora,
    /// The whole UNet, with prior preservation on class images (--class-data).
    Dreambooth,
    /// New token embeddings only (--placeholder-token, --num-vectors).
    #[cfg_attr(feature = "clap", value(alias = "ti"))]
    TextualInversion,
    /// Every UNet weight (how the embedded base model was trained).
    Full,
    /// Train the VAE (encoder and decoder) on the images: reconstruction + small KL.
    Vae,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "lora" => Self::Lora,
            "dreambooth" => Self::Dreambooth,
            "textual-inversion" | "ti" => Self::TextualInversion,
            "full" => Self::Full,
            "vae" => Self::Vae,
            _ => {
                return Err(format!(
                    "unknown method {s:?}: use lora, dreambooth, textual-inversion, full or vae"
                ))
            }
        })
    }
}

/// Which caption a run conditions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Captions {
    /// Three segments (scene, relation, elements) fused by timestep.
    Hierarchical,
    /// The dataset's traditional one-sentence caption (`text`).
    Flat,
}

impl std::str::FromStr for Captions {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hierarchical" => Ok(Self::Hierarchical),
            "flat" => Ok(Self::Flat),
            _ => Err(format!(
                "unknown captions mode {s:?}: use hierarchical or flat"
            )),
        }
    }
}

/// How the segment weights w(t) are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FusionKind {
    /// Fixed Gaussian curves over the timestep (scene early, elements late).
    Fixed,
    /// A small network of the timestep, initialised from the fixed curves and trained.
    Learned,
}

impl std::str::FromStr for FusionKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "learned" => Ok(Self::Learned),
            _ => Err(format!("unknown fusion {s:?}: use fixed or learned")),
        }
    }
}

/// Mixed-precision training: frozen weights and activations in half precision, trainable
/// weights and optimiser moments in f32 (master weights). f16 uses dynamic loss scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    /// Everything in f32.
    No,
    /// Frozen weights and activations in bfloat16.
    Bf16,
    /// Frozen weights and activations in float16, with dynamic loss scaling (kohya: `fp16`).
    #[serde(alias = "fp16")]
    #[cfg_attr(feature = "clap", value(alias = "fp16"))]
    F16,
}

impl MixedPrecision {
    /// The dtype of frozen weights and activations.
    pub fn compute_dtype(self) -> candle_core::DType {
        match self {
            Self::No => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
            Self::F16 => candle_core::DType::F16,
        }
    }
}

impl std::str::FromStr for MixedPrecision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "no" => Ok(Self::No),
            "bf16" => Ok(Self::Bf16),
            "f16" | "fp16" => Ok(Self::F16),
            _ => Err(format!(
                "unknown mixed precision {s:?}: use no, bf16 or f16"
            )),
        }
    }
}

/// A whole run's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub method: Method,
    pub model: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    /// Tokenizer override (a single-file model carries none).
    pub tokenizer: Option<PathBuf>,
    pub captions: Captions,
    pub fusion: FusionKind,
    pub fusion_mode: strata_models::fusion::FusionMode,
    /// Fixed schedule (and the learned one's starting point): where the scene, relation and
    /// elements curves peak, in s = t/(T−1) (1 = start of denoising); each in [0, 1].
    pub fusion_centers: [f64; 3],
    /// Fixed schedule: width σ of each curve, in units of s; each > 0.
    pub fusion_widths: [f64; 3],
    /// Fixed schedule: added to every curve before normalising, so no segment's weight
    /// reaches zero; ≥ 0.
    pub fusion_floor: f64,
    /// Image side in pixels (images are resized and centre-cropped to it).
    pub resolution: usize,
    pub batch_size: usize,
    pub epochs: usize,
    /// Stop after this many optimiser steps (overrides `epochs` when set).
    pub max_steps: Option<u64>,
    pub gradient_accumulation: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: u64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub weight_decay: f64,
    /// Probability that all segments (or the flat caption) of an image are emptied.
    pub caption_dropout: f64,
    /// min-SNR-γ loss weighting (γ = 5 is usual); off when unset.
    pub min_snr_gamma: Option<f64>,
    pub seed: u64,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    /// Which projections get adapters: any of `attention`, `proj`, `ff`.
    pub lora_targets: Vec<String>,
    /// LoRA: also train adapters on the text encoder's attention (`q/k/v/out_proj`) and MLP
    /// (`fc1`, `fc2`) projections (written as `lora_te_…` in the same file).
    pub lora_text_encoder: bool,
    /// Full fine-tune and DreamBooth: train every text-encoder weight with the UNet (kohya's
    /// `train_text_encoder`); the captions go through it at every step and the output
    /// folder's `text_encoder/` holds the trained weights.
    pub train_text_encoder: bool,
    /// Learning rate of the text-encoder weights (`train_text_encoder`) or adapters
    /// (`lora_text_encoder`) (kohya's `text_encoder_lr`; it follows the same schedule as
    /// `lr`) [default: `lr`].
    pub text_encoder_lr: Option<f64>,
    /// Write a checkpoint every N optimiser steps (and always at the end).
    pub checkpoint_every: u64,
    /// How many checkpoints to keep (oldest removed first; at least 1).
    pub keep_checkpoints: usize,
    /// Validation images every N steps (0 = never) for `validation_prompts`.
    pub validation_every: u64,
    pub validation_prompts: Vec<String>,
    pub validation_steps: usize,
    /// DreamBooth: a dataset folder of class images (prior preservation).
    pub class_data: Option<PathBuf>,
    pub prior_loss_weight: f64,
    /// Textual inversion: the new token, its vector count and the word its vectors start from.
    pub placeholder_token: String,
    pub num_vectors: usize,
    pub initializer_token: String,
    /// VAE training: weight of the KL term (mean over latent elements) beside the L1
    /// reconstruction loss (mean over pixels).
    pub vae_kl_weight: f64,
    /// VAE training: train on random square crops of this side (0 = whole images); the VAE
    /// is convolutional, so crops cut the cost per step without changing the model.
    pub vae_crop: usize,
    /// `no`, `bf16` or `f16` (f16 with dynamic loss scaling).
    pub mixed_precision: MixedPrecision,
    /// Where the run trains (`cpu`, `cuda`, `cuda:N`).
    pub device: strata_models::device::DeviceSpec,
    /// Keep the training images' latents on disk (one file per image and size, keyed by the
    /// VAE weights, the size and the image file) and reuse them across runs.
    pub cache_latents: bool,
    /// Folder of the latent cache (default: `.strata-latent-cache/` in the dataset folder,
    /// or beside a kohya dataset TOML).
    pub latent_cache_dir: Option<PathBuf>,
    /// Aspect-ratio bucketing: each image trains at the bucket (area ≤ resolution²) nearest
    /// its aspect ratio; every batch holds one bucket.
    pub bucket: bool,
    /// Smallest bucket side (default: resolution / 2, kohya's 256 at 512).
    pub min_bucket_reso: Option<usize>,
    /// Largest bucket side (default: resolution × 2, kohya's 1024 at 512).
    pub max_bucket_reso: Option<usize>,
    /// Bucket sides are multiples of this (default: 64 × resolution / 512, rounded up to the
    /// model's down-sampling).
    pub bucket_reso_steps: Option<usize>,
    /// Print a progress bar (the CLI turns it off when not on a terminal).
    #[serde(skip)]
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let a = AdamWParams::default();
        let fixed = strata_models::fusion::FixedSchedule::default();
        Self {
            method: Method::Lora,
            model: PathBuf::new(),
            data: PathBuf::new(),
            out: PathBuf::new(),
            tokenizer: None,
            captions: Captions::Hierarchical,
            fusion: FusionKind::Fixed,
            fusion_mode: strata_models::fusion::FusionMode::Concat,
            fusion_centers: fixed.centers,
            fusion_widths: fixed.widths,
            fusion_floor: fixed.floor,
            resolution: 512,
            batch_size: 10,
            epochs: 10,
            max_steps: None,
            gradient_accumulation: 1,
            lr: 1e-4,
            lr_schedule: LrSchedule::Cosine,
            warmup_steps: 0,
            adam_beta1: a.beta1,
            adam_beta2: a.beta2,
            adam_eps: a.eps,
            weight_decay: a.weight_decay,
            caption_dropout: 0.1,
            min_snr_gamma: None,
            seed: 0,
            lora_rank: 4,
            lora_alpha: 4.0,
            lora_targets: vec!["attention".into()],
            lora_text_encoder: false,
            train_text_encoder: false,
            text_encoder_lr: None,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            validation_every: 0,
            validation_prompts: vec![],
            validation_steps: 20,
            class_data: None,
            prior_loss_weight: 1.0,
            placeholder_token: "<strata>".into(),
            num_vectors: 1,
            initializer_token: "aerial".into(),
            vae_kl_weight: 1e-4,
            vae_crop: 0,
            mixed_precision: MixedPrecision::No,
            device: strata_models::device::DeviceSpec::Cpu,
            cache_latents: false,
            latent_cache_dir: None,
            bucket: false,
            min_bucket_reso: None,
            max_bucket_reso: None,
            bucket_reso_steps: None,
            progress: false,
        }
    }
}

fn bad(field: &str, what: impl Into<String>) -> TrainError {
    TrainError::Config {
        field: field.into(),
        what: what.into(),
    }
}

/// A TOML error as one line, `line N: message`: toml's own rendering spans several (a
/// source excerpt with a caret), and an error message is one line.
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let at = e
        .span()
        .map(|r| {
            format!(
                "line {}: ",
                1 + text[..r.start.min(text.len())].matches('\n').count()
            )
        })
        .unwrap_or_default();
    format!("{at}{}", e.message().trim_end())
}

impl TrainConfig {
    /// Parses a TOML file of options: snake_case keys as in this struct, or kohya's names for
    /// the same options ([`KOHYA_ALIASES`]). Unknown keys are refused, naming the key.
    pub fn from_toml_str(s: &str, path: &std::path::Path) -> Result<Self> {
        let err = |what: String| TrainError::Format {
            path: path.to_path_buf(),
            what,
        };
        let mut table: toml::Table = toml::from_str(s)
            .map_err(|e| err(format!("invalid TOML: {}", toml_error_line(s, &e))))?;
        let original = table.clone();
        translate_kohya_keys(&mut table).map_err(|w| err(format!("training config: {w}")))?;
        let parsed = if table == original {
            // nothing translated: parse the text itself, so errors carry line and column
            toml::from_str(s)
        } else {
            table.try_into()
        };
        parsed.map_err(|e| {
            err(format!(
                "invalid training config: {}; the keys are the long options of `strata train` in snake_case (e.g. batch_size), or kohya's names (e.g. learning_rate)",
                toml_error_line(s, &e)
            ))
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    pub fn adam(&self) -> AdamWParams {
        AdamWParams {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
        }
    }

    /// The fixed fusion schedule of `fusion_centers`, `fusion_widths` and `fusion_floor`.
    pub fn fixed_schedule(&self) -> strata_models::fusion::FixedSchedule {
        strata_models::fusion::FixedSchedule {
            centers: self.fusion_centers,
            widths: self.fusion_widths,
            floor: self.fusion_floor,
            ..Default::default()
        }
    }

    pub fn targets(&self) -> Result<strata_models::lora::LoraTargets> {
        let mut t = strata_models::lora::LoraTargets {
            attention: false,
            proj: false,
            ff: false,
        };
        for s in &self.lora_targets {
            match s.as_str() {
                "attention" => t.attention = true,
                "proj" => t.proj = true,
                "ff" => t.ff = true,
                _ => {
                    return Err(bad(
                        "lora-targets",
                        format!("unknown target {s:?}: use attention, proj or ff"),
                    ))
                }
            }
        }
        if !(t.attention || t.proj || t.ff) {
            return Err(bad("lora-targets", "no target chosen"));
        }
        Ok(t)
    }

    /// The bucket limits of a bucketed run (`None` without `bucket`): the options given, the
    /// rest kohya's defaults scaled to the resolution ([`BucketOptions::defaults`]).
    /// `multiple` is the model's total down-sampling (VAE × UNet).
    pub fn bucket_options(&self, multiple: usize) -> Result<Option<BucketOptions>> {
        if !self.bucket {
            return Ok(None);
        }
        let mut d = BucketOptions::defaults(self.resolution, multiple);
        if let Some(s) = self.bucket_reso_steps {
            d.reso_steps = s;
        }
        if let Some(m) = self.min_bucket_reso {
            d.min_reso = m;
        }
        if let Some(m) = self.max_bucket_reso {
            d.max_reso = m;
        }
        d.validate(self.resolution, multiple)
            .map_err(|w| bad("bucket", w))?;
        Ok(Some(d))
    }

    /// Checks ranges and required paths.
    pub fn validate(&self) -> Result<()> {
        if self.model.as_os_str().is_empty() {
            return Err(bad(
                "model",
                "required: a diffusers folder or an SD-1.5 .safetensors file",
            ));
        }
        if self.data.as_os_str().is_empty() {
            return Err(bad(
                "data",
                "required: a dataset folder with metadata.jsonl, or a kohya dataset TOML",
            ));
        }
        if self.out.as_os_str().is_empty() {
            return Err(bad("out", "required: the run folder"));
        }
        if self.batch_size == 0 || self.gradient_accumulation == 0 || self.epochs == 0 {
            return Err(bad(
                "batch-size/gradient-accumulation/epochs",
                "must be at least 1",
            ));
        }
        if self.resolution < 8 || !self.resolution.is_multiple_of(8) {
            return Err(bad(
                "resolution",
                format!("{} is not a positive multiple of 8", self.resolution),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad("lr", "must be a positive number"));
        }
        if !(0.0..=1.0).contains(&self.caption_dropout) {
            return Err(bad("caption-dropout", "must lie in [0, 1]"));
        }
        if let Some(g) = self.min_snr_gamma {
            if !(g.is_finite() && g > 0.0) {
                return Err(bad("min-snr-gamma", "must be positive"));
            }
        }
        if self.lora_rank == 0 {
            return Err(bad("lora-rank", "must be at least 1"));
        }
        if self.lora_text_encoder && self.method != Method::Lora {
            return Err(bad(
                "lora-text-encoder",
                "text-encoder adapters are trained by the lora method only",
            ));
        }
        if self.train_text_encoder && !matches!(self.method, Method::Full | Method::Dreambooth) {
            return Err(bad(
                "train-text-encoder",
                "the whole text encoder is trained by the full and dreambooth methods only (LoRA: set lora-text-encoder instead)",
            ));
        }
        if let Some(lr) = self.text_encoder_lr {
            if !self.lora_text_encoder && !self.train_text_encoder {
                return Err(bad(
                    "text-encoder-lr",
                    "set lora-text-encoder (lora) or train-text-encoder (full, dreambooth) too; without it no text-encoder weight is trained",
                ));
            }
            if !(lr.is_finite() && lr > 0.0) {
                return Err(bad("text-encoder-lr", "must be a positive number"));
            }
        }
        if self.checkpoint_every == 0 || self.keep_checkpoints == 0 {
            return Err(bad(
                "checkpoint-every/keep-checkpoints",
                "must be at least 1",
            ));
        }
        if self.method == Method::Dreambooth && self.class_data.is_none() {
            return Err(bad(
                "class-data",
                "DreamBooth needs class images for prior preservation (a dataset folder)",
            ));
        }
        if self.method == Method::TextualInversion
            && (self.num_vectors == 0 || self.placeholder_token.trim().is_empty())
        {
            return Err(bad(
                "placeholder-token/num-vectors",
                "textual inversion needs a token and at least one vector",
            ));
        }
        if self
            .fusion_centers
            .iter()
            .any(|c| !(c.is_finite() && (0.0..=1.0).contains(c)))
        {
            return Err(bad(
                "fusion-centers",
                format!(
                    "each centre must lie in [0, 1] (s = t/(T−1), 1 = start of denoising); got {:?}",
                    self.fusion_centers
                ),
            ));
        }
        if self
            .fusion_widths
            .iter()
            .any(|w| !(w.is_finite() && *w > 0.0))
        {
            return Err(bad(
                "fusion-widths",
                format!(
                    "each width must be a finite number > 0 (in units of s = t/(T−1)); got {:?}",
                    self.fusion_widths
                ),
            ));
        }
        if !(self.fusion_floor.is_finite() && self.fusion_floor >= 0.0) {
            return Err(bad(
                "fusion-floor",
                format!("must be a finite number ≥ 0; got {}", self.fusion_floor),
            ));
        }
        self.targets()?;
        // the bucket step is checked against the model's down-sampling once it is loaded
        self.bucket_options(1)?;
        Ok(())
    }
}

/// kohya-ss (sd-scripts) training-config keys read as strata's: `(kohya name, strata name)`.
/// Their meaning matches; a few values are translated by [`translate_kohya_keys`].
pub const KOHYA_ALIASES: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("train_batch_size", "batch_size"),
    ("network_dim", "lora_rank"),
    ("network_alpha", "lora_alpha"),
    ("max_train_steps", "max_steps"),
    ("max_train_epochs", "epochs"),
    ("output_dir", "out"),
    ("pretrained_model_name_or_path", "model"),
    ("gradient_accumulation_steps", "gradient_accumulation"),
    ("save_every_n_steps", "checkpoint_every"),
    ("lr_scheduler", "lr_schedule"),
    ("lr_warmup_steps", "warmup_steps"),
    ("caption_dropout_rate", "caption_dropout"),
    ("dataset_config", "data"),
    ("enable_bucket", "bucket"),
];

/// kohya keys that change only speed, memory or logging, never the trained weights: accepted
/// and ignored (strata has its own attention, data loading and logging). kohya's
/// `cache_latents` and `cache_latents_to_disk` both turn on strata's `cache_latents` (on disk).
pub const KOHYA_IGNORED: &[&str] = &[
    "xformers",
    "sdpa",
    "mem_eff_attn",
    "gradient_checkpointing",
    "max_data_loader_n_workers",
    "persistent_data_loader_workers",
    "logging_dir",
    "log_prefix",
    "training_comment",
    "lowram",
    "highvram",
];

/// kohya training keys strata knows but does not support: they change what is trained, so
/// they are refused rather than ignored.
pub const KOHYA_UNSUPPORTED: &[&str] = &[
    "v2",
    "v_parameterization",
    "sdxl",
    "optimizer_type",
    "optimizer_args",
    "lr_scheduler_num_cycles",
    "lr_scheduler_power",
    "lr_scheduler_args",
    "lr_scheduler_type",
    "network_args",
    "network_dropout",
    "network_weights",
    "network_train_unet_only",
    "network_train_text_encoder_only",
    "dim_from_weights",
    "scale_weight_norms",
    "unet_lr",
    "clip_skip",
    "noise_offset",
    "multires_noise_iterations",
    "multires_noise_discount",
    "adaptive_noise_scale",
    "ip_noise_gamma",
    "zero_terminal_snr",
    "debiased_estimation_loss",
    "loss_type",
    "huber_c",
    "max_grad_norm",
    "max_token_length",
    "weighted_captions",
    "full_fp16",
    "full_bf16",
    "fp8_base",
    "no_half_vae",
    "vae",
    "save_precision",
    "save_model_as",
    "output_name",
    "save_every_n_epochs",
    "save_last_n_steps",
    "save_last_n_epochs",
    "save_state",
    "resume",
    "train_data_dir",
    "reg_data_dir",
    "in_json",
    "shuffle_caption",
    "keep_tokens",
    "color_aug",
    "flip_aug",
    "random_crop",
    "bucket_no_upscale",
    "caption_extension",
    "caption_tag_dropout_rate",
    "caption_dropout_every_n_epochs",
    "sample_every_n_steps",
    "sample_every_n_epochs",
    "sample_prompts",
    "sample_sampler",
    "log_with",
    "wandb_api_key",
    "stop_text_encoder_training",
];

/// Rewrites a parsed TOML table written with kohya's key names into strata's: renames the
/// keys of [`KOHYA_ALIASES`], translates `resolution` ("512" or "512,512"),
/// `lr_scheduler` names and `network_module`, drops [`KOHYA_IGNORED`] keys, and refuses
/// [`KOHYA_UNSUPPORTED`] ones. Returns the problem in words (the caller adds the file).
pub fn translate_kohya_keys(table: &mut toml::Table) -> std::result::Result<(), String> {
    for key in KOHYA_UNSUPPORTED {
        if table.contains_key(*key) {
            return Err(format!(
                "`{key}` is a kohya key strata does not support; remove it (see docs/train.md for the kohya keys strata reads)"
            ));
        }
    }
    for key in KOHYA_IGNORED {
        table.remove(*key);
    }
    if let Some(v) = table.remove("cache_latents_to_disk") {
        let on = v
            .as_bool()
            .ok_or("`cache_latents_to_disk` must be true or false")?;
        let before = table
            .get("cache_latents")
            .and_then(|x| x.as_bool())
            .unwrap_or(false);
        table.insert("cache_latents".into(), toml::Value::Boolean(on || before));
    }
    if let Some(v) = table.remove("network_module") {
        match v.as_str() {
            Some("networks.lora") => {
                if table.get("method").is_some_and(|m| m.as_str() != Some("lora")) {
                    return Err("`network_module = \"networks.lora\"` contradicts `method`; keep one".into());
                }
                table.insert("method".into(), toml::Value::String("lora".into()));
            }
            _ => {
                return Err(format!(
                    "`network_module = {v}`: strata trains kohya's `networks.lora` only (LoRA on the UNet); remove the key or set it to \"networks.lora\""
                ))
            }
        }
    }
    for (kohya, ours) in KOHYA_ALIASES {
        if let Some(v) = table.remove(*kohya) {
            if table.contains_key(*ours) {
                return Err(format!(
                    "both `{ours}` and its kohya name `{kohya}` are set; keep one"
                ));
            }
            table.insert((*ours).to_string(), v);
        }
    }
    if let Some(v) = table.get("lr_schedule") {
        let s = v.as_str().unwrap_or_default();
        let ours = match s {
            "cosine" | "constant" => s,
            // kohya's warm-up variant is our constant schedule with `lr_warmup_steps`
            "constant_with_warmup" => "constant",
            _ => {
                return Err(format!(
                    "`lr_scheduler`/`lr_schedule = {v}`: strata has cosine, constant and constant_with_warmup (= constant with lr_warmup_steps); kohya's other schedules are not supported"
                ))
            }
        };
        table.insert("lr_schedule".into(), toml::Value::String(ours.into()));
    }
    if let Some(v) = table.get("warmup_steps") {
        if let Some(f) = v.as_float() {
            return Err(format!(
                "`lr_warmup_steps`/`warmup_steps = {f}`: give a whole number of steps (kohya's ratio form is not supported)"
            ));
        }
    }
    if let Some(v) = table.get("resolution") {
        let side = parse_resolution(v)?;
        table.insert("resolution".into(), toml::Value::Integer(side as i64));
    }
    Ok(())
}

/// Whether a training-config TOML text sets `key` (strata's name, or a kohya name that
/// translates to it). Text that does not parse sets nothing (the parse reports it).
pub fn toml_sets(s: &str, key: &str) -> bool {
    let Ok(mut table) = toml::from_str::<toml::Table>(s) else {
        return false;
    };
    translate_kohya_keys(&mut table).is_ok() && table.contains_key(key)
}

/// A square training side from `512`, `"512"`, `"512,512"` or `[512, 512]` (kohya's forms).
pub fn parse_resolution(v: &toml::Value) -> std::result::Result<usize, String> {
    let sides: Vec<i64> = match v {
        toml::Value::Integer(n) => vec![*n],
        toml::Value::String(s) => s
            .split(',')
            .map(|p| p.trim().parse::<i64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                format!("`resolution = {v}`: use a side in pixels such as 512 or \"512,512\"")
            })?,
        toml::Value::Array(a) => a
            .iter()
            .map(|x| x.as_integer().ok_or(()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| format!("`resolution = {v}`: use whole numbers such as [512, 512]"))?,
        _ => {
            return Err(format!(
                "`resolution = {v}`: use a side in pixels such as 512"
            ))
        }
    };
    match sides.as_slice() {
        [s] | [s, _] if sides.iter().all(|x| x == s) && *s > 0 => Ok(*s as usize),
        [w, h] => Err(format!(
            "`resolution = {v}`: strata trains on square images ({w}x{h} is not square); use one side such as \"{}\"",
            w.max(h)
        )),
        _ => Err(format!(
            "`resolution = {v}`: use a positive side such as 512 or \"512,512\""
        )),
    }
}
