//! The learned schedule: a small MLP on the sinusoidal timestep embedding, initialised to
//! reproduce a fixed schedule by least squares, trainable, saved as safetensors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result as CandleResult, Tensor, Var};

use super::fixed::FixedSchedule;
use super::solve::solve_spd;
use super::{FusionError, DEFAULT_TRAIN_TIMESTEPS};
use crate::segments::NUM_SEGMENTS;

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

impl LearnedSchedule {
    /// A network that reproduces `fixed` (max |Δw| is a few 1e-5 for the defaults), seeded.
    pub fn init_from_fixed(
        fixed: &FixedSchedule,
        config: LearnedConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, FusionError> {
        fixed.validate()?;
        if config.embedding_dim < 2 || !config.embedding_dim.is_multiple_of(2) || config.hidden == 0
        {
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

    /// Write a standalone safetensors file (atomically, through
    /// [`crate::safetensors_io::save`]). The configuration is stored in the header metadata
    /// under `strata.fusion`.
    pub fn save(&self, path: &Path) -> Result<(), FusionError> {
        let tensors = self
            .to_tensors(LEARNED_PREFIX)
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<CandleResult<HashMap<_, _>>>()?;
        let meta = serde_json::to_string(&self.config).expect("config serialises");
        let meta = HashMap::from([("strata.fusion".to_string(), meta)]);
        crate::safetensors_io::save(path, &tensors, Some(meta)).map_err(FusionError::from)
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

/// Key prefix of the learned schedule's tensors.
pub const LEARNED_PREFIX: &str = "hierarchical_fusion.";
