//! Differentiable building blocks written from primitive candle ops.
//!
//! candle's fused `softmax_last_dim` and `LayerNorm` kernels have no backward pass (they give
//! no gradient, silently), so every path that may train uses these instead.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Softmax over the last dimension, differentiable (max-subtracted for stability).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Layer normalisation over the last dimension, differentiable. Computed in f32 for f16/bf16
/// inputs, like PyTorch's autocast does.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = if dtype == DType::F32 || dtype == DType::F64 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    };
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?;
    let y = y.broadcast_mul(weight)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `torch.nn.LayerNorm` with weight and bias, differentiable.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, Some(&self.bias), self.eps)
    }
}

/// Group normalisation of an `(N, C, ...)` tensor, differentiable.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let dtype = x.dtype();
    let dims = x.dims().to_vec();
    let (n, c) = (dims[0], dims[1]);
    let x32 = if dtype == DType::F32 || dtype == DType::F64 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    };
    let g = x32.reshape((n, groups, ()))?;
    let mean = g.mean_keepdim(D::Minus1)?;
    let gc = g.broadcast_sub(&mean)?;
    let var = gc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = gc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(dims.as_slice())?
        .to_dtype(dtype)?;
    let mut shape = vec![1usize; dims.len()];
    shape[1] = c;
    y.broadcast_mul(&weight.reshape(shape.as_slice())?)?
        .broadcast_add(&bias.reshape(shape.as_slice())?)
}

/// `torch.nn.GroupNorm` with affine parameters, differentiable.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, self.groups, &self.weight, &self.bias, self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Finite-difference check of d/dx sum(f(x) * r) for a fixed random r.
    fn grad_check(f: impl Fn(&Tensor) -> Result<Tensor>, shape: &[usize]) -> Result<()> {
        let dev = Device::Cpu;
        let x0 = Tensor::randn(0f64, 1.0, shape, &dev)?;
        let r = Tensor::randn(0f64, 1.0, shape, &dev)?;
        let x = Var::from_tensor(&x0)?;
        let loss = (f(x.as_tensor())? * &r)?.sum_all()?;
        let g = loss
            .backward()?
            .get(x.as_tensor())
            .expect("gradient reaches x")
            .clone();
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        let xv = x0.flatten_all()?.to_vec1::<f64>()?;
        let h = 1e-6;
        for i in 0..xv.len() {
            let mut p = xv.clone();
            p[i] += h;
            let mut m = xv.clone();
            m[i] -= h;
            let lp = (f(&Tensor::from_vec(p, shape, &dev)?)? * &r)?
                .sum_all()?
                .to_scalar::<f64>()?;
            let lm = (f(&Tensor::from_vec(m, shape, &dev)?)? * &r)?
                .sum_all()?
                .to_scalar::<f64>()?;
            let fd = (lp - lm) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "element {i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
        Ok(())
    }

    #[test]
    fn softmax_matches_candle_and_has_gradient() -> Result<()> {
        let x = Tensor::randn(0f32, 3.0, (2, 3, 7), &Device::Cpu)?;
        let ours = softmax_last_dim(&x)?;
        let fused = candle_nn::ops::softmax_last_dim(&x)?;
        let d = (ours - fused)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "max diff {d}");
        grad_check(softmax_last_dim, &[2, 5])
    }

    #[test]
    fn layer_norm_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, 6, &dev)?;
        let b = Tensor::randn(0f64, 1.0, 6, &dev)?;
        grad_check(|x| layer_norm(x, &w, Some(&b), 1e-5), &[3, 6])
    }

    #[test]
    fn group_norm_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, 4, &dev)?;
        let b = Tensor::randn(0f64, 1.0, 4, &dev)?;
        grad_check(|x| group_norm(x, 2, &w, &b, 1e-5), &[2, 4, 3, 2])
    }
}
