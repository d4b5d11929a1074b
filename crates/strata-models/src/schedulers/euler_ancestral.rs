//! Euler ancestral (Karras et al. 2022, Algorithm 2 with ancestral noise; diffusers'
//! `EulerAncestralDiscreteScheduler`, A1111's "Euler a"): an Euler step of the probability-
//! flow ODE in σ down to σ_down, then fresh noise of standard deviation σ_up, with
//! σ_up² + σ_down² = σ_next². Needs one noise tensor per step.

use super::sigmas::{interp_index, linspace, trailing, train_sigmas, Cursor};
use super::TimestepSpacing;
use super::{f32_of, noise_like, NoiseSchedule, NoiseSource, PredictionType, Scheduler};
use candle_core::{Result, Tensor};

const WHO: &str = "Euler ancestral";

#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    spacing: TimestepSpacing,
    steps_offset: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    cursor: Cursor,
}

impl EulerAncestralScheduler {
    /// diffusers' defaults for this class: `linspace` spacing, `steps_offset` only used by
    /// `leading`.
    pub fn new(
        schedule: NoiseSchedule,
        prediction_type: PredictionType,
        spacing: TimestepSpacing,
        steps_offset: usize,
        n: usize,
    ) -> Result<Self> {
        let mut s = Self {
            schedule,
            prediction_type,
            spacing,
            steps_offset,
            timesteps: vec![],
            sigmas: vec![],
            cursor: Cursor::default(),
        };
        s.set_timesteps(n)?;
        Ok(s)
    }
}

impl Scheduler for EulerAncestralScheduler {
    fn class_name(&self) -> &'static str {
        "EulerAncestralDiscreteScheduler"
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let t_train = self.schedule.train_steps();
        if n == 0 || n > t_train {
            candle_core::bail!("{WHO}: {n} inference steps requested, must be 1..={t_train}")
        }
        // timesteps are f32 in diffusers (fractional with linspace spacing)
        let ts: Vec<f64> = match self.spacing {
            TimestepSpacing::Linspace => linspace(0.0, (t_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|t| t as f32 as f64)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t_train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio) as f32 as f64 + self.steps_offset as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => trailing(t_train, n),
        };
        super::sigmas::check_range(WHO, &ts, t_train)?;
        let train = train_sigmas(&self.schedule);
        let mut sig: Vec<f64> = ts
            .iter()
            .map(|&t| interp_index(t, &train) as f32 as f64)
            .collect();
        sig.push(0.0);
        self.timesteps = ts;
        self.sigmas = sig;
        self.cursor.reset();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().cloned().fold(0.0, f64::max);
        match self.spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => ((max * max + 1.0) as f32).sqrt() as f64,
        }
    }

    fn scale_model_input(&self, sample: &Tensor, t: f64) -> Result<Tensor> {
        let i = self.cursor.current(WHO, &self.timesteps, t)?;
        let sigma = self.sigmas[i];
        sample / (sigma * sigma + 1.0).sqrt()
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        t: f64,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let i = self.cursor.current(WHO, &self.timesteps, t)?;
        let out_dtype = model_output.dtype();
        let x = f32_of(sample)?;
        let m = f32_of(model_output)?;
        let sigma = self.sigmas[i];
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => (&x - (&m * sigma)?)?,
            PredictionType::VPrediction => {
                let c = sigma * sigma + 1.0;
                ((&m * (-sigma / c.sqrt()))? + (&x / c)?)?
            }
        };
        let sigma_to = self.sigmas[i + 1];
        let sigma_up =
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = ((&x - &x0)? / sigma)?;
        let prev = (&x + (derivative * (sigma_down - sigma))?)?;
        // diffusers draws the noise at every step, the last one (σ_up = 0) included
        let n = f32_of(&noise_like(noise, model_output)?)?;
        let prev = (prev + (n * sigma_up)?)?;
        self.cursor.step_index = Some(i + 1);
        prev.to_dtype(out_dtype)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.cursor.begin_index = Some(index);
    }

    fn add_noise_at_step(&self, x0: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        if index >= self.timesteps.len() {
            candle_core::bail!("{WHO}: no inference step {index}")
        }
        x0 + (noise * self.sigmas[index])?
    }
}
