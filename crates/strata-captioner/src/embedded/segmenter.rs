//! The embedded captioner's network as `strata eval`'s segmenter
//! ([`strata_eval::seg::Segmenter`]): its element mask feeds relation fidelity, its scene
//! head the scene class, and the global average of its bottleneck (64 values) is the
//! sFID*/sKID* feature space.
//!
//! Its quality is measured by `strata eval` on scenes from [`HELD_OUT_SEED`], a base seed
//! the network was neither trained ([`TRAIN_SEED`]) nor validated ([`VALIDATION_SEED`]) on
//! (docs/caption-default.md reports the figures on the same scenes: mIoU 0.761 on 440).

use candle_core::{DType, Device, Tensor};
use strata_eval::images::Rgb;
use strata_eval::seg::{Prediction, Segmenter, SEG_SIZE};
use strata_eval::EvalError;
use strata_synth::SceneClass;

use super::net::{image_input, CapNet, NET_SIZE};
use super::train::{TRAIN_SEED, VALIDATION_SEED};
use super::EmbeddedCaptioner;

/// Base seed of the held-out scenes `strata eval` measures this segmenter on.
pub const HELD_OUT_SEED: u64 = 4_000;

/// The embedded captioner's network, for `strata_eval::EvalOptions::segmenter_net`.
pub struct EmbeddedSegmenter {
    net: CapNet,
    source: String,
}

impl EmbeddedSegmenter {
    /// The network with the weights compiled into the binary.
    pub fn load_default() -> crate::error::Result<EmbeddedSegmenter> {
        Ok(EmbeddedSegmenter::from_captioner(
            EmbeddedCaptioner::load_default()?,
        ))
    }

    /// The network of a captioner (its weights, compiled in or from a file).
    pub fn from_captioner(c: EmbeddedCaptioner) -> EmbeddedSegmenter {
        EmbeddedSegmenter {
            source: c.source.clone(),
            net: c.net,
        }
    }
}

const _: () = assert!(NET_SIZE == SEG_SIZE);

impl Segmenter for EmbeddedSegmenter {
    fn description(&self) -> String {
        format!(
            "the embedded captioner's network ({}; U-Net widths {:?}, trained on scene_seed({TRAIN_SEED}, ·), validated on scene_seed({VALIDATION_SEED}, ·)); features: the {}-d global average of its bottleneck",
            self.source, self.net.widths.0, self.net.widths.0[3]
        )
    }

    fn held_out_seed(&self) -> u64 {
        HELD_OUT_SEED
    }

    fn predict(&self, imgs: &[&Rgb]) -> Result<Vec<Prediction>, EvalError> {
        let s = NET_SIZE;
        let mut out = Vec::with_capacity(imgs.len());
        for chunk in imgs.chunks(16) {
            let mut v = Vec::with_capacity(chunk.len() * 3 * s * s);
            for img in chunk {
                v.extend(image_input(img));
            }
            let x = Tensor::from_vec(v, (chunk.len(), 3, s, s), &Device::Cpu)?;
            let o = self.net.forward(&x)?;
            let mask = o.logits.argmax(1)?.flatten_from(1)?.to_vec2::<u32>()?;
            let scene = o.scene_logits.argmax(1)?.to_vec1::<u32>()?;
            let feats = o.pooled.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            for ((m, sc), f) in mask.into_iter().zip(scene).zip(feats) {
                out.push(Prediction {
                    mask: m.into_iter().map(|v| v as u8).collect(),
                    scene: SceneClass::ALL[sc as usize],
                    features: f,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use strata_synth::dataset::scene_seed;

    #[test]
    fn held_out_scenes_are_disjoint_from_training_and_validation_scenes() {
        // the training script's pool (4 400 scenes) and the validation set, generously sized
        let used: HashSet<u64> = (0..20_000)
            .map(|i| scene_seed(TRAIN_SEED, i))
            .chain((0..20_000).map(|i| scene_seed(VALIDATION_SEED, i)))
            .collect();
        let clash = (0..20_000)
            .map(|i| scene_seed(HELD_OUT_SEED, i))
            .filter(|s| used.contains(s))
            .count();
        assert_eq!(clash, 0);
    }
}
