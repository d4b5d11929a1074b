//! The conditional fusion module (paper §3.2.2): segment weights w(t) = (w_scene,
//! w_relation, w_elements) that depend on the diffusion timestep, and their injection into
//! the UNet's cross-attention.
//!
//! Timesteps follow diffusers: `t ∈ [0, T)`, `t = T − 1` is pure noise, i.e. the *start* of
//! denoising. With `s = t / (T − 1)`, the fixed schedule is
//!
//! ```text
//! raw_i(s) = floor + exp(−(s − c_i)² / (2 σ_i²)),   w_i = raw_i / Σ_j raw_j
//! ```
//!
//! with defaults `c = (1.0, 0.5, 0.0)` (scene peaks at the start of denoising, relation in
//! the middle, elements at the end), `σ = (0.3, 0.3, 0.3)`, `floor = 0.05`. All are
//! configurable ([`FixedSchedule`]). The weights sum to 1 at every t.
//!
//! The learned variant ([`LearnedSchedule`]) is a small MLP on the sinusoidal timestep
//! embedding (the UNet's `flip_sin_to_cos` form): `emb(t) → Linear → SiLU → Linear → softmax`,
//! initialised to reproduce the fixed schedule (first layer seeded on the slow embedding
//! components, second layer fitted by least squares to `log w(t)`), trainable with LoRA and
//! saved as safetensors.
//!
//! Injection ([`FusionMode`]): `Concat` multiplies segment i by `3·w_i` (so uniform weights
//! leave the encodings unchanged) and concatenates the three 77-token encodings into one
//! 231-token context — any SD UNet consumes it. `Decoupled` hands the UNet the three
//! encodings and w(t); its cross-attention attends to each segment with the same K/V
//! projections and mixes the three outputs by w(t).

use std::path::PathBuf;

use candle_core::{Result as CandleResult, Tensor};

use crate::conditioning::Conditioning;
use crate::segments::NUM_SEGMENTS;

mod fixed;
mod learned;
pub mod record;
mod solve;

pub use fixed::FixedSchedule;
pub use learned::{timestep_embedding, LearnedConfig, LearnedSchedule, LEARNED_PREFIX};
pub use record::{CaptionMode, FusionRecord};

/// Training timesteps of SD-1.x.
pub const DEFAULT_TRAIN_TIMESTEPS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read fusion weights {path}: {what}; it should be a safetensors file written by strata (keys {prefix}linear_1.weight, …)")]
    Read {
        path: PathBuf,
        prefix: String,
        what: String,
    },
    /// A training record (header entries, `fusion/config.json`) that cannot be used.
    #[error("{path}: fusion record `{field}`: {what}")]
    Record {
        path: PathBuf,
        field: String,
        what: String,
    },
    #[error("invalid fusion schedule: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing the schedule's safetensors file.
    #[error(transparent)]
    File(#[from] crate::error::ModelError),
}

/// How the fused segments reach the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FusionMode {
    /// Weighted segments concatenated into one `(B, 3·77, D)` context.
    Concat,
    /// Segments `(B, 3, 77, D)` + weights `(B, 3)`; the UNet mixes per-segment attention.
    Decoupled,
}

impl std::str::FromStr for FusionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "concat" => Ok(Self::Concat),
            "decoupled" => Ok(Self::Decoupled),
            _ => Err(format!(
                "unknown fusion mode {s:?}: use concat or decoupled"
            )),
        }
    }
}

/// Where w(t) comes from.
#[derive(Debug, Clone)]
pub enum Schedule {
    Fixed(FixedSchedule),
    Learned(LearnedSchedule),
}

impl Schedule {
    pub fn num_train_timesteps(&self) -> usize {
        match self {
            Schedule::Fixed(f) => f.num_train_timesteps,
            Schedule::Learned(l) => l.config.num_train_timesteps,
        }
    }
    pub fn weights_tensor(
        &self,
        timesteps: &[f64],
        device: &candle_core::Device,
    ) -> CandleResult<Tensor> {
        match self {
            Schedule::Fixed(f) => f.weights_tensor(timesteps, device),
            Schedule::Learned(l) => l.weights_tensor(timesteps)?.to_device(device),
        }
    }
    pub fn weights(&self, t: f64) -> CandleResult<[f64; NUM_SEGMENTS]> {
        match self {
            Schedule::Fixed(f) => Ok(f.weights(t)),
            Schedule::Learned(l) => l.weights(t),
        }
    }
}

/// The fusion module: schedule + injection mode.
#[derive(Debug, Clone)]
pub struct Fusion {
    pub schedule: Schedule,
    pub mode: FusionMode,
}

impl Fusion {
    pub fn new(schedule: Schedule, mode: FusionMode) -> Self {
        Self { schedule, mode }
    }

    /// Conditioning for segment encodings `(B, 3, N, D)` at per-sample timesteps (`B`
    /// values). `Concat`: `(B, 3·N, D)` with segment i scaled by `3·w_i(t)`. `Decoupled`:
    /// the segments unchanged and the weights `(B, 3)`.
    pub fn condition(&self, segments: &Tensor, timesteps: &[f64]) -> CandleResult<Conditioning> {
        let (b, k, n, d) = segments.dims4()?;
        if k != NUM_SEGMENTS || timesteps.len() != b {
            candle_core::bail!(
                "fusion expects segments (B, 3, N, D) and B timesteps, got {:?} and {} timesteps",
                segments.dims(),
                timesteps.len()
            );
        }
        let w = self
            .schedule
            .weights_tensor(timesteps, segments.device())?
            .to_dtype(segments.dtype())?;
        Ok(match self.mode {
            FusionMode::Concat => {
                let scale = (w * NUM_SEGMENTS as f64)?.reshape((b, NUM_SEGMENTS, 1, 1))?;
                Conditioning::Context(segments.broadcast_mul(&scale)?.reshape((
                    b,
                    NUM_SEGMENTS * n,
                    d,
                ))?)
            }
            FusionMode::Decoupled => Conditioning::Decoupled {
                segments: segments.clone(),
                weights: w,
            },
        })
    }
}
