//! LPIPS v0.1 (Zhang et al. 2018) as the `lpips` 0.1.4 package computes it with
//! `LPIPS(net='alex'|'vgg')`: inputs scaled to [−1, 1], the package's scaling layer, five
//! backbone taps, each unit-normalised over channels, squared difference, the learned 1×1
//! linear head (no bias), spatial mean, summed over taps.
//!
//! The backbone weights come from the user (torchvision ImageNet files); the heads are the
//! package's `weights/v0.1/{alex,vgg}.pth` (BSD-2), shipped in `weights/lpips/` and
//! embedded, or read from a file given with `--lpips-heads`.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::backbone::{Arch, Backbone};
use crate::error::EvalError;
use crate::weights::{read_tensors, read_tensors_from, take_checked};

const ALEX_HEADS: &[u8] = include_bytes!("../weights/lpips/alex.pth");
const VGG_HEADS: &[u8] = include_bytes!("../weights/lpips/vgg.pth");

/// The lpips package's `ScalingLayer` constants.
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// A ready LPIPS network.
#[derive(Debug, Clone)]
pub struct Lpips {
    pub backbone: Backbone,
    heads: Vec<Tensor>,
    /// Where the heads came from (for the protocol line).
    pub heads_source: String,
}

impl Lpips {
    /// `backbone`: torchvision AlexNet or VGG16 weights; `heads`: an lpips `*.pth` (or
    /// safetensors with `lin0..4.model.1.weight`), or `None` for the embedded v0.1 heads.
    pub fn load(backbone: &Path, heads: Option<&Path>, device: &Device) -> Result<Self, EvalError> {
        let bb = Backbone::load(backbone, None, device)?;
        let (t, src, hp) = match heads {
            Some(p) => (
                read_tensors(p, device)?,
                p.display().to_string(),
                p.to_path_buf(),
            ),
            None => {
                let (bytes, name) = match bb.arch {
                    Arch::AlexNet => (ALEX_HEADS, "alex.pth"),
                    Arch::Vgg16 => (VGG_HEADS, "vgg.pth"),
                };
                let label = format!("lpips 0.1.4 weights/v0.1/{name} (embedded)");
                let p = std::path::PathBuf::from(&label);
                (read_tensors_from(bytes, &p, device)?, label, p)
            }
        };
        Self::new(bb, &t, &hp, src)
    }

    pub fn new(
        backbone: Backbone,
        heads: &std::collections::HashMap<String, Tensor>,
        heads_path: &Path,
        heads_source: String,
    ) -> Result<Self, EvalError> {
        let chans = backbone.arch.lpips_channels();
        let spec: Vec<(String, Vec<usize>)> = chans
            .iter()
            .enumerate()
            .map(|(i, &c)| (format!("lin{i}.model.1.weight"), vec![1, c, 1, 1]))
            .collect();
        let what = format!("LPIPS {} linear-head", backbone.arch.name());
        let got = take_checked(heads, &spec, heads_path, &what)?;
        let heads = spec.iter().map(|(n, _)| got[n].clone()).collect();
        Ok(Lpips {
            backbone,
            heads,
            heads_source,
        })
    }

    /// One distance per pair: `a`, `b` are N×3×H×W in [0, 1] of the same size.
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<Vec<f32>, EvalError> {
        if a.dims() != b.dims() {
            return Err(EvalError::FeatureShape {
                what: format!("LPIPS pair shapes differ: {:?} vs {:?}", a.dims(), b.dims()),
            });
        }
        let n = a.dim(0)?;
        let both = Tensor::cat(&[a, b], 0)?;
        let x = self.scale(&both)?;
        let taps = self
            .backbone
            .forward_taps(&x, &self.backbone.arch.lpips_taps())?;
        let mut total = Tensor::zeros(n, candle_core::DType::F32, a.device())?;
        for (f, head) in taps.iter().zip(&self.heads) {
            let norm = f.sqr()?.sum_keepdim(1)?.sqrt()?.affine(1.0, 1e-10)?;
            let f = f.broadcast_div(&norm)?;
            let d = (f.narrow(0, 0, n)? - f.narrow(0, n, n)?)?.sqr()?;
            let l = d.conv2d(head, 0, 1, 1, 1)?; // N×1×h×w
            total = (total + l.flatten_from(1)?.mean(1)?)?;
        }
        Ok(total.to_vec1::<f32>()?)
    }

    /// [0,1] → [−1,1] → the scaling layer.
    fn scale(&self, x: &Tensor) -> Result<Tensor, EvalError> {
        let dev = x.device();
        let shift = Tensor::new(&SHIFT, dev)?.reshape((1, 3, 1, 1))?;
        let scale = Tensor::new(&SCALE, dev)?.reshape((1, 3, 1, 1))?;
        Ok(x.affine(2.0, -1.0)?
            .broadcast_sub(&shift)?
            .broadcast_div(&scale)?)
    }

    pub fn protocol(&self) -> String {
        format!(
            "LPIPS v0.1, {} backbone from {}, linear heads {}",
            self.backbone.arch.name(),
            self.backbone.source,
            self.heads_source
        )
    }
}
