//! PieAPP v0.1 (Prashnani et al., CVPR 2018, "Perceptual Image-Error Assessment through
//! Pairwise Preference"): the PyTorch port of the published network, as used by pyiqa and
//! piq, on the published weights (`PieAPPv0.1.pth`).
//!
//! Both images are cut into 64×64 patches with stride 27 (the "sparse" sampling of the
//! original code; no padding, row-major, a trailing strip narrower than a stride is not
//! covered). Each patch goes through eleven 3×3 convolutions with ReLU and five 2×2 max pools;
//! the flattened activations after conv3, conv5, conv7, conv9 and conv11 (120 832 values)
//! form the multi-scale feature, conv11's (2048 values) the coarse one. For each patch pair
//! the score head maps `f(ref) − f(dist)` to `a · 0.01 · fc2(relu(fc1(·))) + b`
//! (`ref_score_subtract`), the weight head maps the coarse difference to
//! `fc2w(relu(fc1w(·))) + 1e-6`, and the image score is the weighted mean of the patch
//! scores. Lower is better (0 ≈ no perceptible error).
//!
//! Input convention: images in [0, 1] are scaled to [0, 255] and, by default, fed in BGR
//! order, as the original code (OpenCV) and pyiqa do; piq feeds RGB
//! ([`PieApp::with_rgb_input`] reproduces it).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::EvalError;
use crate::weights::{read_tensors, take_checked};

/// Patch side of the network.
pub const PATCH: usize = 64;
/// Patch stride of the original code's default ("sparse") sampling.
pub const DEFAULT_STRIDE: usize = 27;
/// Length of the multi-scale feature vector (conv3 + conv5 + conv7 + conv9 + conv11).
pub const MULTISCALE_DIM: usize =
    64 * 32 * 32 + 128 * 16 * 16 + 256 * 8 * 8 + 256 * 4 * 4 + 512 * 2 * 2;
/// Length of the coarse feature vector (conv11).
pub const COARSE_DIM: usize = 512 * 2 * 2;

/// (in, out) channels of conv1..conv11.
const CONVS: [(usize, usize); 11] = [
    (3, 64),
    (64, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
];

/// `x Wᵀ + b` with `W` stored transposed (in × out) for a plain matmul.
struct Linear {
    wt: Tensor,
    b: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.wt)?.broadcast_add(&self.b)
    }
}

/// The PieAPP v0.1 network and its patch protocol.
pub struct PieApp {
    convs: Vec<(Tensor, Tensor)>,
    fc1_score: Linear,
    fc2_score: Linear,
    fc1_weight: Linear,
    fc2_weight: Linear,
    ref_scale: f64,
    ref_shift: f64,
    stride: usize,
    bgr: bool,
    patch_batch: usize,
    dtype: DType,
    device: Device,
    path: PathBuf,
}

impl PieApp {
    /// The published `PieAPPv0.1.pth` (zip or legacy pickle, read without executing it;
    /// a `{"params": …}` or `{"state_dict": …}` wrapper is not supported — save the inner
    /// dict) or a safetensors file with the same keys. `ref_score_subtract.weight` may have
    /// shape `[1]` (as published) or `[1, 1]` (as piq reshapes it).
    pub fn load(path: &Path, device: &Device) -> Result<Self, EvalError> {
        let tensors = read_tensors(path, &Device::Cpu)?;
        let mut spec: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, &(cin, cout)) in CONVS.iter().enumerate() {
            spec.push((format!("conv{}.weight", i + 1), vec![cout, cin, 3, 3]));
            spec.push((format!("conv{}.bias", i + 1), vec![cout]));
        }
        for (name, fan_in, out) in [
            ("fc1_score", MULTISCALE_DIM, 512),
            ("fc2_score", 512, 1),
            ("fc1_weight", COARSE_DIM, 512),
            ("fc2_weight", 512, 1),
        ] {
            spec.push((format!("{name}.weight"), vec![out, fan_in]));
            spec.push((format!("{name}.bias"), vec![out]));
        }
        let rw_shape = match tensors.get("ref_score_subtract.weight") {
            Some(t) if t.dims() == [1, 1] => vec![1, 1],
            _ => vec![1],
        };
        spec.push(("ref_score_subtract.weight".into(), rw_shape));
        spec.push(("ref_score_subtract.bias".into(), vec![1]));
        let t = take_checked(&tensors, &spec, path, "PieAPP v0.1 (PieAPPv0.1.pth)")?;

