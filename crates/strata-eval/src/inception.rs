//! pytorch-fid's FID Inception-v3: the network TensorFlow's FID used (weights of the
//! 2015-12-05 Inception release, ported to PyTorch by pytorch-fid as
//! `pt_inception-2015-12-05-6726825d.pth`), up to the 2048-d pool3 features.
//!
//! It differs from torchvision's Inception-v3 in its weights (1008 classes) and in the pool
//! branches of the mixed blocks: the average pools of the A, C and first E blocks do not
//! count the zero padding (TensorFlow's behaviour), and the last E block max-pools.
//! Preprocessing is pytorch-fid's `resize_input=True, normalize_input=True`: bilinear resize
//! to 299×299 (`align_corners=False`, no antialiasing) then `2x − 1`.
//!
//! Batch-norm layers are folded into their convolutions at load time (eval mode, eps 1e-3);
//! the forward runs in f32 on any candle device, in chunks of [`InceptionV3::batch_size`]
//! images to bound memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};

use crate::error::EvalError;
use crate::pool::{pool3x3, Pool};
use crate::weights::{read_tensors, take_checked};

/// TensorFlow's batch-norm epsilon, kept by the port.
const BN_EPS: f64 = 1e-3;
/// Input side of the network.
pub const INPUT_SIZE: usize = 299;
/// Dimension of the pool3 features.
pub const FEATURE_DIM: usize = 2048;

/// Convolution with its batch norm folded in, followed by ReLU (torchvision's `BasicConv2d`).
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: (usize, usize),
}

impl ConvBn {
    /// Through `strata_models::ops::conv2d` (the CPU kernels the diffusion models use; bias
    /// added inside), not candle's CPU convolution, which measured 2.2× slower than
    /// pytorch-fid over the whole network.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let bias = self.bias.flatten_all()?;
        let y = if self.pad.0 == self.pad.1 {
            strata_models::ops::conv2d(x, &self.weight, Some(&bias), self.pad.0, self.stride)?
        } else {
            // the convolution pads both spatial sides equally; asymmetric kernels (1×7,
            // 3×1, …) need (0, 3)-style padding, done explicitly.
            let x = x
                .pad_with_zeros(2, self.pad.0, self.pad.0)?
                .pad_with_zeros(3, self.pad.1, self.pad.1)?;
            strata_models::ops::conv2d(&x, &self.weight, Some(&bias), 0, self.stride)?
        };
        y.relu()
    }
}

/// Collects the tensors the architecture asks for (name → shape, for one error listing
/// every problem) and folds each convolution with its batch norm.
struct Src<'a> {
    tensors: &'a HashMap<String, Tensor>,
    spec: Vec<(String, Vec<usize>)>,
    device: Device,
}

impl Src<'_> {
    fn get(&mut self, name: String, shape: Vec<usize>) -> Option<Tensor> {
        let t = self
            .tensors
            .get(&name)
            .filter(|t| t.dims() == shape.as_slice())
            .cloned();
        self.spec.push((name, shape));
        t
    }

    fn conv(
        &mut self,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
    ) -> Result<ConvBn, EvalError> {
        let w = self.get(format!("{prefix}.conv.weight"), vec![cout, cin, k.0, k.1]);
        let g = self.get(format!("{prefix}.bn.weight"), vec![cout]);
        let b = self.get(format!("{prefix}.bn.bias"), vec![cout]);
        let m = self.get(format!("{prefix}.bn.running_mean"), vec![cout]);
        let v = self.get(format!("{prefix}.bn.running_var"), vec![cout]);
        let (weight, bias) = match (w, g, b, m, v) {
            (Some(w), Some(g), Some(b), Some(m), Some(v)) => {
                // Fold in f64: scale = γ / sqrt(var + eps); w' = w·scale; b' = β − mean·scale.
                let scale =
                    (g.to_dtype(DType::F64)? / (v.to_dtype(DType::F64)? + BN_EPS)?.sqrt()?)?;
                let w = w
                    .to_dtype(DType::F64)?
                    .broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
                let bias = (b.to_dtype(DType::F64)? - (m.to_dtype(DType::F64)? * &scale)?)?;
                (
                    w.to_dtype(DType::F32)?.to_device(&self.device)?,
                    bias.to_dtype(DType::F32)?
                        .reshape((1, cout, 1, 1))?
                        .to_device(&self.device)?,
                )
            }
            // Missing or mis-shaped: reported by `take_checked` before the model is returned.
            _ => (
                Tensor::zeros(1, DType::F32, &Device::Cpu)?,
                Tensor::zeros(1, DType::F32, &Device::Cpu)?,
            ),
        };
        Ok(ConvBn {
            weight,
            bias,
            stride,
            pad,
        })
    }

    fn c1(&mut self, prefix: &str, cin: usize, cout: usize) -> Result<ConvBn, EvalError> {
        self.conv(prefix, cin, cout, (1, 1), 1, (0, 0))
    }
}

