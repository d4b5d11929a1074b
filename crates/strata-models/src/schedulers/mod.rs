//! Noise schedulers (samplers) behind one object-safe trait, [`Scheduler`], used as
//! `Box<dyn Scheduler>` by the generation pipeline and by the trainer:
//!
//! - DDIM (deterministic with η = 0; the SD-1.5 defaults: 30 steps, `steps_offset = 1`, no
//!   `set_alpha_to_one`) and DDPM (the training side: noise schedule, `add_noise`, ε or v
//!   targets, and the ancestral step with `fixed_small` variance);
//! - Euler ancestral, DPM-Solver++ 2M (with or without Karras sigmas) and UniPC (bh2).
//!
//! Each one reproduces the diffusers class of the same name (`DDIMScheduler`, `DDPMScheduler`,
//! `EulerAncestralDiscreteScheduler`, `DPMSolverMultistepScheduler`,
//! `UniPCMultistepScheduler`) and is checked step by step against full sampling loops run
//! with diffusers (fixtures made by `scripts/fixtures/diffusion_schedulers.py`).
//!
//! We write our own rather than use candle-transformers' schedulers because those cover
//! fewer samplers, keep no image-to-image begin index, take no external noise source and
//! read no `scheduler_config.json`.
//!
//! Stochastic samplers draw their noise from an explicit [`NoiseSource`] given to every
//! [`Scheduler::step`], so generation stays seeded and tests can inject the reference's
//! exact noise. Multistep history (DPM-Solver++, UniPC) lives inside the scheduler and is
//! reset by [`Scheduler::set_timesteps`].

mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod euler_ancestral;
mod sigmas;
mod unipc;

pub use config::{
    ensure_scheduler_config, model_scheduler_config_path, read_model_scheduler_config,
    scheduler_from_config, training_scheduler, write_scheduler_config, Sampler, SchedulerConfig,
    SchedulerConfigError, SAMPLER_CLASSES, SUPPORTED_CLASSES,
};
pub use ddim::{DdimConfig, DdimScheduler};
pub use ddpm::{DdpmConfig, DdpmScheduler};
pub use dpm_solver::{DpmSolverMultistepScheduler, DpmSolverOptions};
pub use euler_ancestral::EulerAncestralScheduler;
pub use sigmas::FinalSigma;
pub use unipc::{UniPcOptions, UniPcScheduler, UniPcSolverType};

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

/// How the betas of the forward process are laid out over the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, T)`.
    Linear,
    /// `linspace(√beta_start, √beta_end, T)²` (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal (diffusers' `squaredcos_cap_v2`):
    /// ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), betas capped at 0.999.
    SquaredCosCapV2,
}

/// What the denoiser predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionType {
    /// The added noise ε (SD-1.5).
    Epsilon,
    /// v = √ᾱ·ε − √(1−ᾱ)·x₀ (SD-2 768-v).
    VPrediction,
}

/// How inference timesteps are spread over the training steps (diffusers'
/// `timestep_spacing`; Table 2 of Lin et al., "Common Diffusion Noise Schedules and Sample
/// Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepSpacing {
    /// Evenly from T−1 down to 0.
    Linspace,
    /// Multiples of T/n from 0, plus `steps_offset` (SD-1.5's DDIM/DDPM default).
    Leading,
    /// Multiples of T/n down from T, minus one.
    Trailing,
}

