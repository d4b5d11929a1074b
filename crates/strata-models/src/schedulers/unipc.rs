//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
//! of Diffusion Models"; diffusers' `UniPCMultistepScheduler` with its defaults: data
//! prediction, `bh2`, order 2). Each step first corrects the previous step's result with the
//! new model output (UniC), then predicts the next sample (UniP). Deterministic.

use super::sigmas::{alpha_sigma, lambda, multistep_schedule, Cursor, FinalSigma};
use super::{f32_of, NoiseSchedule, NoiseSource, PredictionType, Scheduler, TimestepSpacing};
use candle_core::{Result, Tensor};

const WHO: &str = "UniPC";

/// B(h) of the UniPC update (`solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniPcSolverType {
    /// B(h) = h.
    Bh1,
    /// B(h) = eʰ − 1 (diffusers' default).
    Bh2,
}

/// The solver's options (diffusers' config fields of the same names).
#[derive(Debug, Clone)]
pub struct UniPcOptions {
    /// 1 to 3 (`solver_order`).
    pub solver_order: usize,
    pub solver_type: UniPcSolverType,
    pub use_karras_sigmas: bool,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub final_sigma: FinalSigma,
    pub lower_order_final: bool,
    /// Steps whose corrector is skipped (`disable_corrector`).
    pub disable_corrector: Vec<usize>,
}

impl Default for UniPcOptions {
    fn default() -> Self {
        Self {
            solver_order: 2,
            solver_type: UniPcSolverType::Bh2,
            use_karras_sigmas: false,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigma: FinalSigma::Zero,
            lower_order_final: true,
            disable_corrector: vec![],
        }
    }
}

#[derive(Debug, Clone)]
pub struct UniPcScheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    pub options: UniPcOptions,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    cursor: Cursor,
    /// x₀ predictions of the last `solver_order` steps (oldest first).
    model_outputs: Vec<Option<Tensor>>,
    last_sample: Option<Tensor>,
    this_order: usize,
    lower_order_nums: usize,
}

/// Solves the small dense system `a·x = b` (Gaussian elimination with partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .expect("non-empty");
        if a[p][c] == 0.0 || !a[p][c].is_finite() {
            candle_core::bail!("{WHO}: singular coefficient system")
        }
        a.swap(c, p);
        b.swap(c, p);
        let pivot = a[c].clone();
        for r in c + 1..n {
            let f = a[r][c] / pivot[c];
            for (x, p) in a[r].iter_mut().zip(&pivot).skip(c) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Ok(x)
}

/// The pieces shared by predictor and corrector: h·φ₁ = e^{−h} − 1, B(h), the ratios r_k
/// (with a final 1) and the right-hand side b of the order conditions.
struct Coefficients {
    h_phi_1: f64,
    b_h: f64,
    rks: Vec<f64>,
    b: Vec<f64>,
}

