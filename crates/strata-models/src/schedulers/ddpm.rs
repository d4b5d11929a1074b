//! DDPM (Ho et al.): the training-side scheduler (schedule, `add_noise`, targets) and the
//! ancestral reverse step with `fixed_small` variance.

use super::{clip, predict_x0_eps, BetaSchedule, NoiseSchedule, PredictionType, Scheduler};
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
    timesteps: Vec<usize>,
}

impl DdpmScheduler {
    pub fn new(config: DdpmConfig) -> Self {
        let schedule = NoiseSchedule::new(
            config.train_steps,
            config.beta_start,
            config.beta_end,
            config.beta_schedule,
        );
        let timesteps = (0..config.train_steps).rev().collect();
        Self {
            config,
            schedule,
            timesteps,
        }
    }

    /// The previous timestep of `t` in the current inference schedule.
    fn prev_t(&self, t: usize) -> i64 {
        let n = self.timesteps.len();
        t as i64 - (self.config.train_steps / n) as i64
    }
}

impl Scheduler for DdpmScheduler {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.timesteps = super::leading_timesteps("DDPM", self.config.train_steps, n, 0)?.0;
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(
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