/// The forward-process noise schedule shared by all schedulers.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// Betas computed in f32 like diffusers does (`torch.linspace(..., dtype=float32)`), so the
    /// cumulative products match its values to float precision.
    pub fn new(train_steps: usize, beta_start: f64, beta_end: f64, schedule: BetaSchedule) -> Self {
        let lin = |a: f64, b: f64| -> Vec<f64> {
            (0..train_steps)
                .map(|i| {
                    if train_steps == 1 {
                        a
                    } else {
                        a + (b - a) * i as f64 / (train_steps - 1) as f64
                    }
                })
                .collect()
        };
        let betas: Vec<f64> = match schedule {
            BetaSchedule::Linear => lin(beta_start, beta_end)
                .into_iter()
                .map(|b| b as f32 as f64)
                .collect(),
            BetaSchedule::ScaledLinear => lin(beta_start.sqrt(), beta_end.sqrt())
                .into_iter()
                .map(|b| {
                    let b = b as f32;
                    (b * b) as f64
                })
                .collect(),
            BetaSchedule::SquaredCosCapV2 => {
                let abar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..train_steps)
                    .map(|i| {
                        let t1 = i as f64 / train_steps as f64;
                        let t2 = (i + 1) as f64 / train_steps as f64;
                        (1.0 - abar(t2) / abar(t1)).min(0.999) as f32 as f64
                    })
                    .collect()
            }
        };
        Self::from_betas(betas)
    }

    /// A schedule from explicit betas (diffusers' `trained_betas`), rounded to f32 like
    /// diffusers' `torch.tensor(trained_betas, dtype=float32)`.
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let betas: Vec<f64> = betas.into_iter().map(|b| b as f32 as f64).collect();
        let mut alphas_cumprod = Vec::with_capacity(betas.len());
        let mut acc = 1f32;
        for b in &betas {
            acc *= 1.0 - *b as f32;
            alphas_cumprod.push(acc as f64);
        }
        Self {
            betas,
            alphas_cumprod,
        }
    }

    pub fn train_steps(&self) -> usize {
        self.betas.len()
    }

    fn check_t(&self, t: usize) -> Result<()> {
        if t >= self.alphas_cumprod.len() {
            candle_core::bail!(
                "timestep {t} is outside the schedule's {} training steps",
                self.alphas_cumprod.len()
            )
        }
        Ok(())
    }

    /// A `(B, 1, 1, ...)` tensor of `f(ᾱ_t)` for each batch item, matching `like`'s rank.
    fn per_item(
        &self,
        timesteps: &[usize],
        like: &Tensor,
        f: impl Fn(f64) -> f64,
    ) -> Result<Tensor> {
        let b = like.dim(0)?;
        if timesteps.len() != b {
            candle_core::bail!("{} timesteps given for a batch of {b}", timesteps.len())
        }
        let mut vals = Vec::with_capacity(b);
        for &t in timesteps {
            self.check_t(t)?;
            vals.push(f(self.alphas_cumprod[t]) as f32);
        }
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, like.rank() - 1));
        Tensor::from_vec(vals, shape, like.device())?.to_dtype(like.dtype())
    }

    /// x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, one timestep per batch item.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let a = self.per_item(timesteps, x0, |a| a.sqrt())?;
        let s = self.per_item(timesteps, x0, |a| (1.0 - a).sqrt())?;
        x0.broadcast_mul(&a)?.add(&noise.broadcast_mul(&s)?)
    }

    /// v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀.
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let a = self.per_item(timesteps, x0, |a| a.sqrt())?;
        let s = self.per_item(timesteps, x0, |a| (1.0 - a).sqrt())?;
        noise.broadcast_mul(&a)?.sub(&x0.broadcast_mul(&s)?)
    }
}

/// Where a stochastic sampler gets its standard-normal noise: a seeded generator in the
/// pipeline, the reference's recorded noise in tests. Any `FnMut(&[usize]) -> Result<Tensor>`
/// is one. The returned tensor is converted to the sample's dtype and device.
pub trait NoiseSource {
    /// Standard-normal noise of `shape`.
    fn normal(&mut self, shape: &[usize]) -> Result<Tensor>;
}

impl<F: FnMut(&[usize]) -> Result<Tensor>> NoiseSource for F {
    fn normal(&mut self, shape: &[usize]) -> Result<Tensor> {
        self(shape)
    }
}

/// A noise source for deterministic samplers: asking it for noise is an error.
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn normal(&mut self, shape: &[usize]) -> Result<Tensor> {
        candle_core::bail!(
            "this sampler needs random noise of shape {shape:?} at each step; pass a noise source"
        )
    }
}

/// Draws noise like `sample` (its shape, dtype and device).
pub(crate) fn noise_like(noise: &mut dyn NoiseSource, like: &Tensor) -> Result<Tensor> {
    let n = noise.normal(like.dims())?;
    if n.dims() != like.dims() {
        candle_core::bail!(
            "the noise source returned shape {:?} for a sample of shape {:?}",
            n.dims(),
            like.dims()
        )
    }
    n.to_device(like.device())?.to_dtype(like.dtype())
}