fn coefficients(solver: UniPcSolverType, h: f64, mut rks: Vec<f64>, order: usize) -> Coefficients {
    rks.push(1.0);
    let hh = -h; // data prediction
    let h_phi_1 = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1.0;
    let b_h = match solver {
        UniPcSolverType::Bh1 => hh,
        UniPcSolverType::Bh2 => hh.exp_m1(),
    };
    let mut b = Vec::with_capacity(order);
    for i in 1..=order {
        b.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    Coefficients {
        h_phi_1,
        b_h,
        rks,
        b,
    }
}

/// R[i][k] = r_k^i for i < order.
fn r_matrix(rks: &[f64], order: usize) -> Vec<Vec<f64>> {
    (0..order)
        .map(|i| rks.iter().map(|r| r.powi(i as i32)).collect())
        .collect()
}

impl UniPcScheduler {
    pub fn new(
        schedule: NoiseSchedule,
        prediction_type: PredictionType,
        options: UniPcOptions,
        n: usize,
    ) -> Result<Self> {
        if !(1..=3).contains(&options.solver_order) {
            candle_core::bail!(
                "{WHO}: solver_order {} is not supported (use 1, 2 or 3)",
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
            last_sample: None,
            this_order: 1,
            lower_order_nums: 0,
        };
        s.set_timesteps(n)?;
        Ok(s)
    }

    fn x0_pred(&self, model_output: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (a, s) = alpha_sigma(self.sigmas[i]);
        match self.prediction_type {
            PredictionType::Epsilon => (sample - (model_output * s)?)? / a,
            PredictionType::VPrediction => (sample * a)? - (model_output * s)?,
        }
    }

    fn output(&self, back: usize) -> &Tensor {
        self.model_outputs[self.model_outputs.len() - 1 - back]
            .as_ref()
            .expect("history holds enough steps for this order")
    }

    /// UniP: predicts the sample at step i+1 from x at step i with `order` history terms.
    fn predict(&self, x: &Tensor, i: usize, order: usize) -> Result<Tensor> {
        let (sigma_t, sigma_s0) = (self.sigmas[i + 1], self.sigmas[i]);
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let (_, sig_s0) = alpha_sigma(sigma_s0);
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let m0 = self.output(0);
        let mut rks = vec![];
        let mut d1s = vec![];
        for k in 1..order {
            let rk = (lambda(self.sigmas[i - k]) - lambda_s0) / h;
            d1s.push(((self.output(k) - m0)? / rk)?);
            rks.push(rk);
        }
        let c = coefficients(self.options.solver_type, h, rks, order);
        let x_t_ = ((x * (sig_t / sig_s0))? - (m0 * (alpha_t * c.h_phi_1))?)?;
        if d1s.is_empty() {
            return Ok(x_t_);
        }
        let rhos: Vec<f64> = if order == 2 {
            vec![0.5]
        } else {
            let r = r_matrix(&c.rks, order);
            let sub: Vec<Vec<f64>> = r[..order - 1]
                .iter()
                .map(|row| row[..order - 1].to_vec())
                .collect();
            solve(sub, c.b[..order - 1].to_vec())?
        };
        let mut res = (&d1s[0] * rhos[0])?;
        for (d, &r) in d1s.iter().zip(&rhos).skip(1) {
            res = (res + (d * r)?)?;
        }
        x_t_ - (res * (alpha_t * c.b_h))?
    }

    /// UniC: the sample at step i recomputed from `last` (step i−1) with the new x₀
    /// prediction `model_t` at step i (replaces the predicted sample).
    fn correct(&self, model_t: &Tensor, last: &Tensor, i: usize, order: usize) -> Result<Tensor> {
        let (sigma_t, sigma_s0) = (self.sigmas[i], self.sigmas[i - 1]);
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let (_, sig_s0) = alpha_sigma(sigma_s0);
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let m0 = self.output(0);
        let mut rks = vec![];
        let mut d1s = vec![];
        for k in 1..order {
            let rk = (lambda(self.sigmas[i - (k + 1)]) - lambda_s0) / h;
            d1s.push(((self.output(k) - m0)? / rk)?);
            rks.push(rk);
        }
        let c = coefficients(self.options.solver_type, h, rks, order);
        let rhos: Vec<f64> = if order == 1 {
            vec![0.5]
        } else {
            solve(r_matrix(&c.rks, order), c.b.clone())?
        };
        let x_t_ = ((last * (sig_t / sig_s0))? - (m0 * (alpha_t * c.h_phi_1))?)?;
        let d1_t = (model_t - m0)?;
        let mut res = (d1_t * rhos[rhos.len() - 1])?;
        for (d, &r) in d1s.iter().zip(&rhos) {
            res = (res + (d * r)?)?;
        }
        x_t_ - (res * (alpha_t * c.b_h))?
    }
}

impl Scheduler for UniPcScheduler {
    fn class_name(&self) -> &'static str {
        "UniPCMultistepScheduler"
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
        self.last_sample = None;
        self.this_order = 1;
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
        let out_dtype = model_output.dtype();
        let x = f32_of(sample)?;
        let use_corrector = i > 0
            && !self.options.disable_corrector.contains(&(i - 1))
            && self.last_sample.is_some();
        let m = self.x0_pred(&f32_of(model_output)?, &x, i)?;
        let x = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.correct(&m, last, i, self.this_order)?,
            _ => x,
        };
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(m));
        let n = self.timesteps.len();
        let order = if self.options.lower_order_final {
            self.options.solver_order.min(n - i)
        } else {
            self.options.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev = self.predict(&x, i, self.this_order)?;
        self.last_sample = Some(x);
        if self.lower_order_nums < self.options.solver_order {
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
