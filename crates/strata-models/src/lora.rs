//! LoRA adapters on linear projections: y = W₀x + b + (α/r)·m·B(Ax), with W₀ frozen (a plain
//! tensor run through [`crate::ops::linear`], so no gradient is ever computed for it) and A, B
//! trainable [`Var`]s.
//!
//! Every adapted layer knows its diffusers module path (e.g.
//! `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`), so adapters can be listed,
//! saved and loaded by name (see `UNet2DConditionModel::lora_adapters`).

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Which projections receive adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraTargets {
    /// `to_q`, `to_k`, `to_v`, `to_out.0` of every UNet attention (the paper's choice).
    pub attention: bool,
    /// `proj_in` / `proj_out` of the spatial transformers.
    pub proj: bool,
    /// `ff.net.0.proj` / `ff.net.2` of the transformer feed-forwards.
    pub ff: bool,
}

impl Default for LoraTargets {
    fn default() -> Self {
        Self {
            attention: true,
            proj: false,
            ff: false,
        }
    }
}

/// Rank, α and initialisation of new adapters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: LoraTargets,
    /// Seed of A's initialisation (B starts at zero, so the adapted model equals the base one).
    pub seed: u64,
}

impl LoraConfig {
    pub fn new(rank: usize, alpha: f64) -> Self {
        Self {
            rank,
            alpha,
            targets: LoraTargets::default(),
            seed: 0,
        }
    }
}

/// What kind of projection a [`LoraLinear`] is (for filtering and for exporters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjKind {
    /// to_q / to_k / to_v / to_out.0
    Attention,
    /// proj_in / proj_out (a 1×1 convolution in SD-1.5 files when `conv1x1`)
    Proj,
    /// ff.net.0.proj / ff.net.2
    FeedForward,
}

/// One low-rank adapter. Cloning shares the trainable storage.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// (r, in) — "lora_down".
    pub a: Var,
    /// (out, r) — "lora_up".
    pub b: Var,
    pub alpha: f64,
    /// Inference multiplier (`--lora-scale`), 1 for training.
    pub multiplier: f64,
}

impl LoraAdapter {
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// (α / r) · multiplier.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank() as f64 * self.multiplier
    }

    /// New adapter: A ~ U(−1/√in, 1/√in) from `seed` (PyTorch/PEFT's kaiming-uniform bound
    /// with a = √5), B = 0.
    pub fn init(
        in_dim: usize,
        out_dim: usize,
        rank: usize,
        alpha: f64,
        seed: u64,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        if rank == 0 {
            candle_core::bail!("LoRA rank must be at least 1")
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let bound = 1.0 / (in_dim as f64).sqrt();
        let av: Vec<f32> = (0..rank * in_dim)
            .map(|_| rng.gen_range(-bound..bound) as f32)
            .collect();
        let a = Tensor::from_vec(av, (rank, in_dim), dev)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out_dim, rank), dtype, dev)?;
        Ok(Self {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            alpha,
            multiplier: 1.0,
        })
    }

    /// The dense update ΔW = scale · B·A, shape (out, in).
    pub fn delta_weight(&self) -> Result<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale()
    }
}

/// A frozen linear layer with an optional LoRA adapter.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// diffusers module path, e.g. `mid_block.attentions.0.transformer_blocks.0.attn2.to_k`.
    pub path: String,
    pub kind: ProjKind,
    /// The weight was stored as a (out, in, 1, 1) convolution kernel.
    pub conv1x1: bool,
    weight: Tensor,
    bias: Option<Tensor>,
    pub lora: Option<LoraAdapter>,
}

impl LoraLinear {
    /// Loads `weight` (out, in) and optionally `bias` from `vb`. With `conv1x1` the stored weight
    /// is a (out, in, 1, 1) kernel (SD-1.5 `proj_in`/`proj_out`), used as a linear map over
    /// channels.
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        kind: ProjKind,
        conv1x1: bool,
    ) -> Result<Self> {
        let weight = if conv1x1 {
            vb.get((out_dim, in_dim, 1, 1), "weight")?
                .reshape((out_dim, in_dim))?
        } else {
            vb.get((out_dim, in_dim), "weight")?
        };
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            path: vb.prefix(),
            kind,
            conv1x1,
            weight,
            bias,
            lora: None,
        })
    }

    /// A layer from its weight (out, in) and bias, without adapter (e.g. to swap in a
    /// trainable weight for a gradient check).
    pub fn from_parts(path: &str, kind: ProjKind, weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            path: path.to_string(),
            kind,
            conv1x1: false,
            weight,
            bias,
            lora: None,
        }
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Whether `targets` selects this layer.
    pub fn selected_by(&self, targets: &LoraTargets) -> bool {
        match self.kind {
            ProjKind::Attention => targets.attention,
            ProjKind::Proj => targets.proj,
            ProjKind::FeedForward => targets.ff,
        }
    }
}

