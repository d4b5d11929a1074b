//! Helpers shared by the training integration tests.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use strata_train::Trainer;

/// Mean loss of four fixed micro-batches (indices past any training step), so two trainers
/// can be compared on the same data and noise.
pub fn eval_loss(t: &Trainer) -> f32 {
    (0..4)
        .map(|k| {
            t.micro_loss(10_000 + k)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum::<f32>()
        / 4.0
}

/// The trainable tensors of a run's latest checkpoint.
pub fn trainable(run: &Path) -> HashMap<String, Tensor> {
    let ck = strata_train::run::latest_checkpoint(run).unwrap();
    strata_models::safetensors_io::load(&ck.join("trainable.safetensors"), &Device::Cpu)
        .unwrap()
        .0
}
