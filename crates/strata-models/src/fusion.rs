//! The conditional fusion module (paper §3.2.2): segment weights w(t) = (w_scene,
//! w_relation, w_elements) that depend on the diffusion timestep, and their injection into
//! the UNet's cross-attention.
//!
//! Timesteps follow diffusers: `t ∈ [0, T)`, `t = T − 1` is pure noise, i.e. the *start* of
//! denoising. With `s = t / (T − 1)`, the fixed schedule is
//!
//! ```text
//! raw_i(s) = floor + exp(−(s − c_i)² / (2 σ_i²)),   w_i = raw_i / Σ_j raw_j
//! ```
//!
//! with defaults `c = (1.0, 0.5, 0.0)` (scene peaks at the start of denoising, relation in
//! the middle, elements at the end), `σ = (0.3, 0.3, 0.3)`, `floor = 0.05`. All are
//! configurable ([`FixedSchedule`]). The weights sum to 1 at every t.
//!
//! The learned variant ([`LearnedSchedule`]) is a small MLP on the sinusoidal timestep
//! embedding (the UNet's `flip_sin_to_cos` form): `emb(t) → Linear → SiLU → Linear → softmax`,
//! initialised to reproduce the fixed schedule (first layer seeded on the slow embedding
//! components, second layer fitted by least squares to `log w(t)`), trainable with LoRA and
//! saved as safetensors.
//!
//! Injection ([`FusionMode`]): `Concat` multiplies segment i by `3·w_i` (so uniform weights
//! leave the encodings unchanged) and concatenates the three 77-token encodings into one
//! 231-token context — any SD UNet consumes it. `Decoupled` hands the UNet the three
//! encodings and w(t); its cross-attention attends to each segment with the same K/V
//! projections and mixes the three outputs by w(t).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result as CandleResult, Tensor, Var};

use crate::conditioning::Conditioning;
use crate::segments::NUM_SEGMENTS;

/// Training timesteps of SD-1.x.
pub const DEFAULT_TRAIN_TIMESTEPS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read fusion weights {path}: {what}; it should be a safetensors file written by strata (keys {prefix}linear_1.weight, …)")]
    Read {
        path: PathBuf,
        prefix: String,
        what: String,
    },
    #[error("invalid fusion schedule: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// How the fused segments reach the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FusionMode {
    /// Weighted segments concatenated into one `(B, 3·77, D)` context.
    Concat,
    /// Segments `(B, 3, 77, D)` + weights `(B, 3)`; the UNet mixes per-segment attention.
    Decoupled,
}

impl std::str::FromStr for FusionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "concat" => Ok(Self::Concat),
            "decoupled" => Ok(Self::Decoupled),
            _ => Err(format!(
                "unknown fusion mode {s:?}: use concat or decoupled"
            )),
        }
    }
}

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
                "widths must be positive, got {:?}",
                self.widths
            )));
        }
        if !(self.floor.is_finite() && self.floor >= 0.0)
            || self.centers.iter().any(|c| !c.is_finite())
        {
            return Err(FusionError::Config(
                "floor must be ≥ 0 and centers finite".into(),
            ));
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

/// diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)`:
/// `[cos(t·f_k), sin(t·f_k)]`, `f_k = 10000^(−k/(dim/2))`. Returns `(B, dim)` f32.
pub fn timestep_embedding(timesteps: &[f64], dim: usize, device: &Device) -> CandleResult<Tensor> {
    let half = dim / 2;
    let mut v = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f64> = (0..half)
            .map(|k| t * (-(10000f64.ln()) * k as f64 / half as f64).exp())
            .collect();
        v.extend(args.iter().map(|a| a.cos() as f32));
        v.extend(args.iter().map(|a| a.sin() as f32));
    }
    Tensor::from_vec(v, (timesteps.len(), 2 * half), device)
}

/// Shape of the learned schedule network.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LearnedConfig {
    pub embedding_dim: usize,
    pub hidden: usize,
    pub num_train_timesteps: usize,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 32,
            hidden: 64,
            num_train_timesteps: DEFAULT_TRAIN_TIMESTEPS,
        }
    }
}

