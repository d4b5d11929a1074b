//! The fixed schedule: normalised Gaussian bumps over the timestep (see the module docs of
//! [`crate::fusion`]).

use candle_core::{Device, Result as CandleResult, Tensor};

use super::{FusionError, DEFAULT_TRAIN_TIMESTEPS};
use crate::segments::NUM_SEGMENTS;

/// The fixed schedule's curves (see the module docs). Index order: scene, relation, elements.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FixedSchedule {
    /// Peak of each curve in `s = t/(T−1)` (1 = start of denoising).
    pub centers: [f64; NUM_SEGMENTS],
    /// Width σ of each Gaussian bump, in units of s.
    pub widths: [f64; NUM_SEGMENTS],
    /// Added to every raw curve before normalising, so no segment ever drops to zero.
    pub floor: f64,
    pub num_train_timesteps: usize,
}

impl Default for FixedSchedule {
    fn default() -> Self {
        Self {
            centers: [1.0, 0.5, 0.0],
            widths: [0.3, 0.3, 0.3],
            floor: 0.05,
            num_train_timesteps: DEFAULT_TRAIN_TIMESTEPS,
        }
    }
}

impl FixedSchedule {
    /// Uniform weights (1/3 each) at every t: the ablation "no schedule".
    pub fn uniform() -> Self {
        Self {
            centers: [0.5; 3],
            widths: [1.0; 3],
            floor: 0.0,
            num_train_timesteps: DEFAULT_TRAIN_TIMESTEPS,
        }
    }

    pub fn validate(&self) -> Result<(), FusionError> {
        if self.num_train_timesteps < 2 {
            return Err(FusionError::Config(
                "num_train_timesteps must be at least 2".into(),
            ));
        }
        if self.widths.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(FusionError::Config(format!(
                "widths must each be a finite number > 0, got {:?}",
                self.widths
            )));
        }
        if !(self.floor.is_finite() && self.floor >= 0.0) {
            return Err(FusionError::Config(format!(
                "floor must be a finite number ≥ 0, got {}",
                self.floor
            )));
        }
        if self.centers.iter().any(|c| !c.is_finite()) {
            return Err(FusionError::Config(format!(
                "centers must be finite numbers (usually in [0, 1]), got {:?}",
                self.centers
            )));
        }
        Ok(())
    }

    /// w(t) for one timestep (t may be fractional).
    pub fn weights(&self, t: f64) -> [f64; NUM_SEGMENTS] {
        let s = t / (self.num_train_timesteps - 1) as f64;
        let raw: [f64; NUM_SEGMENTS] = std::array::from_fn(|i| {
            let z = (s - self.centers[i]) / self.widths[i];
            self.floor + (-0.5 * z * z).exp()
        });
        let sum: f64 = raw.iter().sum();
        raw.map(|r| r / sum)
    }

    /// Weights `(B, 3)` for a batch of timesteps.
    pub fn weights_tensor(&self, timesteps: &[f64], device: &Device) -> CandleResult<Tensor> {
        let v: Vec<f32> = timesteps
            .iter()
            .flat_map(|&t| self.weights(t).map(|w| w as f32))
            .collect();
        Tensor::from_vec(v, (timesteps.len(), NUM_SEGMENTS), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_schedule_orders_segments_over_time() {
        let f = FixedSchedule::default();
        let start = f.weights(999.0);
        let mid = f.weights(499.5);
        let end = f.weights(0.0);
        for w in [start, mid, end] {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert!(start[0] > start[1] && start[0] > start[2], "{start:?}");
        assert!(mid[1] > mid[0] && mid[1] > mid[2], "{mid:?}");
        assert!(end[2] > end[0] && end[2] > end[1], "{end:?}");
        let u = FixedSchedule::uniform().weights(123.0);
        assert!(u.iter().all(|w| (w - 1.0 / 3.0).abs() < 1e-12));
    }
}