/// `FIDInceptionA` (Mixed_5b/c/d).
struct BlockA {
    b1: ConvBn,
    b5: [ConvBn; 2],
    b3: [ConvBn; 3],
    pool: ConvBn,
}

impl BlockA {
    fn load(s: &mut Src, p: &str, cin: usize, pool_features: usize) -> Result<Self, EvalError> {
        Ok(BlockA {
            b1: s.c1(&format!("{p}.branch1x1"), cin, 64)?,
            b5: [
                s.c1(&format!("{p}.branch5x5_1"), cin, 48)?,
                s.conv(&format!("{p}.branch5x5_2"), 48, 64, (5, 5), 1, (2, 2))?,
            ],
            b3: [
                s.c1(&format!("{p}.branch3x3dbl_1"), cin, 64)?,
                s.conv(&format!("{p}.branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1))?,
                s.conv(&format!("{p}.branch3x3dbl_3"), 96, 96, (3, 3), 1, (1, 1))?,
            ],
            pool: s.c1(&format!("{p}.branch_pool"), cin, pool_features)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.b1.forward(x)?;
        let b = self.b5[1].forward(&self.b5[0].forward(x)?)?;
        let c = self.b3[2].forward(&self.b3[1].forward(&self.b3[0].forward(x)?)?)?;
        let d = self.pool.forward(&pool3x3(x, 1, 1, Pool::AvgExcludePad)?)?;
        Tensor::cat(&[a, b, c, d], 1)
    }
}

/// torchvision's `InceptionB` (Mixed_6a, unpatched): grid reduction 35 → 17.
struct BlockB {
    b3: ConvBn,
    dbl: [ConvBn; 3],
}

impl BlockB {
    fn load(s: &mut Src, p: &str, cin: usize) -> Result<Self, EvalError> {
        Ok(BlockB {
            b3: s.conv(&format!("{p}.branch3x3"), cin, 384, (3, 3), 2, (0, 0))?,
            dbl: [
                s.c1(&format!("{p}.branch3x3dbl_1"), cin, 64)?,
                s.conv(&format!("{p}.branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1))?,
                s.conv(&format!("{p}.branch3x3dbl_3"), 96, 96, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.b3.forward(x)?;
        let b = self.dbl[2].forward(&self.dbl[1].forward(&self.dbl[0].forward(x)?)?)?;
        let c = pool3x3(x, 2, 0, Pool::Max)?;
        Tensor::cat(&[a, b, c], 1)
    }
}

/// `FIDInceptionC` (Mixed_6b..e): factorised 7×7 convolutions.
struct BlockC {
    b1: ConvBn,
    b7: [ConvBn; 3],
    dbl: [ConvBn; 5],
    pool: ConvBn,
}

impl BlockC {
    fn load(s: &mut Src, p: &str, cin: usize, c7: usize) -> Result<Self, EvalError> {
        let row = |s: &mut Src, n: &str, i, o| s.conv(&format!("{p}.{n}"), i, o, (1, 7), 1, (0, 3));
        let col = |s: &mut Src, n: &str, i, o| s.conv(&format!("{p}.{n}"), i, o, (7, 1), 1, (3, 0));
        Ok(BlockC {
            b1: s.c1(&format!("{p}.branch1x1"), cin, 192)?,
            b7: [
                s.c1(&format!("{p}.branch7x7_1"), cin, c7)?,
                row(s, "branch7x7_2", c7, c7)?,
                col(s, "branch7x7_3", c7, 192)?,
            ],
            dbl: [
                s.c1(&format!("{p}.branch7x7dbl_1"), cin, c7)?,
                col(s, "branch7x7dbl_2", c7, c7)?,
                row(s, "branch7x7dbl_3", c7, c7)?,
                col(s, "branch7x7dbl_4", c7, c7)?,
                row(s, "branch7x7dbl_5", c7, 192)?,
            ],
            pool: s.c1(&format!("{p}.branch_pool"), cin, 192)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.b1.forward(x)?;
        let mut b = x.clone();
        for c in &self.b7 {
            b = c.forward(&b)?;
        }
        let mut c = x.clone();
        for l in &self.dbl {
            c = l.forward(&c)?;
        }
        let d = self.pool.forward(&pool3x3(x, 1, 1, Pool::AvgExcludePad)?)?;
        Tensor::cat(&[a, b, c, d], 1)
    }
}

/// torchvision's `InceptionD` (Mixed_7a, unpatched): grid reduction 17 → 8.
struct BlockD {
    b3: [ConvBn; 2],
    b7: [ConvBn; 4],
}

impl BlockD {
    fn load(s: &mut Src, p: &str, cin: usize) -> Result<Self, EvalError> {
        Ok(BlockD {
            b3: [
                s.c1(&format!("{p}.branch3x3_1"), cin, 192)?,
                s.conv(&format!("{p}.branch3x3_2"), 192, 320, (3, 3), 2, (0, 0))?,
            ],
            b7: [
                s.c1(&format!("{p}.branch7x7x3_1"), cin, 192)?,
                s.conv(&format!("{p}.branch7x7x3_2"), 192, 192, (1, 7), 1, (0, 3))?,
                s.conv(&format!("{p}.branch7x7x3_3"), 192, 192, (7, 1), 1, (3, 0))?,
                s.conv(&format!("{p}.branch7x7x3_4"), 192, 192, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.b3[1].forward(&self.b3[0].forward(x)?)?;
        let mut b = x.clone();
        for c in &self.b7 {
            b = c.forward(&b)?;
        }
        let c = pool3x3(x, 2, 0, Pool::Max)?;
        Tensor::cat(&[a, b, c], 1)
    }
}

/// `FIDInceptionE_1` (`max_pool == false`, TF-style average pool) and `FIDInceptionE_2`
/// (`max_pool == true`) — Mixed_7b and Mixed_7c.
struct BlockE {
    b1: ConvBn,
    b3_1: ConvBn,
    b3_2: [ConvBn; 2],
    dbl_1: ConvBn,
    dbl_2: ConvBn,
    dbl_3: [ConvBn; 2],
    pool: ConvBn,
    max_pool: bool,
}

impl BlockE {
    fn load(s: &mut Src, p: &str, cin: usize, max_pool: bool) -> Result<Self, EvalError> {
        let row = |s: &mut Src, n: &str| s.conv(&format!("{p}.{n}"), 384, 384, (1, 3), 1, (0, 1));
        let col = |s: &mut Src, n: &str| s.conv(&format!("{p}.{n}"), 384, 384, (3, 1), 1, (1, 0));
        Ok(BlockE {
            b1: s.c1(&format!("{p}.branch1x1"), cin, 320)?,
            b3_1: s.c1(&format!("{p}.branch3x3_1"), cin, 384)?,
            b3_2: [row(s, "branch3x3_2a")?, col(s, "branch3x3_2b")?],
            dbl_1: s.c1(&format!("{p}.branch3x3dbl_1"), cin, 448)?,
            dbl_2: s.conv(&format!("{p}.branch3x3dbl_2"), 448, 384, (3, 3), 1, (1, 1))?,
            dbl_3: [row(s, "branch3x3dbl_3a")?, col(s, "branch3x3dbl_3b")?],
            pool: s.c1(&format!("{p}.branch_pool"), cin, 192)?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.b1.forward(x)?;
        let b = self.b3_1.forward(x)?;
        let b = Tensor::cat(&[self.b3_2[0].forward(&b)?, self.b3_2[1].forward(&b)?], 1)?;
        let c = self.dbl_2.forward(&self.dbl_1.forward(x)?)?;
        let c = Tensor::cat(&[self.dbl_3[0].forward(&c)?, self.dbl_3[1].forward(&c)?], 1)?;
        let pooled = if self.max_pool {
            pool3x3(x, 1, 1, Pool::Max)?
        } else {
            pool3x3(x, 1, 1, Pool::AvgExcludePad)?
        };
        let d = self.pool.forward(&pooled)?;
        Tensor::cat(&[a, b, c, d], 1)
    }
}

/// Bilinear resampling matrix (`out × in`) of PyTorch's `F.interpolate(mode="bilinear",
/// align_corners=False)` along one axis (no antialiasing, also when shrinking).
fn bilinear_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let scale = n_in as f64 / n_out as f64;
    let mut m = vec![0.0f32; n_out * n_in];
    for o in 0..n_out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let l1 = src - i0 as f64;
        m[o * n_in + i0] += (1.0 - l1) as f32;
        m[o * n_in + i1] += l1 as f32;
    }
    m
}

/// pytorch-fid's `InceptionV3(output_blocks=[3])` with the FID weights.
pub struct InceptionV3 {
    stem: Vec<ConvBn>,
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7b: BlockE,
    mixed_7c: BlockE,
    device: Device,
    path: PathBuf,
    batch_size: usize,
}

impl InceptionV3 {
    /// pytorch-fid's `pt_inception-2015-12-05-*.pth` (zip or legacy pickle, read without
    /// executing it) or a safetensors file with its keys. The classifier (`fc.*`) and
    /// `num_batches_tracked` entries are not needed and ignored; every other missing or
    /// mis-shaped tensor is listed in the error.
    pub fn load(path: &Path, device: &Device) -> Result<Self, EvalError> {
        let tensors = read_tensors(path, &Device::Cpu)?;
        let mut s = Src {
            tensors: &tensors,
            spec: Vec::new(),
            device: device.clone(),
        };
        let stem = vec![
            s.conv("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0))?,
            s.conv("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0))?,
            s.conv("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1))?,
            s.conv("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0))?,
            s.conv("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))?,
        ];
        let mixed_5 = [
            BlockA::load(&mut s, "Mixed_5b", 192, 32)?,
            BlockA::load(&mut s, "Mixed_5c", 256, 64)?,
            BlockA::load(&mut s, "Mixed_5d", 288, 64)?,
        ];
        let mixed_6a = BlockB::load(&mut s, "Mixed_6a", 288)?;
        let mixed_6 = [
            BlockC::load(&mut s, "Mixed_6b", 768, 128)?,
            BlockC::load(&mut s, "Mixed_6c", 768, 160)?,
            BlockC::load(&mut s, "Mixed_6d", 768, 160)?,
            BlockC::load(&mut s, "Mixed_6e", 768, 192)?,
        ];
        let mixed_7a = BlockD::load(&mut s, "Mixed_7a", 768)?;
        let mixed_7b = BlockE::load(&mut s, "Mixed_7b", 1280, false)?;
        let mixed_7c = BlockE::load(&mut s, "Mixed_7c", 2048, true)?;
        take_checked(
            &tensors,
            &s.spec,
            path,
            "pytorch-fid Inception-v3 (pt_inception-2015-12-05)",
        )?;
        Ok(InceptionV3 {
            stem,
            mixed_5,
            mixed_6a,
            mixed_6,
            mixed_7a,
            mixed_7b,
            mixed_7c,
            device: device.clone(),
            path: path.to_path_buf(),
            batch_size: 4,
        })
    }

    /// Images per forward chunk (default 4: about 0.5 GB of activations on CPU).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Change the chunk size of [`InceptionV3::pool_features`] (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// images: N×3×H×W f32 in [0,1]; resized to 299×299 bilinearly as pytorch-fid does
    /// (resize_input=True, normalize_input=True). Returns N×2048 pool3 features (f32, on
    /// the model's device).
    pub fn pool_features(&self, images: &Tensor) -> Result<Tensor, EvalError> {
        let (n, c, h, w) = images.dims4().map_err(|_| EvalError::FeatureShape {
            what: format!(
                "Inception-v3 input must be N×3×H×W, got {:?}",
                images.dims()
            ),
        })?;
        if c != 3 || h == 0 || w == 0 {
            return Err(EvalError::FeatureShape {
                what: format!(
                    "Inception-v3 input must be N×3×H×W RGB, got {:?}",
                    images.dims()
                ),
            });
        }
        if n == 0 {
            return Ok(Tensor::zeros((0, FEATURE_DIM), DType::F32, &self.device)?);
        }
        let ry = Tensor::from_vec(
            bilinear_matrix(h, INPUT_SIZE),
            (1, INPUT_SIZE, h),
            &self.device,
        )?;
        let rxt = Tensor::from_vec(
            bilinear_matrix(w, INPUT_SIZE),
            (INPUT_SIZE, w),
            &self.device,
        )?
        .t()?
        .contiguous()?
        .unsqueeze(0)?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let len = self.batch_size.min(n - start);
            let x = images
                .narrow(0, start, len)?
                .to_device(&self.device)?
                .to_dtype(DType::F32)?
                .reshape((len * 3, h, w))?;
            let x = ry.broadcast_matmul(&x)?.broadcast_matmul(&rxt)?;
            let x = ((x.reshape((len, 3, INPUT_SIZE, INPUT_SIZE))? * 2.0)? - 1.0)?;
            out.push(self.forward_normalised(&x)?);
            start += len;
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// The network on inputs already at 299×299 in [−1, 1]: N×2048.
    fn forward_normalised(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.stem[0].forward(x)?;
        x = self.stem[1].forward(&x)?;
        x = self.stem[2].forward(&x)?;
        x = pool3x3(&x, 2, 0, Pool::Max)?;
        x = self.stem[3].forward(&x)?;
        x = self.stem[4].forward(&x)?;
        x = pool3x3(&x, 2, 0, Pool::Max)?;
        for b in &self.mixed_5 {
            x = b.forward(&x)?;
        }
        x = self.mixed_6a.forward(&x)?;
        for b in &self.mixed_6 {
            x = b.forward(&x)?;
        }
        x = self.mixed_7a.forward(&x)?;
        x = self.mixed_7b.forward(&x)?;
        x = self.mixed_7c.forward(&x)?;
        x.mean(D::Minus1)?.mean(D::Minus1)
    }

    /// Human-readable protocol of the features (network, weights file, resize method).
    pub fn protocol(&self) -> String {
        let file = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        format!(
            "pytorch-fid 0.3.0 FID Inception-v3 (TF 2015-12-05 weights, file {file}), pool3 \
             2048-d; images resized to 299×299 bilinear (align_corners=False, no antialias), \
             scaled to [-1, 1]"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_rows_sum_to_one_and_identity_at_same_size() {
        for (i, o) in [(64, 299), (299, 299), (500, 299), (1, 299)] {
            let m = bilinear_matrix(i, o);
            for r in 0..o {
                let s: f32 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-6, "{i}->{o} row {r}: {s}");
            }
        }
        let m = bilinear_matrix(5, 5);
        for r in 0..5 {
            for c in 0..5 {
                assert_eq!(m[r * 5 + c], if r == c { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn avg_pool_excludes_padding() -> candle_core::Result<()> {
        let x = Tensor::ones((1, 1, 3, 4), DType::F32, &Device::Cpu)?;
        let y = crate::pool::pool3x3(&x, 1, 1, crate::pool::Pool::AvgExcludePad)?;
        // all-ones input: every window averages to exactly 1 when the pads are not counted
        let v: Vec<f32> = y.flatten_all()?.to_vec1()?;
        assert!(v.iter().all(|a| (a - 1.0).abs() < 1e-6), "{v:?}");
        Ok(())
    }
}
