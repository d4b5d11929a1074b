//! AdamW (decoupled weight decay, bias-corrected moments; PyTorch's `torch.optim.AdamW`
//! arithmetic) and the cosine learning-rate schedule with optional linear warm-up (diffusers'
//! `get_cosine_schedule_with_warmup`). Both are checked against PyTorch/diffusers by
//! `scripts/fixtures/train_adamw.py`.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

/// AdamW hyper-parameters (PyTorch defaults except the learning rate, the paper's 1e-4).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Dynamic loss scaling for f16 training (PyTorch `GradScaler` rules): the loss is multiplied
/// by `scale` before the backward pass and the gradients divided by it; a step whose gradients
/// are not finite is skipped and halves the scale; `growth_interval` finite steps in a row
/// double it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    /// Finite steps since the last change of scale.
    pub good_steps: u64,
    pub growth_interval: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// Records one step: `finite` gradients (the update was applied) or not (skipped).
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
        }
    }
}

/// AdamW over named variables. The moments are kept in f32 whatever the variable dtype.
pub struct AdamW {
    pub params: AdamWParams,
    /// Loss scaling state (f16 mixed precision only); saved with the moments.
    pub scaler: Option<LossScaler>,
    vars: Vec<(String, Var)>,
    /// Per-variable learning-rate multiplier (1 unless set by [`AdamW::set_lr_scale`]).
    lr_scales: Vec<f64>,
    /// Per-variable weight decay (`params.weight_decay` unless set by
    /// [`AdamW::set_weight_decay`]).
    weight_decays: Vec<f64>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of updates done (the `t` of the bias corrections).
    pub t: u64,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like()?.to_dtype(DType::F32))
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            params,
            scaler: None,
            lr_scales: vec![1.0; vars.len()],
            weight_decays: vec![params.weight_decay; vars.len()],
            vars,
            m,
            v,
            t: 0,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Multiplies the learning rate of the variables whose name starts with `prefix` by
    /// `scale` (a second parameter group, e.g. the text-encoder adapters). Returns how many
    /// variables it applies to.
    pub fn set_lr_scale(&mut self, prefix: &str, scale: f64) -> usize {
        let mut n = 0;
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if name.starts_with(prefix) {
                self.lr_scales[i] = scale;
                n += 1;
            }
        }
        n
    }

    /// Sets the weight decay of the variables named exactly `name` (a parameter group
    /// without decay, e.g. an embedding table). Returns how many variables it applies to.
    pub fn set_weight_decay(&mut self, name: &str, weight_decay: f64) -> usize {
        let mut n = 0;
        for (i, (v, _)) in self.vars.iter().enumerate() {
            if v == name {
                self.weight_decays[i] = weight_decay;
                n += 1;
            }
        }
        n
    }

    /// One update with gradients `grads` (by variable, in the same order as `vars`) at
    /// learning rate `lr`. A variable without gradient (`None`) is an error: every trainable
    /// tensor must receive one.
    pub fn step_with(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            candle_core::bail!(
                "AdamW: {} gradients for {} variables",
                grads.len(),
                self.vars.len()
            )
        }
        self.t += 1;
        let AdamWParams {
            beta1, beta2, eps, ..
        } = self.params;
        let bc1 = 1.0 - beta1.powi(self.t as i32);
        let bc2 = 1.0 - beta2.powi(self.t as i32);
        let bc2_sqrt = bc2.sqrt();
        let base_lr = lr;
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let lr = base_lr * self.lr_scales[i];
            let weight_decay = self.weight_decays[i];
            let step_size = lr / bc1;
            let g = grads[i].to_dtype(DType::F32)?;
            let p = var.as_tensor().to_dtype(DType::F32)?.detach();
            // decoupled weight decay: p ← p·(1 − lr·λ)
            let p = (p * (1.0 - lr * weight_decay))?;
            let m = ((&self.m[i] * beta1)? + (&g * (1.0 - beta1))?)?;
            let v = ((&self.v[i] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + eps)?;
            let p = (p - ((&m / denom)? * step_size)?)?;
            var.set(&p.to_dtype(var.dtype())?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Gradients of every variable from a backward pass; errors naming the first variable that
    /// got none.
    pub fn collect_grads(&self, store: &GradStore) -> Result<Vec<Tensor>> {
        self.vars
            .iter()
            .map(|(name, v)| match store.get(v.as_tensor()) {
                // candle leaves a variable's gradient attached to the forward graph (it only
                // detaches the gradients of intermediate nodes): kept in the moments, it would
                // keep every step's activations alive (hundreds of MB per step).
                Some(g) => Ok(g.detach()),
                None => candle_core::bail!("no gradient reached the trainable tensor {name}"),
            })
            .collect()
    }

    /// Moments as `m.<name>` / `v.<name>` tensors (for checkpoints).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        if let Some(s) = &self.scaler {
            // both exact in f32: the scale is a power of two, good_steps < growth_interval
            let v = [s.scale as f32, s.good_steps as f32];
            if let Ok(t) = Tensor::new(&v, &candle_core::Device::Cpu) {
                out.insert(LOSS_SCALER_KEY.to_string(), t);
            }
        }
        out
    }

    /// Restores moments written by [`AdamW::state_tensors`] and the update count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (which, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{which}.{name}");
                let x = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no {key}"))
                })?;
                if x.dims() != var.dims() {
                    candle_core::bail!(
                        "optimizer state {key} has shape {:?}, the variable {:?}",
                        x.dims(),
                        var.dims()
                    )
                }
                *slot = x.to_dtype(DType::F32)?.to_device(var.device())?;
            }
        }
        if let Some(s) = &mut self.scaler {
            let x = tensors.get(LOSS_SCALER_KEY).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "optimizer state has no {LOSS_SCALER_KEY} (the checkpoint is not from an f16 run)"
                ))
            })?;
            let v = x.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            if v.len() != 2 || !(v[0].is_finite() && v[0] > 0.0) {
                candle_core::bail!("optimizer state {LOSS_SCALER_KEY} is not [scale, good_steps]")
            }
            s.scale = v[0] as f64;
            s.good_steps = v[1] as u64;
        }
        self.t = t;
        Ok(())
    }
}