/// `softmax(W2 · silu(W1 · emb(t) + b1) + b2)`: the learned w(t). Its four tensors are
/// `Var`s so an optimiser (LoRA training) can update them.
#[derive(Debug, Clone)]
pub struct LearnedSchedule {
    pub config: LearnedConfig,
    pub linear_1_weight: Var,
    pub linear_1_bias: Var,
    pub linear_2_weight: Var,
    pub linear_2_bias: Var,
}

/// Deterministic uniform(−1, 1) stream (SplitMix64), so the same seed gives the same net.
fn uniform_stream(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// Solve the symmetric positive-definite system `A x = b` (Cholesky), `A` n×n row-major,
/// `b` n×m; returns x n×m.
fn solve_spd(a: &[f64], b: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = if i == j {
                s.max(1e-300).sqrt()
            } else {
                s / l[j * n + j]
            };
        }
    }
    let mut x = b.to_vec();
    for c in 0..m {
        for i in 0..n {
            let mut s = x[i * m + c];
            for k in 0..i {
                s -= l[i * n + k] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i * m + c];
            for k in i + 1..n {
                s -= l[k * n + i] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
    }
    x
}

impl LearnedSchedule {
    /// A network that reproduces `fixed` (max |Δw| is a few 1e-5 for the defaults), seeded.
    pub fn init_from_fixed(
        fixed: &FixedSchedule,
        config: LearnedConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, FusionError> {
        fixed.validate()?;
        if config.embedding_dim < 2 || config.embedding_dim % 2 != 0 || config.hidden == 0 {
            return Err(FusionError::Config(
                "embedding_dim must be even and ≥ 2, hidden ≥ 1".into(),
            ));
        }
        if config.num_train_timesteps != fixed.num_train_timesteps {
            return Err(FusionError::Config(format!(
                "learned schedule has {} timesteps, fixed one {}",
                config.num_train_timesteps, fixed.num_train_timesteps
            )));
        }
        let (e, h, t_n) = (
            config.embedding_dim,
            config.hidden,
            config.num_train_timesteps,
        );
        let half = e / 2;
        // Slow components: at most two periods over [0, T).
        let slow: Vec<bool> = (0..e)
            .map(|j| {
                let k = j % half;
                let f = (-(10000f64.ln()) * k as f64 / half as f64).exp();
                f * t_n as f64 <= 4.0 * std::f64::consts::PI
            })
            .collect();
        let n_slow = slow.iter().filter(|&&s| s).count().max(1);
        let mut rnd = uniform_stream(seed);
        let scale = (3.0 / n_slow as f64).sqrt();
        let w1: Vec<f64> = (0..h * e)
            .map(|i| {
                let r = rnd();
                if slow[i % e] {
                    r * scale
                } else {
                    0.0
                }
            })
            .collect();
        let b1: Vec<f64> = (0..h).map(|_| rnd()).collect();
        // Hidden features at every integer timestep, plus a constant column.
        let ts: Vec<f64> = (0..t_n).map(|t| t as f64).collect();
        let emb = timestep_embedding(&ts, e, &Device::Cpu)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        let cols = h + 1;
        let mut x = vec![0f64; t_n * cols];
        for (t, row) in emb.iter().enumerate() {
            for j in 0..h {
                let mut a = b1[j];
                for k in 0..e {
                    a += w1[j * e + k] * row[k];
                }
                x[t * cols + j] = a / (1.0 + (-a).exp());
            }
            x[t * cols + h] = 1.0;
        }
        // Targets: centred log-weights (softmax is shift-invariant).
        let mut y = vec![0f64; t_n * NUM_SEGMENTS];
        for t in 0..t_n {
            let lw = fixed.weights(t as f64).map(f64::ln);
            let mean = lw.iter().sum::<f64>() / NUM_SEGMENTS as f64;
            for i in 0..NUM_SEGMENTS {
                y[t * NUM_SEGMENTS + i] = lw[i] - mean;
            }
        }
        let mut a = vec![0f64; cols * cols];
        let mut b = vec![0f64; cols * NUM_SEGMENTS];
        for t in 0..t_n {
            let r = &x[t * cols..(t + 1) * cols];
            for i in 0..cols {
                for j in 0..cols {
                    a[i * cols + j] += r[i] * r[j];
                }
                for c in 0..NUM_SEGMENTS {
                    b[i * NUM_SEGMENTS + c] += r[i] * y[t * NUM_SEGMENTS + c];
                }
            }
        }
        for i in 0..cols {
            a[i * cols + i] += 1e-6 * t_n as f64;
        }
        let sol = solve_spd(&a, &b, cols, NUM_SEGMENTS);
        let mut w2 = vec![0f32; NUM_SEGMENTS * h];
        let mut b2 = vec![0f32; NUM_SEGMENTS];
        for c in 0..NUM_SEGMENTS {
            for j in 0..h {
                w2[c * h + j] = sol[j * NUM_SEGMENTS + c] as f32;
            }
            b2[c] = sol[h * NUM_SEGMENTS + c] as f32;
        }
        let f32v = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Ok(Self {
            config,
            linear_1_weight: Var::from_vec(f32v(&w1), (h, e), device)?,
            linear_1_bias: Var::from_vec(f32v(&b1), h, device)?,
            linear_2_weight: Var::from_vec(w2, (NUM_SEGMENTS, h), device)?,
            linear_2_bias: Var::from_vec(b2, NUM_SEGMENTS, device)?,
        })
    }

    /// The trainable tensors, for an optimiser.
    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.linear_1_weight.clone(),
            self.linear_1_bias.clone(),
            self.linear_2_weight.clone(),
            self.linear_2_bias.clone(),
        ]
    }

    /// w(t) `(B, 3)` for a batch of timesteps, differentiable in the parameters.
    pub fn weights_tensor(&self, timesteps: &[f64]) -> CandleResult<Tensor> {
        let dev = self.linear_1_weight.device();
        let emb = timestep_embedding(timesteps, self.config.embedding_dim, dev)?;
        let h = emb
            .matmul(&self.linear_1_weight.as_tensor().t()?)?
            .broadcast_add(self.linear_1_bias.as_tensor())?
            .silu()?;
        let logits = h
            .matmul(&self.linear_2_weight.as_tensor().t()?)?
            .broadcast_add(self.linear_2_bias.as_tensor())?;
        crate::ops::softmax_last_dim(&logits)
    }

    pub fn weights(&self, t: f64) -> CandleResult<[f64; NUM_SEGMENTS]> {
        let v = self
            .weights_tensor(&[t])?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        Ok([v[0], v[1], v[2]])
    }

    /// The tensors under `prefix` (default [`LEARNED_PREFIX`]), e.g. to store them inside a
    /// LoRA file next to the UNet's low-rank pairs.
    pub fn to_tensors(&self, prefix: &str) -> HashMap<String, Tensor> {
        HashMap::from([
            (
                format!("{prefix}linear_1.weight"),
                self.linear_1_weight.as_tensor().clone(),
            ),
            (
                format!("{prefix}linear_1.bias"),
                self.linear_1_bias.as_tensor().clone(),
            ),
            (
                format!("{prefix}linear_2.weight"),
                self.linear_2_weight.as_tensor().clone(),
            ),
            (
                format!("{prefix}linear_2.bias"),
                self.linear_2_bias.as_tensor().clone(),
            ),
        ])
    }

    /// Rebuild from tensors under `prefix` (shapes give the configuration).
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        num_train_timesteps: usize,
        device: &Device,
    ) -> Result<Self, String> {
        let get = |name: &str| -> Result<Tensor, String> {
            tensors
                .get(&format!("{prefix}{name}"))
                .ok_or_else(|| format!("missing tensor {prefix}{name}"))?
                .to_dtype(DType::F32)
                .and_then(|t| t.to_device(device))
                .map_err(|e| e.to_string())
        };
        let (w1, b1, w2, b2) = (
            get("linear_1.weight")?,
            get("linear_1.bias")?,
            get("linear_2.weight")?,
            get("linear_2.bias")?,
        );
        let (h, e) = w1
            .dims2()
            .map_err(|e| format!("{prefix}linear_1.weight: {e}"))?;
        let ok = b1.dims() == [h]
            && w2.dims() == [NUM_SEGMENTS, h]
            && b2.dims() == [NUM_SEGMENTS]
            && e % 2 == 0;
        if !ok {
            return Err(format!(
                "inconsistent shapes: linear_1.weight {:?}, linear_1.bias {:?}, linear_2.weight {:?} (expected [3, {h}]), linear_2.bias {:?}",
                w1.dims(), b1.dims(), w2.dims(), b2.dims()
            ));
        }
        let var = |t: Tensor| Var::from_tensor(&t).map_err(|e| e.to_string());
        Ok(Self {
            config: LearnedConfig {
                embedding_dim: e,
                hidden: h,
                num_train_timesteps,
            },
            linear_1_weight: var(w1)?,
            linear_1_bias: var(b1)?,
            linear_2_weight: var(w2)?,
            linear_2_bias: var(b2)?,
        })
    }

    /// Write a standalone safetensors file (temporary name, then renamed). The configuration
    /// is stored in the header metadata under `strata.fusion`.
    pub fn save(&self, path: &Path) -> Result<(), FusionError> {
        let tensors = self.to_tensors(LEARNED_PREFIX);
        let meta = serde_json::to_string(&self.config).expect("config serialises");
        let tmp = path.with_extension("safetensors.tmp");
        let mut data: Vec<(String, F32View)> = tensors
            .into_iter()
            .map(|(k, t)| {
                let shape = t.dims().to_vec();
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Ok((k, F32View { shape, bytes }))
            })
            .collect::<CandleResult<_>>()?;
        data.sort_by(|a, b| a.0.cmp(&b.0));
        let meta = HashMap::from([("strata.fusion".to_string(), meta)]);
        safetensors::serialize_to_file(data, Some(meta), &tmp).map_err(|e| FusionError::Write {
            path: tmp.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        std::fs::rename(&tmp, path).map_err(|source| FusionError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Read what [`save`](Self::save) wrote (or any file holding the four tensors under
    /// [`LEARNED_PREFIX`]).
    pub fn load(path: &Path, device: &Device) -> Result<Self, FusionError> {
        let err = |what: String| FusionError::Read {
            path: path.to_path_buf(),
            prefix: LEARNED_PREFIX.to_string(),
            what,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
        let steps = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("strata.fusion"))
            .and_then(|s| serde_json::from_str::<LearnedConfig>(s).ok())
            .map_or(DEFAULT_TRAIN_TIMESTEPS, |c| c.num_train_timesteps);
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| err(e.to_string()))?;
        Self::from_tensors(&tensors, LEARNED_PREFIX, steps, device).map_err(err)
    }
}

/// Little-endian f32 bytes for the `safetensors` writer.
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for F32View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Key prefix of the learned schedule's tensors.
pub const LEARNED_PREFIX: &str = "hierarchical_fusion.";

/// Where w(t) comes from.
#[derive(Debug, Clone)]
pub enum Schedule {
    Fixed(FixedSchedule),
    Learned(LearnedSchedule),
}

impl Schedule {
    pub fn num_train_timesteps(&self) -> usize {
        match self {
            Schedule::Fixed(f) => f.num_train_timesteps,
            Schedule::Learned(l) => l.config.num_train_timesteps,
        }
    }
    pub fn weights_tensor(&self, timesteps: &[f64], device: &Device) -> CandleResult<Tensor> {
        match self {
            Schedule::Fixed(f) => f.weights_tensor(timesteps, device),
            Schedule::Learned(l) => l.weights_tensor(timesteps)?.to_device(device),
        }
    }
    pub fn weights(&self, t: f64) -> CandleResult<[f64; NUM_SEGMENTS]> {
        match self {
            Schedule::Fixed(f) => Ok(f.weights(t)),
            Schedule::Learned(l) => l.weights(t),
        }
    }
}

/// The fusion module: schedule + injection mode.
#[derive(Debug, Clone)]
pub struct Fusion {
    pub schedule: Schedule,
    pub mode: FusionMode,
}

impl Fusion {
    pub fn new(schedule: Schedule, mode: FusionMode) -> Self {
        Self { schedule, mode }
    }

    /// Conditioning for segment encodings `(B, 3, N, D)` at per-sample timesteps (`B`
    /// values). `Concat`: `(B, 3·N, D)` with segment i scaled by `3·w_i(t)`. `Decoupled`:
    /// the segments unchanged and the weights `(B, 3)`.
    pub fn condition(&self, segments: &Tensor, timesteps: &[f64]) -> CandleResult<Conditioning> {
        let (b, k, n, d) = segments.dims4()?;
        if k != NUM_SEGMENTS || timesteps.len() != b {
            candle_core::bail!(
                "fusion expects segments (B, 3, N, D) and B timesteps, got {:?} and {} timesteps",
                segments.dims(),
                timesteps.len()
            );
        }
        let w = self
            .schedule
            .weights_tensor(timesteps, segments.device())?
            .to_dtype(segments.dtype())?;
        Ok(match self.mode {
            FusionMode::Concat => {
                let scale = (w * NUM_SEGMENTS as f64)?.reshape((b, NUM_SEGMENTS, 1, 1))?;
                Conditioning::Context(segments.broadcast_mul(&scale)?.reshape((
                    b,
                    NUM_SEGMENTS * n,
                    d,
                ))?)
            }
            FusionMode::Decoupled => Conditioning::Decoupled {
                segments: segments.clone(),
                weights: w,
            },
        })
    }
}

/// Colours of the curves in [`plot_png`]: scene, relation, elements.
pub const PLOT_COLOURS: [[u8; 3]; NUM_SEGMENTS] = [[214, 39, 40], [31, 119, 180], [44, 160, 44]];

/// A 5×7 bitmap glyph (rows top to bottom, `#` = ink).
fn glyph(c: char) -> Option<[&'static str; 7]> {
    Some(match c {
        '0' => [
            " ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### ",
        ],
        '1' => [
            "  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        '2' => [
            " ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####",
        ],
        '3' => [
            "#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### ",
        ],
        '4' => [
            "   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # ",
        ],
        '5' => [
            "#####", "#    ", "#### ", "    #", "    #", "#   #", " ### ",
        ],
        '6' => [
            "  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### ",
        ],
        '7' => [
            "#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   ",
        ],
        '8' => [
            " ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### ",
        ],
        '9' => [
            " ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  ",
        ],
        '.' => [
            "     ", "     ", "     ", "     ", "     ", " ##  ", " ##  ",
        ],
        '(' => [
            "  #  ", " #   ", "#    ", "#    ", "#    ", " #   ", "  #  ",
        ],
        ')' => [
            "  #  ", "   # ", "    #", "    #", "    #", "   # ", "  #  ",
        ],
        '=' => [
            "     ", "     ", "#####", "     ", "#####", "     ", "     ",
        ],
        '-' => [
            "     ", "     ", "     ", "#####", "     ", "     ", "     ",
        ],
        ' ' => ["     "; 7],
        'a' => [
            "     ", "     ", " ### ", "    #", " ####", "#   #", " ####",
        ],
        'c' => [
            "     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### ",
        ],
        'd' => [
            "    #", "    #", " ## #", "#  ##", "#   #", "#   #", " ####",
        ],
        'e' => [
            "     ", "     ", " ### ", "#   #", "#####", "#    ", " ### ",
        ],
        'f' => [
            "  ## ", " #   ", "#### ", " #   ", " #   ", " #   ", " #   ",
        ],
        'g' => [
            "     ", " ####", "#   #", "#   #", " ####", "    #", " ### ",
        ],
        'h' => [
            "#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#   #",
        ],
        'i' => [
            "  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        'l' => [
            " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### ",
        ],
        'm' => [
            "     ", "     ", "## # ", "# # #", "# # #", "#   #", "#   #",
        ],
        'n' => [
            "     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #",
        ],
        'o' => [
            "     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### ",
        ],
        'r' => [
            "     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    ",
        ],
        's' => [
            "     ", "     ", " ####", "#    ", " ### ", "    #", "#### ",
        ],
        't' => [
            " #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## ",
        ],
        'w' => [
            "     ", "     ", "#   #", "#   #", "# # #", "# # #", " # # ",
        ],
        'T' => [
            "#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ",
        ],
        _ => return None,
    })
}

fn draw_text(
    img: &mut [u8],
    width: usize,
    x: usize,
    y: usize,
    text: &str,
    colour: [u8; 3],
    scale: usize,
) {
    let height = img.len() / (3 * width);
    for (ci, c) in text.chars().enumerate() {
        let Some(g) = glyph(c) else { continue };
        for (gy, row) in g.iter().enumerate() {
            for (gx, ch) in row.chars().enumerate() {
                if ch != '#' {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (ci * 6 + gx) * scale + dx;
                        let py = y + gy * scale + dy;
                        if px < width && py < height {
                            img[(py * width + px) * 3..(py * width + px) * 3 + 3]
                                .copy_from_slice(&colour);
                        }
                    }
                }
            }
        }
    }
}

/// An RGB plot (row-major, 3 bytes per pixel) of w(t) over `t ∈ [0, T)`: x axis t (0 at
/// the left, T−1 = start of denoising at the right), y axis weight 0…1, one curve per
/// segment in [`PLOT_COLOURS`], with a legend. `weights` gives w(t).
pub fn plot_rgb(
    weights: &dyn Fn(f64) -> [f64; NUM_SEGMENTS],
    num_train_timesteps: usize,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let mut img = vec![255u8; width * height * 3];
    let (left, right, top, bottom) = (56usize, 16usize, 40usize, 44usize);
    let pw = width.saturating_sub(left + right).max(1);
    let ph = height.saturating_sub(top + bottom).max(1);
    let put = |img: &mut Vec<u8>, x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
            let i = (y as usize * width + x as usize) * 3;
            img[i..i + 3].copy_from_slice(&c);
        }
    };
    let grey = [220, 220, 220];
    let black = [40, 40, 40];
    // Grid and axes.
    for q in 0..=4 {
        let y = (top + ph - q * ph / 4) as i64;
        for x in left..=left + pw {
            put(&mut img, x as i64, y, if q == 0 { black } else { grey });
        }
        let x = (left + q * pw / 4) as i64;
        for y in top..=top + ph {
            put(&mut img, x, y as i64, if q == 0 { black } else { grey });
        }
    }
    let t_max = (num_train_timesteps - 1) as f64;
    // Curves, 3 px thick.
    let ys: Vec<[f64; NUM_SEGMENTS]> = (0..=pw)
        .map(|px| weights(t_max * px as f64 / pw as f64))
        .collect();
    for seg in 0..NUM_SEGMENTS {
        for px in 0..pw {
            let y0 = top as f64 + ph as f64 * (1.0 - ys[px][seg]);
            let y1 = top as f64 + ph as f64 * (1.0 - ys[px + 1][seg]);
            let (lo, hi) = (y0.min(y1).round() as i64, y0.max(y1).round() as i64);
            for y in lo..=hi {
                for d in -1..=1 {
                    put(&mut img, (left + px) as i64, y + d, PLOT_COLOURS[seg]);
                    put(&mut img, (left + px + 1) as i64, y + d, PLOT_COLOURS[seg]);
                }
            }
        }
    }
    // Tick labels.
    for q in 0..=4 {
        let label = format!("{:.2}", q as f64 / 4.0);
        draw_text(
            &mut img,
            width,
            8,
            top + ph - q * ph / 4 - 7,
            &label,
            black,
            2,
        );
        let t = (t_max * q as f64 / 4.0).round() as usize;
        let label = t.to_string();
        let x = (left + q * pw / 4).saturating_sub(label.len() * 6);
        draw_text(&mut img, width, x, top + ph + 8, &label, black, 2);
    }
    draw_text(
        &mut img,
        width,
        left + pw / 2 - 120,
        height - 16,
        "t  (T-1 = start of denoising)",
        black,
        2,
    );
    // Legend.
    let mut x = left + 8;
    for (seg, name) in ["scene", "relation", "elements"].iter().enumerate() {
        for yy in 10..24 {
            for xx in x..x + 14 {
                put(&mut img, xx as i64, yy as i64, PLOT_COLOURS[seg]);
            }
        }
        draw_text(&mut img, width, x + 20, 10, name, black, 2);
        x += 20 + name.len() * 12 + 28;
    }
    img
}

/// Encode RGB pixels as PNG and write them to `path` (temporary name, then renamed).
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<(), FusionError> {
    let werr = |p: &Path, e: String| FusionError::Write {
        path: p.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| werr(path, e.to_string()))?;
        w.write_image_data(rgb)
            .map_err(|e| werr(path, e.to_string()))?;
    }
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, &buf).map_err(|source| FusionError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| FusionError::Write {
        path: path.to_path_buf(),
        source,
    })
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

    #[test]
    fn spd_solver() {
        let a = [4.0, 1.0, 1.0, 3.0];
        let b = [1.0, 2.0];
        let x = solve_spd(&a, &b, 2, 1);
        assert!((4.0 * x[0] + x[1] - 1.0).abs() < 1e-12 && (x[0] + 3.0 * x[1] - 2.0).abs() < 1e-12);
    }
}
