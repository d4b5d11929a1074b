//! DDIM (Song et al.): deterministic sampling for η = 0, stochastic for η > 0.

use super::{
    clip, discrete_timesteps, noise_like, predict_x0_eps, whole_timestep, BetaSchedule,
    NoiseSchedule, NoiseSource, PredictionType, Scheduler, TimestepSpacing,
};
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DdimConfig {
    pub train_steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub prediction_type: PredictionType,
    /// Added to every inference timestep ("leading" spacing).
    pub steps_offset: usize,
    /// Whether ᾱ at the step after the last is 1 (`true`) or ᾱ₀ (`false`, SD-1.5).
    pub set_alpha_to_one: bool,
    pub clip_sample: Option<f64>,
    /// Stochasticity; 0 is deterministic DDIM.
    pub eta: f64,
}

impl DdimConfig {
    /// SD-1.5 inference scheduler: scaled-linear 0.00085–0.012, 1000 training steps,
    /// `steps_offset = 1`, `set_alpha_to_one = false`, no clipping, η = 0.
    pub fn sd15() -> Self {
        Self {
            train_steps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction_type: PredictionType::Epsilon,
            steps_offset: 1,
            set_alpha_to_one: false,
            clip_sample: None,
            eta: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DdimScheduler {
    pub config: DdimConfig,
    schedule: NoiseSchedule,
    spacing: TimestepSpacing,
    timesteps: Vec<usize>,
    timesteps_f: Vec<f64>,
    step_ratio: usize,
}

impl DdimScheduler {
    /// A DDIM scheduler with `n` inference steps (SD default: 30) and "leading" spacing.
    pub fn new(config: DdimConfig, n: usize) -> Result<Self> {
        let schedule = NoiseSchedule::new(
            config.train_steps,
            config.beta_start,
            config.beta_end,
            config.beta_schedule,
        );
        Self::with_schedule(config, schedule, TimestepSpacing::Leading, n)
    }

    /// As [`DdimScheduler::new`] with an explicit noise schedule (e.g. `trained_betas`) and
    /// timestep spacing.
    pub fn with_schedule(
        config: DdimConfig,
        schedule: NoiseSchedule,
        spacing: TimestepSpacing,
        n: usize,
    ) -> Result<Self> {
        if schedule.train_steps() != config.train_steps {
            candle_core::bail!(
                "DDIM: the schedule has {} steps but train_steps is {}",
                schedule.train_steps(),
                config.train_steps
            )
        }
        let mut s = Self {
            config,
            schedule,
            spacing,
            timesteps: vec![],
            timesteps_f: vec![],
            step_ratio: 1,
        };
        Scheduler::set_timesteps(&mut s, n)?;
        Ok(s)
    }

    /// The inference timesteps as training-step indices, noisiest first.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// img2img: the inference timesteps left after skipping the first `1 − strength` of them
    /// (diffusers' `get_timesteps`). The first returned timestep is where the init latents are
    /// noised to.
    pub fn img2img_timesteps(&self, strength: f64) -> Vec<usize> {
        let ts = &self.timesteps;
        let n = ts.len();
        let init = ((n as f64 * strength) as usize).min(n);
        ts[n - init..].to_vec()
    }

    fn final_alpha_cumprod(&self) -> f64 {
        if self.config.set_alpha_to_one {
            1.0
        } else {
            self.schedule.alphas_cumprod[0]
        }
    }

    /// One DDIM step from the whole timestep `t`. `noise` (the sample's shape) is needed
    /// only with η > 0.
    pub fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.schedule.check_t(t)?;
        let acp = &self.schedule.alphas_cumprod;
        let prev_t = t as i64 - self.step_ratio as i64;
        let alpha_prod_t = acp[t];
        let alpha_prod_prev = if prev_t >= 0 {
            acp[prev_t as usize]
        } else {
            self.final_alpha_cumprod()
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (x0, eps) = predict_x0_eps(
            self.config.prediction_type,
            model_output,
            sample,
            alpha_prod_t,
        )?;
        // Like diffusers (use_clipped_model_output = False), ε stays the model's own.
        let x0 = clip(x0, self.config.clip_sample)?;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let variance = (beta_prod_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_prev);
        let std_dev = self.config.eta * variance.max(0.0).sqrt();
        let dir = (eps * (1.0 - alpha_prod_prev - std_dev * std_dev).max(0.0).sqrt())?;
        let prev = ((x0 * alpha_prod_prev.sqrt())? + dir)?;
        if std_dev > 0.0 {
            match noise {
                Some(n) => prev + (n * std_dev)?,
                None => candle_core::bail!("DDIM with eta > 0 needs a noise tensor"),
            }
        } else {
            Ok(prev)
        }
    }
}

impl Scheduler for DdimScheduler {
    fn class_name(&self) -> &'static str {
        "DDIMScheduler"
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let ts = discrete_timesteps(
            "DDIM",
            self.spacing,
            self.config.train_steps,
            n,
            self.config.steps_offset,
        )?;
        super::sigmas::check_range(
            "DDIM",
            &ts.iter().map(|&t| t as f64).collect::<Vec<_>>(),
            self.config.train_steps,
        )?;
        // diffusers' DDIM steps back by T / n whatever the spacing
        self.step_ratio = self.config.train_steps / n;
        self.timesteps_f = ts.iter().map(|&t| t as f64).collect();
        self.timesteps = ts;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        t: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let t = whole_timestep("DDIM", t)?;
        if self.config.eta > 0.0 {
            let n = noise_like(noise, model_output)?;
            DdimScheduler::step(self, model_output, t, sample, Some(&n))
        } else {
            DdimScheduler::step(self, model_output, t, sample, None)
        }
    }

    fn set_begin_index(&mut self, _index: usize) {
        // DDIM steps are located by their timestep: nothing to remember
    }

    fn add_noise_at_step(&self, x0: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let t = *self
            .timesteps
            .get(index)
            .ok_or_else(|| candle_core::Error::Msg(format!("DDIM: no inference step {index}")))?;
        self.schedule.add_noise(x0, noise, &vec![t; x0.dim(0)?])
    }
}
