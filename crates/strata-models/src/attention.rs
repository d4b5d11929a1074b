//! Scaled dot-product attention that never keeps an N×M matrix for the backward pass.
//!
//! At 512 px the UNet's first level attends 4096 latent positions to each other: one
//! (heads, 4096, 4096) f32 score matrix is 64 MiB per head and image, and the plain
//! composition `softmax(q·kᵀ)·v` keeps two of them per attention layer (the scores as the
//! softmax's input, the probabilities as the second matmul's input) until the backward pass,
//! then forms their gradients too. A LoRA step at that size spends most of its memory there.
//!
//! [`attention`] computes the same values query block by query block, keeping only the
//! output and each row's log-sum-exp; when a gradient is needed, its backward recomputes
//! each block's probabilities from q, k and the log-sum-exp (the recomputation that
//! memory-efficient attention kernels do): about one extra q·kᵀ product in exchange for
//! O(block × M) instead of O(N × M) memory. Small attentions (under
//! [`BLOCK_ELEMENTS`] score elements) keep the plain composition, which is faster there.
//! Written here because candle has no such op with a backward; checked against the plain
//! composition (values and gradients) in the tests below.

use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, D,
};

use crate::cpu_kernels::{self, AttnGeom};

use crate::ops::{softmax_last_dim, take_output};