        let dev = |x: &Tensor| x.to_device(device);
        let convs = (1..=CONVS.len())
            .map(|i| {
                Ok((
                    dev(&t[&format!("conv{i}.weight")])?,
                    dev(&t[&format!("conv{i}.bias")])?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let linear = |name: &str| -> candle_core::Result<Linear> {
            Ok(Linear {
                wt: dev(&t[&format!("{name}.weight")].t()?.contiguous()?)?,
                b: dev(&t[&format!("{name}.bias")])?,
            })
        };
        let scalar = |name: &str| -> candle_core::Result<f64> {
            Ok(t[name].flatten_all()?.to_vec1::<f32>()?[0] as f64)
        };
        Ok(PieApp {
            convs,
            fc1_score: linear("fc1_score")?,
            fc2_score: linear("fc2_score")?,
            fc1_weight: linear("fc1_weight")?,
            fc2_weight: linear("fc2_weight")?,
            ref_scale: scalar("ref_score_subtract.weight")?,
            ref_shift: scalar("ref_score_subtract.bias")?,
            stride: DEFAULT_STRIDE,
            bgr: true,
            patch_batch: 16,
            dtype: DType::F32,
            device: device.clone(),
            path: path.to_path_buf(),
        })
    }

    /// Patch stride (default 27, the original "sparse" sampling; 6 is its "dense" one).
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride.max(1);
        self
    }

    /// Feed RGB instead of BGR, as piq does (the published weights were trained on BGR).
    pub fn with_rgb_input(mut self, rgb: bool) -> Self {
        self.bgr = !rgb;
        self
    }

    /// Patches per forward chunk (default 16; about 1 GB of activations on CPU).
    pub fn with_patch_batch(mut self, n: usize) -> Self {
        self.patch_batch = n.max(1);
        self
    }

    /// Compute in `dtype` (default f32). F64 runs on CPU only and is for checks: the score
    /// heads sum 120 832-long dot products whose cancellation leaves f32 scores with
    /// errors of ~1e-4 relative, in PyTorch as here.
    pub fn with_dtype(mut self, dtype: DType) -> Result<Self, EvalError> {
        let cast = |t: &Tensor| t.to_dtype(dtype);
        for (w, b) in &mut self.convs {
            *w = cast(w)?;
            *b = cast(b)?;
        }
        for l in [
            &mut self.fc1_score,
            &mut self.fc2_score,
            &mut self.fc1_weight,
            &mut self.fc2_weight,
        ] {
            l.wt = cast(&l.wt)?;
            l.b = cast(&l.b)?;
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// Human-readable protocol of the scores.
    pub fn protocol(&self) -> String {
        let file = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "PieAPP v0.1 (file {file}), 64×64 patches stride {}, inputs ×255 in {} order, \
             weighted mean of patch scores; lower is better",
            self.stride,
            if self.bgr {
                "BGR (original, pyiqa)"
            } else {
                "RGB (piq)"
            }
        )
    }

    /// reference, distorted: N×3×H×W f32 in [0,1], same size (H, W ≥ 64); one score per
    /// pair (lower = better).
    pub fn score(&self, reference: &Tensor, distorted: &Tensor) -> Result<Vec<f32>, EvalError> {
        let shape_err = |what: String| EvalError::FeatureShape { what };
        let (n, c, h, w) = reference.dims4().map_err(|_| {
            shape_err(format!(
                "PieAPP input must be N×3×H×W, got {:?}",
                reference.dims()
            ))
        })?;
        if distorted.dims() != reference.dims() {
            return Err(shape_err(format!(
                "PieAPP: reference {:?} and distorted {:?} differ in shape",
                reference.dims(),
                distorted.dims()
            )));
        }
        if c != 3 || h < PATCH || w < PATCH {
            return Err(shape_err(format!(
                "PieAPP needs RGB images of at least {PATCH}×{PATCH}, got {:?}",
                reference.dims()
            )));
        }
        let mut scores = Vec::with_capacity(n);
        for i in 0..n {
            let r = self.patches(&reference.get(i)?)?;
            let d = self.patches(&distorted.get(i)?)?;
            scores.push(self.score_patches(&r, &d)? as f32);
        }
        Ok(scores)
    }

    /// One image (3×H×W in [0,1]) → P×3×64×64 patches, ×255, in the network's channel order.
    fn patches(&self, img: &Tensor) -> candle_core::Result<Tensor> {
        let img = img.to_device(&self.device)?.to_dtype(self.dtype)?;
        let img = if self.bgr {
            Tensor::cat(&[img.get(2)?, img.get(1)?, img.get(0)?], 0)?.reshape(img.dims())?
        } else {
            img
        };
        let img = (img * 255.0)?;
        let (_, h, w) = img.dims3()?;
        let mut out = Vec::new();
        for y in (0..=h - PATCH).step_by(self.stride) {
            for x in (0..=w - PATCH).step_by(self.stride) {
                out.push(img.narrow(1, y, PATCH)?.narrow(2, x, PATCH)?);
            }
        }
        Tensor::stack(&out, 0)
    }

    /// Multi-scale (P×120832) and coarse (P×2048) features of a batch of patches.
    fn features(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let conv = |i: usize, x: &Tensor| -> candle_core::Result<Tensor> {
            let (w, b) = &self.convs[i];
            x.conv2d(w, 1, 1, 1, 1)?
                .broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?
                .relu()
        };
        let pool = |x: &Tensor| x.max_pool2d_with_stride((2, 2), (2, 2));
        let x3 = conv(2, &pool(&conv(1, &conv(0, x)?)?)?)?;
        let x5 = conv(4, &pool(&conv(3, &x3)?)?)?;
        let x7 = conv(6, &pool(&conv(5, &x5)?)?)?;
        let x9 = conv(8, &pool(&conv(7, &x7)?)?)?;
        let x11 = conv(10, &pool(&conv(9, &x9)?)?)?.flatten_from(1)?;
        let ms = Tensor::cat(
            &[
                x3.flatten_from(1)?,
                x5.flatten_from(1)?,
                x7.flatten_from(1)?,
                x9.flatten_from(1)?,
                x11.clone(),
            ],
            1,
        )?;
        Ok((ms, x11))
    }

    /// Weighted mean of the patch scores of one image pair.
    fn score_patches(&self, reference: &Tensor, distorted: &Tensor) -> candle_core::Result<f64> {
        let p = reference.dim(0)?;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        let mut start = 0;
        while start < p {
            let len = self.patch_batch.min(p - start);
            let (rm, rc) = self.features(&reference.narrow(0, start, len)?)?;
            let (dm, dc) = self.features(&distorted.narrow(0, start, len)?)?;
            let s = self
                .fc2_score
                .forward(&self.fc1_score.forward(&(rm - dm)?)?.relu()?)?;
            let s = ((s * (0.01 * self.ref_scale))? + self.ref_shift)?;
            let wgt = (self
                .fc2_weight
                .forward(&self.fc1_weight.forward(&(rc - dc)?)?.relu()?)?
                + 1e-6)?;
            let s: Vec<f64> = s.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
            let wgt: Vec<f64> = wgt.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
            for (s, w) in s.iter().zip(&wgt) {
                num += s * w;
                den += w;
            }
            start += len;
        }
        Ok(num / den)
    }
}
