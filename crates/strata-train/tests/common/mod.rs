//! Helpers shared by the training integration tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// A tiny random model (seed 3) in `root/model` and `count` synthetic 64² scenes (seed 5) in
/// `root/data`, with the dataset's own split.
pub fn tiny_model_and_scenes(root: &Path, count: usize) -> (PathBuf, PathBuf) {
    let model = root.join("model");
    strata_models::testing::write_tiny_model(&model, 3).unwrap();
    let data = root.join("data");
    let opts = strata_synth::dataset::DatasetOptions {
        count,
        size: 64,
        seed: 5,
        classes: vec![],
    };
    let rep = strata_synth::dataset::write_dataset(&data, &opts, &|| {}).unwrap();
    assert!(rep.failed.is_empty());
    (model, data)
}

/// [`tiny_model_and_scenes`] with 8 scenes in an 8:2-style split: the last two records are
/// test images, the other six train.
pub fn tiny_model_and_split_scenes(root: &Path) -> (PathBuf, PathBuf) {
    let (model, data) = tiny_model_and_scenes(root, 8);
    let mut recs = strata_caption::dataset::read_dataset(&data).unwrap();
    let n = recs.len();
    for (i, r) in recs.iter_mut().enumerate() {
        r.split = Some(if i + 2 >= n {
            strata_caption::dataset::Split::Test
        } else {
            strata_caption::dataset::Split::Train
        });
    }
    strata_caption::dataset::write_metadata(&data.join("metadata.jsonl"), &recs).unwrap();
    (model, data)
}
