//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models"; diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"`, midpoint solver; A1111's "DPM++ 2M" and, with Karras
//! sigmas, "DPM++ 2M Karras"). Deterministic: the data prediction x₀ of the last two steps
//! is combined in log-SNR λ; the first step (and, by default, the last) is first order.

use super::sigmas::{alpha_sigma, lambda, multistep_schedule, Cursor, FinalSigma};
use super::{f32_of, NoiseSchedule, NoiseSource, PredictionType, Scheduler, TimestepSpacing};
use candle_core::{Result, Tensor};

const WHO: &str = "DPM-Solver++";

/// The solver's options (diffusers' config fields of the same names).
#[derive(Debug, Clone)]
pub struct DpmSolverOptions {
    /// 1 or 2 (`solver_order`).
    pub solver_order: usize,
    pub use_karras_sigmas: bool,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub final_sigma: FinalSigma,
    /// First-order final step when fewer than 15 steps (`lower_order_final`).
    pub lower_order_final: bool,
    /// First-order final step always (`euler_at_final`).
    pub euler_at_final: bool,
}

impl Default for DpmSolverOptions {
    /// diffusers' defaults: order 2, linspace spacing, final σ = 0, lower-order final step.
    fn default() -> Self {
        Self {
            solver_order: 2,
            use_karras_sigmas: false,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigma: FinalSigma::Zero,
            lower_order_final: true,
            euler_at_final: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    pub options: DpmSolverOptions,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    cursor: Cursor,
    /// x₀ predictions of the previous and current step (oldest first).
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
}

impl DpmSolverMultistepScheduler {
    pub fn new(
        schedule: NoiseSchedule,
        prediction_type: PredictionType,
        options: DpmSolverOptions,
        n: usize,
    ) -> Result<Self> {
        if !(1..=2).contains(&options.solver_order) {
            candle_core::bail!(
                "{WHO}: solver_order {} is not supported (use 1 or 2)",
                options.solver_order
            )
        }
        let mut s = Self {
            schedule,
            prediction_type,
            model_outputs: vec![None; options.solver_order],
            options,
            timesteps: vec![],
            sigmas: vec![],
            cursor: Cursor::default(),
            lower_order_nums: 0,
        };
        s.set_timesteps(n)?;
        Ok(s)
    }

    /// The data prediction x₀ from the model output at step `i` (`convert_model_output`).
    fn x0_pred(&self, model_output: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (a, s) = alpha_sigma(self.sigmas[i]);
        match self.prediction_type {
            PredictionType::Epsilon => (sample - (model_output * s)?)? / a,
            PredictionType::VPrediction => (sample * a)? - (model_output * s)?,
        }
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn class_name(&self) -> &'static str {
        "DPMSolverMultistepScheduler"
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let o = &self.options;
        let (ts, sig) = multistep_schedule(
            WHO,
            &self.schedule,
            o.timestep_spacing,
            o.steps_offset,
            n,
            o.use_karras_sigmas,
            o.final_sigma,
        )?;
        self.timesteps = ts;
        self.sigmas = sig;
        self.cursor.reset();
        self.model_outputs = vec![None; o.solver_order];
        self.lower_order_nums = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        t: f64,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let i = self.cursor.current(WHO, &self.timesteps, t)?;
        let n = self.timesteps.len();
        let o = &self.options;
        let lower_order_final = i == n - 1
            && (o.euler_at_final
                || (o.lower_order_final && n < 15)
                || o.final_sigma == FinalSigma::Zero);
        let out_dtype = model_output.dtype();
        let x = f32_of(sample)?;
        let x0 = self.x0_pred(&f32_of(model_output)?, &x, i)?;
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(x0.clone()));

        let (sigma_t, sigma_s0) = (self.sigmas[i + 1], self.sigmas[i]);
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let (_, sig_s0) = alpha_sigma(sigma_s0);
        let (lambda_t, lambda_s0) = (lambda(sigma_t), lambda(sigma_s0));
        let h = lambda_t - lambda_s0;
        let c_x = sig_t / sig_s0;
        let c_d = alpha_t * ((-h).exp() - 1.0);
        let prev = if o.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            // first order (DDIM in λ): x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x₀
            ((&x * c_x)? - (&x0 * c_d)?)?
        } else {
            let m1 = self.model_outputs[self.model_outputs.len() - 2]
                .as_ref()
                .expect("history holds the previous step");
            let lambda_s1 = lambda(self.sigmas[i - 1]);
            let r0 = (lambda_s0 - lambda_s1) / h;
            // D0 = m0, D1 = (m0 − m1)/r0; midpoint: x_t = c_x·x − c_d·D0 − ½c_d·D1
            let d1 = ((&x0 - m1)? * (1.0 / r0))?;
            (((&x * c_x)? - (&x0 * c_d)?)? - (d1 * (0.5 * c_d))?)?
        };
        if self.lower_order_nums < o.solver_order {
            self.lower_order_nums += 1;
        }
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
        let (a, s) = alpha_sigma(self.sigmas[index]);
        (x0 * a)? + (noise * s)?
    }
}