/// Key of the loss scaler's `[scale, good_steps]` in the optimizer state file.
pub const LOSS_SCALER_KEY: &str = "loss_scaler";

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The base rate throughout (after any warm-up).
    Constant,
    /// Half-cosine decay from the base rate to 0 at the last step (after any warm-up).
    Cosine,
}

/// Adds one micro-batch's gradients `g` to the running sum (gradient accumulation).
pub fn accumulate_grads(sum: Option<Vec<Tensor>>, g: Vec<Tensor>) -> Result<Vec<Tensor>> {
    match sum {
        None => Ok(g),
        Some(s) => s.iter().zip(&g).map(|(a, b)| a + b).collect(),
    }
}

/// Whether every gradient is finite (a non-finite sum of squares means an inf or NaN entry, or
/// an f16 overflow). The training loops check this before any update.
pub fn grads_finite(grads: &[Tensor]) -> bool {
    // one reduction on the device and one scalar copied to the host, however many tensors
    let sums = grads
        .iter()
        .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all())
        .collect::<candle_core::Result<Vec<_>>>();
    sums.and_then(|s| Tensor::stack(&s, 0)?.sum_all()?.to_scalar::<f32>())
        .map(f32::is_finite)
        .unwrap_or(false)
}

/// lr at optimiser step `step` (0-based, the step about to be taken) of `total`: linear
/// warm-up over `warmup` steps, then constant or half-cosine decay to 0 at `total`.
pub fn lr_at(kind: LrSchedule, base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    match kind {
        LrSchedule::Constant => base,
        LrSchedule::Cosine => {
            let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
            base * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    }
}
