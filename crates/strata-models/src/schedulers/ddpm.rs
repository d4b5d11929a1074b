//! DDPM (Ho et al.): the training-side scheduler (schedule, `add_noise`, targets) and the
//! ancestral reverse step with `fixed_small` variance (diffusers' `DDPMScheduler`).

use super::{
    clip, discrete_timesteps, noise_like, predict_x0_eps, whole_timestep, BetaSchedule,
    NoiseSchedule, NoiseSource, PredictionType, Scheduler, TimestepSpacing,
};
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DdpmConfig {
    pub train_steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub prediction_type: PredictionType,
    /// Clamp the predicted x₀ to ±this (diffusers' `clip_sample` with `clip_sample_range`).
    pub clip_sample: Option<f64>,
}

impl DdpmConfig {
    /// SD-1.5 training: scaled-linear betas 0.00085–0.012 over 1000 steps, ε-prediction.
    pub fn sd15() -> Self {
        Self {
            train_steps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction_type: PredictionType::Epsilon,
            clip_sample: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    pub config: DdpmConfig,
    schedule: NoiseSchedule,
    spacing: TimestepSpacing,
    steps_offset: usize,
    timesteps: Vec<usize>,
    timesteps_f: Vec<f64>,
}

impl DdpmScheduler {
    /// All training steps as inference steps, "leading" spacing without offset (diffusers'
    /// defaults); `set_timesteps` chooses fewer.
    pub fn new(config: DdpmConfig) -> Self {
        let schedule = NoiseSchedule::new(
            config.train_steps,
            config.beta_start,
            config.beta_end,
            config.beta_schedule,
        );
        Self::with_schedule(config, schedule, TimestepSpacing::Leading, 0)
    }

    /// As [`DdpmScheduler::new`] with an explicit noise schedule (e.g. `trained_betas`),
    /// timestep spacing and `steps_offset` (SD-1.5's config has 1).
    pub fn with_schedule(
        config: DdpmConfig,
        schedule: NoiseSchedule,
        spacing: TimestepSpacing,
        steps_offset: usize,
    ) -> Self {
        let timesteps: Vec<usize> = (0..config.train_steps).rev().collect();
        Self {
            timesteps_f: timesteps.iter().map(|&t| t as f64).collect(),
            config,
            schedule,
            spacing,
            steps_offset,
            timesteps,
        }
    }

    /// The inference timesteps as training-step indices, noisiest first.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// The timestep after `t` in the current inference schedule, −1 after the last one
    /// (diffusers' `previous_timestep`).
    fn prev_t(&self, t: usize) -> i64 {
        match self.timesteps.iter().position(|&x| x == t) {
            Some(i) if i + 1 < self.timesteps.len() => self.timesteps[i + 1] as i64,
            Some(_) => -1,
            None => t as i64 - (self.config.train_steps / self.timesteps.len()) as i64,
        }
    }

    /// One ancestral step from the whole timestep `t`; `noise` (the sample's shape) is needed
    /// for every `t > 0`.
    pub fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.schedule.check_t(t)?;
        let acp = &self.schedule.alphas_cumprod;
        let prev_t = self.prev_t(t);
        let alpha_prod_t = acp[t];
        let alpha_prod_prev = if prev_t >= 0 {
            acp[prev_t as usize]
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_prev;
        let current_beta_t = 1.0 - current_alpha_t;
        let (x0, _) = predict_x0_eps(
            self.config.prediction_type,
            model_output,
            sample,
            alpha_prod_t,
        )?;
        let x0 = clip(x0, self.config.clip_sample)?;
        let c0 = alpha_prod_prev.sqrt() * current_beta_t / beta_prod_t;
        let ct = current_alpha_t.sqrt() * beta_prod_prev / beta_prod_t;
        let mean = ((x0 * c0)? + (sample * ct)?)?;
        if t == 0 {
            return Ok(mean);
        }
        // fixed_small variance, clamped like diffusers.
        let variance = (beta_prod_prev / beta_prod_t * current_beta_t).max(1e-20);
        match noise {
            Some(n) => mean + (n * variance.sqrt())?,
            None => candle_core::bail!("DDPM step at t={t} needs a noise tensor for its variance"),
        }
    }
}

impl Scheduler for DdpmScheduler {
    fn class_name(&self) -> &'static str {
        "DDPMScheduler"
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let ts = discrete_timesteps(
            "DDPM",
            self.spacing,
            self.config.train_steps,
            n,
            self.steps_offset,
        )?;
        super::sigmas::check_range(
            "DDPM",
            &ts.iter().map(|&t| t as f64).collect::<Vec<_>>(),
            self.config.train_steps,
        )?;
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
        let t = whole_timestep("DDPM", t)?;
        if t > 0 {
            let n = noise_like(noise, model_output)?;
            DdpmScheduler::step(self, model_output, t, sample, Some(&n))
        } else {
            DdpmScheduler::step(self, model_output, t, sample, None)
        }
    }

    fn set_begin_index(&mut self, _index: usize) {
        // DDPM steps are located by their timestep: nothing to remember
    }

    fn add_noise_at_step(&self, x0: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let t = *self
            .timesteps
            .get(index)
            .ok_or_else(|| candle_core::Error::Msg(format!("DDPM: no inference step {index}")))?;
        self.schedule.add_noise(x0, noise, &vec![t; x0.dim(0)?])
    }
}