/// `x·Wᵀ` for a trainable `w`: leading dimensions are flattened so that the weight gradient is
/// one matrix product instead of a batched one summed over the batch.
fn linear_fwd(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match x.rank() {
        2 => x.matmul(&w.t()?),
        _ => {
            let mut dims = x.dims().to_vec();
            let k = dims.pop().unwrap_or(1);
            let m = dims.iter().product::<usize>();
            let y = x.contiguous()?.reshape((m, k))?.matmul(&w.t()?)?;
            dims.push(w.dim(0)?);
            y.reshape(dims)
        }
    }
}

impl Module for LoraLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = crate::ops::linear(x, &self.weight, self.bias.as_ref())?;
        if let Some(l) = &self.lora {
            // trainable A/B may be f32 master weights under a half-precision model
            let a = crate::ops::cast(l.a.as_tensor(), x.dtype())?;
            let b = crate::ops::cast(l.b.as_tensor(), x.dtype())?;
            let h = linear_fwd(x, &a)?;
            let h = linear_fwd(&h, &b)?;
            y = (y + (h * l.scale())?)?;
        }
        Ok(y)
    }
}

/// Anything holding [`LoraLinear`] layers.
pub trait VisitLinears {
    fn visit_linears(&self, f: &mut dyn FnMut(&LoraLinear));
    fn visit_linears_mut(&mut self, f: &mut dyn FnMut(&mut LoraLinear));
}

/// Attaches fresh adapters to every selected layer (replacing existing ones). Each layer's A is
/// seeded from `config.seed` and its position, so the same config gives the same adapters.
pub fn attach<M: VisitLinears + ?Sized>(model: &mut M, config: &LoraConfig) -> Result<usize> {
    let mut n = 0usize;
    let mut err = None;
    model.visit_linears_mut(&mut |l| {
        if err.is_some() || !l.selected_by(&config.targets) {
            return;
        }
        let seed = config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(n as u64);
        match LoraAdapter::init(
            l.in_dim(),
            l.out_dim(),
            config.rank,
            config.alpha,
            seed,
            // half-precision models get f32 adapters (master weights for mixed precision)
            match l.weight.dtype() {
                DType::F16 | DType::BF16 => DType::F32,
                d => d,
            },
            l.weight.device(),
        ) {
            Ok(a) => {
                l.lora = Some(a);
                n += 1;
            }
            Err(e) => err = Some(e),
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// (module path, adapter) for every adapted layer, in model order.
pub fn adapters<M: VisitLinears + ?Sized>(model: &M) -> Vec<(String, LoraAdapter)> {
    let mut out = vec![];
    model.visit_linears(&mut |l| {
        if let Some(a) = &l.lora {
            out.push((l.path.clone(), a.clone()));
        }
    });
    out
}

/// The trainable variables (A and B of every adapter).
pub fn trainable_vars<M: VisitLinears + ?Sized>(model: &M) -> Vec<Var> {
    adapters(model)
        .into_iter()
        .flat_map(|(_, a)| [a.a, a.b])
        .collect()
}

/// Sets the inference multiplier of every adapter.
pub fn set_multiplier<M: VisitLinears + ?Sized>(model: &mut M, m: f64) {
    model.visit_linears_mut(&mut |l| {
        if let Some(a) = &mut l.lora {
            a.multiplier = m;
        }
    });
}

/// Installs a given adapter at `path`; errors if no layer has that path or shapes disagree.
pub fn install<M: VisitLinears + ?Sized>(
    model: &mut M,
    path: &str,
    adapter: LoraAdapter,
) -> Result<()> {
    let mut found = None;
    model.visit_linears_mut(&mut |l| {
        if l.path == path {
            let (r, i) = adapter.a.dims2().unwrap_or((0, 0));
            let (o, r2) = adapter.b.dims2().unwrap_or((0, 0));
            if i != l.in_dim() || o != l.out_dim() || r != r2 {
                found = Some(Err(format!(
                    "LoRA for {path}: A {:?} / B {:?} do not fit the layer ({} → {})",
                    adapter.a.dims(),
                    adapter.b.dims(),
                    l.in_dim(),
                    l.out_dim()
                )));
            } else {
                l.lora = Some(adapter.clone());
                found = Some(Ok(()));
            }
        }
    });
    match found {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => candle_core::bail!("{e}"),
        None => candle_core::bail!("LoRA: the model has no projection named {path}"),
    }
}