/// One sampler: a noise schedule, its inference timesteps and its update rule.
///
/// Usage (what diffusers' pipelines do): `set_timesteps(n)`, start from noise ×
/// `init_noise_sigma()`, then for each `t` of `timesteps()`: run the model on
/// `scale_model_input(x, t)` and set `x = step(model_output, t, x, noise)`.
pub trait Scheduler: Send + Sync {
    /// The diffusers class this scheduler reproduces (`"DDIMScheduler"`, ...).
    fn class_name(&self) -> &'static str;
    /// The forward-process schedule.
    fn schedule(&self) -> &NoiseSchedule;
    /// What the model predicts.
    fn prediction_type(&self) -> PredictionType;
    /// Chooses `n` inference steps and clears any multistep history; `timesteps()` then
    /// lists them, noisiest first.
    fn set_timesteps(&mut self, n: usize) -> Result<()>;
    /// The current inference timesteps, noisiest first. Whole numbers except for Euler
    /// ancestral with `linspace` spacing, which (like diffusers) evaluates the model at
    /// fractional timesteps.
    fn timesteps(&self) -> &[f64];
    /// σ = √((1−ᾱ)/ᾱ) at each inference step plus the final one (σ-parameterised samplers);
    /// empty for DDIM and DDPM.
    fn sigmas(&self) -> &[f64] {
        &[]
    }
    /// Standard deviation of the initial noise (1 except for Euler ancestral).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// The model's input at timestep `t` (identity except for Euler ancestral, which divides
    /// by √(σ²+1)).
    fn scale_model_input(&self, sample: &Tensor, _t: f64) -> Result<Tensor> {
        Ok(sample.clone())
    }
    /// One reverse step from `t` given the model output (at `scale_model_input(sample, t)`).
    /// Stochastic samplers (DDPM, Euler ancestral, DDIM with η > 0) draw one tensor of the
    /// sample's shape from `noise` per step.
    fn step(
        &mut self,
        model_output: &Tensor,
        t: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;
    /// Makes the next `step` start at inference step `index` (image-to-image), like
    /// diffusers' `set_begin_index`.
    fn set_begin_index(&mut self, index: usize);
    /// Image-to-image: `x0` noised to the level of inference step `index`.
    fn add_noise_at_step(&self, x0: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor>;

    /// Image-to-image (diffusers' `get_timesteps` + `set_begin_index`): keeps the last
    /// `strength` share of the inference steps and returns the index of the first one kept,
    /// where the init latents are noised to with [`Scheduler::add_noise_at_step`].
    fn img2img_begin(&mut self, strength: f64) -> Result<usize> {
        if !(strength > 0.0 && strength <= 1.0) {
            candle_core::bail!("img2img strength must be in (0, 1], got {strength}")
        }
        let n = self.timesteps().len();
        let init = ((n as f64 * strength) as usize).min(n);
        if init == 0 {
            candle_core::bail!("strength {strength} leaves no denoising step out of {n}")
        }
        let start = n - init;
        self.set_begin_index(start);
        Ok(start)
    }

    /// Forward process for training: noisy sample at per-item (integer) timesteps.
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        self.schedule().add_noise(x0, noise, timesteps)
    }

    /// The regression target of the diffusion loss (Eq. 7): ε, or v for v-prediction.
    fn training_target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        match self.prediction_type() {
            PredictionType::Epsilon => Ok(noise.clone()),
            PredictionType::VPrediction => self.schedule().velocity(x0, noise, timesteps),
        }
    }
}

/// Integer timesteps of the single-step schedulers (DDIM, DDPM): `n` of them with `spacing`,
/// descending; `who` names the scheduler in errors.
pub(crate) fn discrete_timesteps(
    who: &str,
    spacing: TimestepSpacing,
    train_steps: usize,
    n: usize,
    offset: usize,
) -> Result<Vec<usize>> {
    if n == 0 || n > train_steps {
        candle_core::bail!("{who}: {n} inference steps requested, must be 1..={train_steps}")
    }
    let ts: Vec<usize> = match spacing {
        TimestepSpacing::Leading => leading_timesteps(who, train_steps, n, offset)?.0,
        TimestepSpacing::Linspace => sigmas::linspace(0.0, (train_steps - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v.round_ties_even() as usize)
            .collect(),
        TimestepSpacing::Trailing => sigmas::trailing(train_steps, n)
            .into_iter()
            .map(|v| v as usize)
            .collect(),
    };
    Ok(ts)
}

/// diffusers' "leading" timestep spacing: `n` steps `train_steps / n` apart, descending,
/// shifted by `offset` (`steps_offset`). Returns the steps and their spacing; `who` names the
/// scheduler in errors.
pub(crate) fn leading_timesteps(
    who: &str,
    train_steps: usize,
    n: usize,
    offset: usize,
) -> Result<(Vec<usize>, usize)> {
    if n == 0 || n > train_steps {
        candle_core::bail!("{who}: {n} inference steps requested, must be 1..={train_steps}")
    }
    let ratio = train_steps / n;
    let ts: Vec<usize> = (0..n).rev().map(|i| i * ratio + offset).collect();
    if ts[0] >= train_steps {
        candle_core::bail!(
            "{who}: steps_offset {offset} pushes timestep {} past the {train_steps} training steps",
            ts[0]
        )
    }
    Ok((ts, ratio))
}

/// x₀ and ε recovered from a model output at ᾱ_t (shared by DDIM and DDPM).
fn predict_x0_eps(
    pred: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod_t: f64,
) -> Result<(Tensor, Tensor)> {
    let beta_prod_t = 1.0 - alpha_prod_t;
    let (sa, sb) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
    match pred {
        PredictionType::Epsilon => {
            let x0 = ((sample - (model_output * sb)?)? / sa)?;
            Ok((x0, model_output.clone()))
        }
        PredictionType::VPrediction => {
            let x0 = ((sample * sa)? - (model_output * sb)?)?;
            let eps = ((model_output * sa)? + (sample * sb)?)?;
            Ok((x0, eps))
        }
    }
}

fn clip(x: Tensor, clip_sample: Option<f64>) -> Result<Tensor> {
    match clip_sample {
        Some(r) => x.clamp(-r, r),
        None => Ok(x),
    }
}

/// `t` as a training-step index (DDIM and DDPM use whole timesteps).
fn whole_timestep(who: &str, t: f64) -> Result<usize> {
    if t < 0.0 || t.fract() != 0.0 {
        candle_core::bail!("{who}: timestep {t} is not a whole non-negative number")
    }
    Ok(t as usize)
}

fn f32_of(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)
}