/// Attention over the projections' layout: `q` (B, N, H·d), `k` and `v` (B, M, H·d), heads
/// side by side; returns (B, N, H·d). On the CPU in f32/f64 (strata's kernels on) this is one
/// op of [`crate::cpu_kernels`] — no head split/merge copies, scores formed block by block and
/// never kept, a backward that recomputes them; elsewhere it splits the heads and calls
/// [`attention`].
pub fn attention_heads_last(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let (kb, m, kc) = k.dims3()?;
    let fast = crate::ops::fast_kernels()
        && q.device().is_cpu()
        && matches!(q.dtype(), DType::F32 | DType::F64)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype()
        && heads > 0
        && c % heads == 0
        && kb == b
        && kc == c
        && v.dims() == k.dims()
        && n > 0
        && m > 0;
    if !fast {
        let split = |x: &Tensor| -> Result<Tensor> {
            let (b, n, c) = x.dims3()?;
            x.reshape((b, n, heads, c / heads))?
                .transpose(1, 2)?
                .contiguous()
        };
        let o = attention(&split(q)?, &split(k)?, &split(v)?, scale)?;
        return o.transpose(1, 2)?.reshape((b, n, c));
    }
    let op = FusedAttention {
        geom: AttnGeom {
            b,
            heads,
            n,
            m,
            d: c / heads,
            scale,
            rows: AttnGeom::default_rows(n, m),
        },
        lse: std::sync::Mutex::new(None),
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    crate::ops::profile::timed(crate::ops::profile::Op::AttnFwd, || {
        if q.track_op() || k.track_op() || v.track_op() {
            q.apply_op3(&k, &v, op)
        } else {
            q.apply_op3_no_bwd(&k, &v, &op)
        }
    })
}

struct FusedAttention {
    geom: AttnGeom,
    /// The forward's per-row log-sum-exp, for the backward.
    lse: std::sync::Mutex<Option<CpuStorage>>,
}

fn cpu_slice<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    if !l.is_contiguous() {
        candle_core::bail!("attention: inputs must be contiguous")
    }
    let v = s.as_slice::<T>()?;
    Ok(&v[l.start_offset()..l.start_offset() + l.shape().elem_count()])
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "strata-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let (out, lse) = match qs {
            CpuStorage::F32(_) => {
                let (o, l) = cpu_kernels::attention(
                    cpu_slice::<f32>(qs, ql)?,
                    cpu_slice::<f32>(ks, kl)?,
                    cpu_slice::<f32>(vs, vl)?,
                    g,
                );
                (CpuStorage::F32(o), CpuStorage::F32(l))
            }
            CpuStorage::F64(_) => {
                let (o, l) = cpu_kernels::attention(
                    cpu_slice::<f64>(qs, ql)?,
                    cpu_slice::<f64>(ks, kl)?,
                    cpu_slice::<f64>(vs, vl)?,
                    g,
                );
                (CpuStorage::F64(o), CpuStorage::F64(l))
            }
            _ => candle_core::bail!("attention: only f32 and f64 on the CPU kernels"),
        };
        *self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned lock".into()))? = Some(lse);
        Ok((out, Shape::from((g.b, g.n, g.heads * g.d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let t0 = crate::ops::profile::start();
        let r = self.grads(q, k, v, out, grad);
        t0.end(crate::ops::profile::Op::AttnBwd);
        r
    }
}

impl FusedAttention {
    #[allow(clippy::type_complexity)]
    fn grads(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = &self.geom;
        let lse = self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned lock".into()))?
            .clone();
        let Some(lse) = lse else {
            candle_core::bail!("attention: backward without forward")
        };
        let grad = grad.contiguous()?;
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (os, ol) = out.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (
            Storage::Cpu(qs),
            Storage::Cpu(ks),
            Storage::Cpu(vs),
            Storage::Cpu(os),
            Storage::Cpu(gs),
        ) = (&*qs, &*ks, &*vs, &*os, &*gs)
        else {
            candle_core::bail!("attention: backward expects CPU tensors")
        };
        macro_rules! run {
            ($t:ty, $l:expr) => {{
                let (dq, dk, dv) = cpu_kernels::attention_grad::<$t>(
                    cpu_slice(qs, ql)?,
                    cpu_slice(ks, kl)?,
                    cpu_slice(vs, vl)?,
                    cpu_slice(os, ol)?,
                    $l,
                    cpu_slice(gs, gl)?,
                    g,
                );
                (dq, dk, dv)
            }};
        }
        let dev = q.device();
        let (dq, dk, dv) = match &lse {
            CpuStorage::F32(l) => {
                let (a, b, c) = run!(f32, l);
                (
                    Tensor::from_vec(a, q.shape(), dev)?,
                    Tensor::from_vec(b, k.shape(), dev)?,
                    Tensor::from_vec(c, v.shape(), dev)?,
                )
            }
            CpuStorage::F64(l) => {
                let (a, b, c) = run!(f64, l);
                (
                    Tensor::from_vec(a, q.shape(), dev)?,
                    Tensor::from_vec(b, k.shape(), dev)?,
                    Tensor::from_vec(c, v.shape(), dev)?,
                )
            }
            _ => candle_core::bail!("attention: only f32 and f64 on the CPU kernels"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Score elements (batch × heads × rows × M) above which attention runs block by block.
pub const BLOCK_ELEMENTS: usize = 1 << 22;

/// The plain composition `softmax(q·s·kᵀ)·v` over (B, H, N, d) tensors.
pub fn attention_plain(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let s = (q * scale)?.matmul(&k.t()?)?;
    softmax_last_dim(&s)?.matmul(v)
}

/// Scaled dot-product attention over (B, H, N, d) queries and (B, H, M, d) keys / values,
/// differentiable in all three. Uses blocks of queries when the score matrix is large.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, h, n, _) = q.dims4()?;
    let m = k.dim(2)?;
    let rows = rows_per_block(b * h, m);
    if rows >= n {
        return attention_plain(q, k, v, scale);
    }
    let (out, lse) = blocked_forward(&q.detach(), &k.detach(), &v.detach(), scale, rows)?;
    if !(q.track_op() || k.track_op() || v.track_op()) {
        return Ok(out);
    }
    q.apply_op3(
        k,
        v,
        BlockedAttention {
            out: std::sync::Mutex::new(Some(out)),
            lse,
            scale,
            rows,
        },
    )
}

/// Query rows per block so one block's scores stay under [`BLOCK_ELEMENTS`].
fn rows_per_block(batch_heads: usize, m: usize) -> usize {
    (BLOCK_ELEMENTS / (batch_heads * m).max(1)).max(1)
}

/// Output and per-row log-sum-exp (B, H, N, 1), block by block.
fn blocked_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    rows: usize,
) -> Result<(Tensor, Tensor)> {
    let n = q.dim(2)?;
    let kt = k.t()?.contiguous()?;
    let mut outs = Vec::new();
    let mut lses = Vec::new();
    let mut start = 0;
    while start < n {
        let len = rows.min(n - start);
        let qb = q.narrow(2, start, len)?;
        let s = (qb * scale)?.matmul(&kt)?;
        let max = s.max_keepdim(D::Minus1)?;
        let e = s.broadcast_sub(&max)?.exp()?;
        let sum = e.sum_keepdim(D::Minus1)?;
        outs.push(e.broadcast_div(&sum)?.matmul(v)?);
        lses.push((sum.log()? + max)?);
        start += len;
    }
    Ok((
        Tensor::cat(&outs, 2)?.contiguous()?,
        Tensor::cat(&lses, 2)?.contiguous()?,
    ))
}

struct BlockedAttention {
    out: std::sync::Mutex<Option<Tensor>>,
    /// log Σ exp(scores) per query row, (B, H, N, 1).
    lse: Tensor,
    scale: f64,
    rows: usize,
}

impl CustomOp3 for BlockedAttention {
    fn name(&self) -> &'static str {
        "blocked-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        take_output(
            &self.out,
            |st| match st {
                Storage::Cpu(c) => Some(c),
                _ => None,
            },
            "attention",
        )
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        take_output(
            &self.out,
            |st| match st {
                Storage::Cuda(c) => Some(c),
                _ => None,
            },
            "attention",
        )
    }

    /// Per query block: P = exp(s·q·kᵀ − lse), dV += Pᵀ·g, dP = g·vᵀ,
    /// dS = P ⊙ (dP − rowsum(g ⊙ out)), dq = s·dS·k, dk += s·dSᵀ·q.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (q, k, v, out, grad) = (
            q.detach(),
            k.detach(),
            v.detach(),
            out.detach(),
            grad.detach(),
        );
        let n = q.dim(2)?;
        let kt = k.t()?.contiguous()?;
        let vt = v.t()?.contiguous()?;
        let mut dqs = Vec::new();
        let mut dk = k.zeros_like()?;
        let mut dv = v.zeros_like()?;
        let mut start = 0;
        while start < n {
            let len = self.rows.min(n - start);
            let qb = q.narrow(2, start, len)?;
            let gb = grad.narrow(2, start, len)?;
            let ob = out.narrow(2, start, len)?;
            let lb = self.lse.narrow(2, start, len)?;
            let p = (&qb * self.scale)?.matmul(&kt)?.broadcast_sub(&lb)?.exp()?;
            dv = (dv + p.t()?.matmul(&gb)?)?;
            let dp = gb.matmul(&vt)?;
            let delta = (&gb * &ob)?.sum_keepdim(D::Minus1)?;
            let ds = (p * dp.broadcast_sub(&delta)?)?;
            dqs.push((ds.matmul(&k)? * self.scale)?);
            dk = (dk + (ds.t()?.matmul(&qb)? * self.scale)?)?;
            start += len;
        }
        Ok((Some(Tensor::cat(&dqs, 2)?), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn rand(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f64> = (0..n).map(|_| r.gen_range(-2.0..2.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// The fused CPU attention over the (B, N, H·d) layout against the plain composition on
    /// split heads: values and gradients of q, k and v (f64), with blocks of 3 query rows (a
    /// ragged last block), and finite differences on the fused op itself.
    #[test]
    fn fused_heads_last_matches_plain_and_finite_differences() -> Result<()> {
        let (b, heads, n, m, d) = (2, 3, 10, 7, 4);
        let c = heads * d;
        let q0 = rand((b, n, c, 1), 21).squeeze(3)?;
        let k0 = rand((b, m, c, 1), 22).squeeze(3)?;
        let v0 = rand((b, m, c, 1), 23).squeeze(3)?;
        let r = rand((b, n, c, 1), 24).squeeze(3)?;
        let scale = 0.41;
        let fused = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
            let op = FusedAttention {
                geom: AttnGeom {
                    b,
                    heads,
                    n,
                    m,
                    d,
                    scale,
                    rows: 3,
                },
                lse: std::sync::Mutex::new(None),
            };
            q.apply_op3(k, v, op)
        };
        let plain = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
            let split = |x: &Tensor| -> Result<Tensor> {
                let (b, n, _) = x.dims3()?;
                x.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous()
            };
            attention_plain(&split(q)?, &split(k)?, &split(v)?, scale)?
                .transpose(1, 2)?
                .reshape((b, n, c))
        };
        type F<'a> = &'a dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;
        let grads = |f: F| -> Result<(Tensor, Vec<Tensor>)> {
            let (q, k, v) = (
                Var::from_tensor(&q0)?,
                Var::from_tensor(&k0)?,
                Var::from_tensor(&v0)?,
            );
            let y = f(q.as_tensor(), k.as_tensor(), v.as_tensor())?;
            let store = (&y * &r)?.sum_all()?.backward()?;
            let g = [q, k, v]
                .iter()
                .map(|x| store.get(x.as_tensor()).expect("gradient").clone())
                .collect();
            Ok((y, g))
        };
        let (y1, g1) = grads(&fused)?;
        let (y2, g2) = grads(&plain)?;
        assert!(max_diff(&y1, &y2) < 1e-12, "values {}", max_diff(&y1, &y2));
        for (name, (a, b)) in ["q", "k", "v"].iter().zip(g1.iter().zip(&g2)) {
            let e = max_diff(a, b);
            assert!(e < 1e-11, "gradient of {name} differs by {e}");
        }
        // finite differences on a few entries of each input
        let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<f64> {
            (fused(q, k, v)? * &r)?.sum_all()?.to_scalar::<f64>()
        };
        let eps = 1e-6;
        for (which, (x0, g)) in [&q0, &k0, &v0].iter().zip(&g1).enumerate() {
            let xv = x0.flatten_all()?.to_vec1::<f64>()?;
            let gv = g.flatten_all()?.to_vec1::<f64>()?;
            for i in (0..xv.len()).step_by(7) {
                let at = |delta: f64| -> Result<f64> {
                    let mut x = xv.clone();
                    x[i] += delta;
                    let t = Tensor::from_vec(x, x0.shape(), &Device::Cpu)?;
                    match which {
                        0 => loss(&t, &k0, &v0),
                        1 => loss(&q0, &t, &v0),
                        _ => loss(&q0, &k0, &t),
                    }
                };
                let fd = (at(eps)? - at(-eps)?) / (2.0 * eps);
                assert!(
                    (fd - gv[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "input {which} element {i}: analytic {} vs finite difference {fd}",
                    gv[i]
                );
            }
        }
        // f32 through the public entry point, against the plain composition
        let (q32, k32, v32) = (
            q0.to_dtype(DType::F32)?,
            k0.to_dtype(DType::F32)?,
            v0.to_dtype(DType::F32)?,
        );
        let y32 = attention_heads_last(&q32, &k32, &v32, heads, scale)?;
        let e = max_diff(&y32.to_dtype(DType::F64)?, &y2);
        assert!(e < 1e-5, "f32 differs by {e}");
        Ok(())
    }

    /// Values and gradients of the blocked path equal the plain composition's, with blocks
    /// forced small (3 rows, a last block of 1) so several blocks and a ragged end run.
    #[test]
    fn blocked_matches_plain_in_value_and_gradient() -> Result<()> {
        let (b, h, n, m, d) = (2, 3, 10, 7, 4);
        let q0 = rand((b, h, n, d), 1);
        let k0 = rand((b, h, m, d), 2);
        let v0 = rand((b, h, m, d), 3);
        let r = rand((b, h, n, d), 4);
        let scale = 0.37;
        let grads = |blocked: bool| -> Result<(Tensor, Vec<Tensor>)> {
            let (q, k, v) = (
                Var::from_tensor(&q0)?,
                Var::from_tensor(&k0)?,
                Var::from_tensor(&v0)?,
            );
            let y = if blocked {
                let (out, lse) = blocked_forward(&q0, &k0, &v0, scale, 3)?;
                q.as_tensor().apply_op3(
                    k.as_tensor(),
                    v.as_tensor(),
                    BlockedAttention {
                        out: std::sync::Mutex::new(Some(out)),
                        lse,
                        scale,
                        rows: 3,
                    },
                )?
            } else {
                attention_plain(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale)?
            };
            let store = (&y * &r)?.sum_all()?.backward()?;
            let g = [q, k, v]
                .iter()
                .map(|x| store.get(x.as_tensor()).expect("gradient").clone())
                .collect();
            Ok((y, g))
        };
        let (y1, g1) = grads(true)?;
        let (y2, g2) = grads(false)?;
        assert!(max_diff(&y1, &y2) < 1e-12, "values {}", max_diff(&y1, &y2));
        for (name, (a, b)) in ["q", "k", "v"].iter().zip(g1.iter().zip(&g2)) {
            let e = max_diff(a, b);
            assert!(e < 1e-11, "gradient of {name} differs by {e}");
        }
        Ok(())
    }

    /// Finite differences on the blocked op itself (not only agreement with the plain one).
    #[test]
    fn blocked_gradient_matches_finite_differences() -> Result<()> {
        let (b, h, n, m, d) = (1, 2, 5, 4, 3);
        let q0 = rand((b, h, n, d), 11);
        let k0 = rand((b, h, m, d), 12);
        let v0 = rand((b, h, m, d), 13);
        let r = rand((b, h, n, d), 14);
        let scale = 0.5;
        let f = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
            let (out, lse) = blocked_forward(&q.detach(), &k.detach(), &v.detach(), scale, 2)?;
            let y = q.apply_op3(
                k,
                v,
                BlockedAttention {
                    out: std::sync::Mutex::new(Some(out)),
                    lse,
                    scale,
                    rows: 2,
                },
            )?;
            (y * &r)?.sum_all()
        };
        let (q, k, v) = (
            Var::from_tensor(&q0)?,
            Var::from_tensor(&k0)?,
            Var::from_tensor(&v0)?,
        );
        let store = f(q.as_tensor(), k.as_tensor(), v.as_tensor())?.backward()?;
        let eps = 1e-6;
        for (which, var) in [&q, &k, &v].into_iter().enumerate() {
            let g = store
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f64>()?;
            let x0 = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
            for i in 0..x0.len() {
                let eval = |delta: f64| -> Result<f64> {
                    let mut x = x0.clone();
                    x[i] += delta;
                    let t = Tensor::from_vec(x, var.as_tensor().shape(), &Device::Cpu)?;
                    let args = match which {
                        0 => (t, k0.clone(), v0.clone()),
                        1 => (q0.clone(), t, v0.clone()),
                        _ => (q0.clone(), k0.clone(), t),
                    };
                    f(&args.0, &args.1, &args.2)?.to_scalar::<f64>()
                };
                let fd = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "arg {which} element {i}: analytic {} vs finite difference {fd}",
                    g[i]
                );
            }
        }
        Ok(())
    }

    /// The public entry point switches to blocks above the size limit and gives the plain
    /// composition's values there too (f32, the training dtype).
    #[test]
    fn large_attention_takes_the_blocked_path_with_the_same_values() -> Result<()> {
        let (b, h, n, m, d) = (1, 1, 2048, 2560, 4);
        assert!(
            rows_per_block(b * h, m) < n,
            "the size must exceed one block"
        );
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (b, h, n, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, h, m, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, h, m, d), &dev)?;
        let a = attention(&q, &k, &v, 0.5)?;
        let p = attention_plain(&q, &k, &v, 0.5)?;
        let e = (a - p)?
            .abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        assert!(e < 1e-5, "max diff {e}");
        Ok(())
    }
}
