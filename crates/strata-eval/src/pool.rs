//! 3×3 max and average pooling for the feature networks, on the CPU in one parallel pass.
//!
//! Why our own: candle 0.11's CPU pooling is a single-threaded loop per output value, and the
//! TensorFlow-style average pool that excludes the padding (and a "same" max pool) needed two
//! padding copies, the pool, and two multiplications around it. Inception-v3 pools its
//! 35²–147² maps with 64–2 048 channels eleven times per image. Other devices and dtypes use
//! candle's ops.

use candle_core::{DType, Result, Storage, Tensor};
use rayon::prelude::*;

/// Which reduction a window takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The largest value of the window's real pixels (padding never wins: PyTorch's −∞).
    Max,
    /// The mean of the window's real pixels: padding is not counted (TensorFlow's
    /// behaviour, `count_include_pad=False`).
    AvgExcludePad,
}

/// Output side of a 3×3 window at `stride` with `pad` on both sides.
fn out_len(n: usize, stride: usize, pad: usize) -> usize {
    (n + 2 * pad).saturating_sub(3) / stride + 1
}

/// 3×3 pooling of an (n, c, h, w) map with the given stride and symmetric padding.
pub fn pool3x3(x: &Tensor, stride: usize, pad: usize, kind: Pool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h + 2 * pad < 3 || w + 2 * pad < 3 || stride == 0 || pad > 1 {
        candle_core::bail!("3×3 pool: {h}×{w} map with padding {pad}, stride {stride}")
    }
    let (oh, ow) = (out_len(h, stride, pad), out_len(w, stride, pad));
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let (st, l) = x.storage_and_layout();
        if let Storage::Cpu(cpu) = &*st {
            let v = cpu.as_slice::<f32>()?;
            let src = &v[l.start_offset()..l.start_offset() + n * c * h * w];
            let out = pool_planes(src, (h, w), (oh, ow), stride, pad, kind);
            return Tensor::from_vec(out, (n, c, oh, ow), x.device());
        }
    }
    pool_candle(x, stride, pad, kind)
}

/// The pooling in candle ops (other devices and dtypes; the reference in tests).
fn pool_candle(x: &Tensor, stride: usize, pad: usize, kind: Pool) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x32 = x.to_dtype(DType::F32)?;
    let padded = if pad > 0 {
        let fill = match kind {
            Pool::Max => f32::NEG_INFINITY,
            Pool::AvgExcludePad => 0.0,
        };
        let (n, c) = (x32.dim(0)?, x32.dim(1)?);
        let row = Tensor::full(fill, (n, c, pad, w), x.device())?;
        let rows = Tensor::cat(&[&row, &x32, &row], 2)?;
        let col = Tensor::full(fill, (n, c, h + 2 * pad, pad), x.device())?;
        Tensor::cat(&[&col, &rows, &col], 3)?
    } else {
        x32
    };
    let y = match kind {
        Pool::Max => padded.max_pool2d_with_stride((3, 3), (stride, stride))?,
        Pool::AvgExcludePad => {
            let sum = (padded.avg_pool2d_with_stride((3, 3), (stride, stride))? * 9.0)?;
            // the real pixels of each window: the same pool over a map of ones
            let ones = Tensor::ones((1, 1, h, w), DType::F32, x.device())?
                .pad_with_zeros(2, pad, pad)?
                .pad_with_zeros(3, pad, pad)?;
            let count = (ones.avg_pool2d_with_stride((3, 3), (stride, stride))? * 9.0)?;
            sum.broadcast_div(&count)?
        }
    };
    y.to_dtype(x.dtype())
}

/// The input rows (or columns) of output row `o`'s window that lie inside the map.
fn window(o: usize, n: usize, stride: usize, pad: usize) -> std::ops::Range<usize> {
    let start = (o * stride).saturating_sub(pad);
    let end = (o * stride + 3 - pad).min(n);
    start..end
}

fn pool_planes(
    src: &[f32],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    stride: usize,
    pad: usize,
    kind: Pool,
) -> Vec<f32> {
    let mut out = vec![0f32; src.len() / (h * w) * oh * ow];
    let cols: Vec<std::ops::Range<usize>> = (0..ow).map(|o| window(o, w, stride, pad)).collect();
    out.par_chunks_mut(oh * ow)
        .zip(src.par_chunks(h * w))
        .for_each(|(o, plane)| {
            for oy in 0..oh {
                let rows = window(oy, h, stride, pad);
                let orow = &mut o[oy * ow..(oy + 1) * ow];
                for (ov, cr) in orow.iter_mut().zip(&cols) {
                    *ov = match kind {
                        Pool::Max => {
                            let mut m = f32::NEG_INFINITY;
                            for y in rows.clone() {
                                for &v in &plane[y * w + cr.start..y * w + cr.end] {
                                    m = m.max(v);
                                }
                            }
                            m
                        }
                        Pool::AvgExcludePad => {
                            let mut s = 0f32;
                            for y in rows.clone() {
                                for &v in &plane[y * w + cr.start..y * w + cr.end] {
                                    s += v;
                                }
                            }
                            s / (rows.len() * cr.len()) as f32
                        }
                    };
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The one-pass pools against candle's pooling on explicitly padded maps: both strides
    /// Inception uses, with and without padding, odd sides, negative values (so that a
    /// padding that wins a max, or is counted in a mean, shows).
    #[test]
    fn pools_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        for (h, w) in [(3usize, 3usize), (8, 5), (35, 35), (17, 9)] {
            let x = (Tensor::rand(0f32, 1.0, (2, 3, h, w), &dev)? - 0.8)?;
            for (stride, pad) in [(1usize, 1usize), (2, 0), (1, 0), (2, 1)] {
                for kind in [Pool::Max, Pool::AvgExcludePad] {
                    let got = pool3x3(&x, stride, pad, kind)?;
                    let want = pool_candle(&x, stride, pad, kind)?;
                    assert_eq!(got.dims(), want.dims(), "{h}×{w} s{stride} p{pad} {kind:?}");
                    let d = (got - want)?
                        .abs()?
                        .flatten_all()?
                        .max(0)?
                        .to_scalar::<f32>()?;
                    assert!(d < 1e-6, "{h}×{w} s{stride} p{pad} {kind:?}: {d}");
                }
            }
        }
        Ok(())
    }
}
