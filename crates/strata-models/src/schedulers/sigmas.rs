//! Shared pieces of the σ-parameterised samplers (Euler ancestral, DPM-Solver++, UniPC):
//! numpy-style `linspace`/`arange`/`interp` (same arithmetic, so timesteps round the same
//! way), the Karras σ ramp, σ → t interpolation, and the step cursor with diffusers'
//! `step_index` / `begin_index` semantics.

use super::{NoiseSchedule, TimestepSpacing};
use candle_core::Result;

/// numpy's `linspace(start, stop, num)`: `i·step + start`, the last point exactly `stop`.
pub(crate) fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return vec![];
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// diffusers' "trailing" spacing: `round(arange(T, 0, −T/n)) − 1`, descending.
pub(crate) fn trailing(train_steps: usize, n: usize) -> Vec<f64> {
    let step = train_steps as f64 / n as f64;
    let len = (train_steps as f64 / step).ceil() as usize;
    (0..len)
        .map(|i| (train_steps as f64 - i as f64 * step).round_ties_even() - 1.0)
        .collect()
}

/// numpy's `interp(x, arange(len(fp)), fp)` for `x` in `[0, len−1]`.
pub(crate) fn interp_index(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j];
    }
    let slope = fp[j + 1] - fp[j];
    slope * (x - j as f64) + fp[j]
}

/// σ_t = √((1−ᾱ_t)/ᾱ_t) for every training step, in f32 like diffusers' tensor arithmetic.
pub(crate) fn train_sigmas(schedule: &NoiseSchedule) -> Vec<f64> {
    schedule
        .alphas_cumprod
        .iter()
        .map(|&a| {
            let a = a as f32;
            ((1.0 - a) / a).sqrt() as f64
        })
        .collect()
}

/// Karras et al. (2022) σ ramp: `n` values from σ_max to σ_min, evenly spaced in σ^(1/ρ),
/// ρ = 7.
pub(crate) fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// The (fractional) training timestep whose σ is `sigma`, by linear interpolation in log σ
/// (diffusers' `_sigma_to_t`; `log_sigmas` are f32 like numpy's log of an f32 array).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // index of the last log σ ≤ log_sigma (the argmax of the cumulative count), clipped
    let mut low = 0usize;
    let mut best = -1i64;
    let mut count = 0i64;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            count += 1;
        }
        if count > best {
            best = count;
            low = i;
        }
    }
    let low = low.min(log_sigmas.len() - 2);
    let high = low + 1;
    let lo = log_sigmas[low];
    let hi = log_sigmas[high];
    let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

/// (α_t, σ_t) of the variance-preserving process at Karras σ: α = 1/√(σ²+1), σ_t = σ·α.
pub(crate) fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let a = 1.0 / (sigma * sigma + 1.0).sqrt();
    (a, sigma * a)
}

/// λ = log α_t − log σ_t (+∞ at σ = 0).
pub(crate) fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

/// The final σ after the last step (`final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigma {
    /// σ = 0: the last step lands on the model's x₀ prediction (diffusers' default).
    Zero,
    /// σ of training step 0.
    SigmaMin,
}

/// Timesteps and σs of the multistep solvers (DPM-Solver++, UniPC): diffusers' `n + 1`
/// point spacings with the last dropped, or the Karras ramp.
pub(crate) fn multistep_schedule(
    who: &str,
    schedule: &NoiseSchedule,
    spacing: TimestepSpacing,
    steps_offset: usize,
    n: usize,
    use_karras: bool,
    final_sigma: FinalSigma,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let t_train = schedule.train_steps();
    if n == 0 || n > t_train {
        candle_core::bail!("{who}: {n} inference steps requested, must be 1..={t_train}")
    }
    let mut timesteps: Vec<f64> = match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<f64> = linspace(0.0, (t_train - 1) as f64, n + 1)
                .into_iter()
                .map(|x| x.round_ties_even())
                .collect();
            v.reverse();
            v.truncate(n);
            v
        }
        TimestepSpacing::Leading => {
            let ratio = t_train / (n + 1);
            let mut v: Vec<f64> = (0..=n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect();
            v.truncate(n);
            v
        }
        TimestepSpacing::Trailing => trailing(t_train, n),
    };
    let train = train_sigmas(schedule);
    let mut sigmas: Vec<f64> = if use_karras {
        let log_sigmas: Vec<f32> = train.iter().map(|&s| (s as f32).ln()).collect();
        let ks = karras(train[0], train[t_train - 1], n);
        timesteps = ks
            .iter()
            .map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even())
            .collect();
        ks
    } else {
        timesteps.iter().map(|&t| interp_index(t, &train)).collect()
    };
    check_range(who, &timesteps, t_train)?;
    sigmas.push(match final_sigma {
        FinalSigma::Zero => 0.0,
        FinalSigma::SigmaMin => train[0],
    });
    let sigmas = sigmas.into_iter().map(|s| s as f32 as f64).collect();
    Ok((timesteps, sigmas))
}

pub(crate) fn check_range(who: &str, timesteps: &[f64], train_steps: usize) -> Result<()> {
    if let Some(t) = timesteps
        .iter()
        .find(|&&t| !(t >= 0.0 && t < train_steps as f64))
    {
        candle_core::bail!(
            "{who}: timestep {t} falls outside the {train_steps} training steps (check steps_offset)"
        )
    }
    Ok(())
}

/// diffusers' step counter: `step_index` once stepping started, else `begin_index`
/// (image-to-image), else the position of `t` in the timesteps (the second one if it occurs
/// twice).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    pub step_index: Option<usize>,
    pub begin_index: Option<usize>,
}

impl Cursor {
    pub fn reset(&mut self) {
        self.step_index = None;
        self.begin_index = None;
    }

    /// The index of the step about to be taken at `t`.
    pub fn current(&self, who: &str, timesteps: &[f64], t: f64) -> Result<usize> {
        if let Some(i) = self.step_index.or(self.begin_index) {
            if i >= timesteps.len() {
                candle_core::bail!(
                    "{who}: step {} requested but only {} timesteps are set",
                    i + 1,
                    timesteps.len()
                )
            }
            return Ok(i);
        }
        let hits: Vec<usize> = timesteps
            .iter()
            .enumerate()
            .filter(|(_, &x)| x == t)
            .map(|(i, _)| i)
            .collect();
        match hits.len() {
            0 => candle_core::bail!(
                "{who}: timestep {t} is not one of the {} inference timesteps",
                timesteps.len()
            ),
            1 => Ok(hits[0]),
            _ => Ok(hits[1]),
        }
    }
}
