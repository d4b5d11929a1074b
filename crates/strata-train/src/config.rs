//! Every option of a training run, settable from a TOML file (`--config`) and the command
//! line. Defaults are the paper's (AdamW lr 1e-4 with cosine decay, batch 10, 10 epochs,
//! caption dropout 0.1).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::{AdamWParams, LrSchedule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Lora,
    Dreambooth,
    TextualInversion,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionKind {
    Fixed,
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
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    No,
    Bf16,
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
    /// Print a progress bar (the CLI turns it off when not on a terminal).
    #[serde(skip)]
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let a = AdamWParams::default();
        Self {
            method: Method::Lora,
            model: PathBuf::new(),
            data: PathBuf::new(),
            out: PathBuf::new(),
            tokenizer: None,
            captions: Captions::Hierarchical,
            fusion: FusionKind::Fixed,
            fusion_mode: strata_models::fusion::FusionMode::Concat,
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

impl TrainConfig {
    /// Parses a TOML file of options (kebab- or snake-case keys as in this struct).
    pub fn from_toml_str(s: &str, path: &std::path::Path) -> Result<Self> {
        toml::from_str(s).map_err(|e| TrainError::Format {
            path: path.to_path_buf(),
            what: format!("invalid training config: {e}"),
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
                "required: a dataset folder with metadata.jsonl",
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
        if self.resolution < 8 || self.resolution % 8 != 0 {
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
        self.targets()?;
        Ok(())
    }
}
