//! CPU kernels for the hot paths of the UNet and the VAE: 2-D convolution (forward and the
//! input gradient), attention, and group normalisation fused with the SiLU that follows it
//! (forward and backward), in f32 and f64 on contiguous NCHW data. On CPUs with AVX-512, f32
//! convolutions with rows at least 16 wide go to `direct_conv` and attention to
//! `attention_avx512`; what follows describes the portable paths they fall back to.
//!
//! Why our own instead of candle's: candle 0.11's CPU `conv2d` reorders the whole kernel into
//! (out, kh, kw, in) order and the input into NHWC at every call, single-threaded (for the
//! SD-1.5 UNet that is ~1.6 GB of strided copies per forward), and its gradient goes through
//! a flipped, transposed kernel copy and `conv_transpose2d`. Here the (out, in, kh, kw) kernel
//! is used as it is stored, as the (out, in·kh·kw) left operand of one GEMM per image and
//! block of output rows against an im2col buffer built plane by plane (contiguous row copies);
//! the input gradient is the transposed GEMM followed by col2im. Group norm in candle is a
//! composition of about ten elementwise ops and reductions (each a full pass and an
//! allocation, each with its own backward); here it is two passes forward (statistics, then
//! the normalised, scaled, shifted and optionally SiLU-activated output) and three backward.
//! The transformer blocks' GEGLU (`a · gelu(gate)`, erf GELU) is one vectorised pass forward
//! and one backward, where candle's composition took five passes and about a dozen.
//! The matrix products themselves are the maintained `gemm` crate's (what candle uses).
//!
//! Checked against candle's ops (values and gradients, f64 and f32) and by finite differences
//! in `ops`' tests.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

mod attention_avx512;
mod direct_conv;

/// Whether this CPU runs AVX-512 (the direct convolution's and the attention kernel's
/// condition).
fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Data and comparisons for the tests of the AVX-512 kernels against the portable ones.
#[cfg(test)]
mod test_data {
    /// `n` values in [−1, 1) from a seeded linear congruential generator.
    pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005) ^ 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every element of `a` within 2e-5 of `b`'s, relative to the largest magnitude in `b`
    /// (at least `floor`: a value that is zero in exact arithmetic comes out as rounding
    /// noise from either kernel).
    pub fn assert_close(a: &[f32], b: &[f32], floor: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(floor);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 2e-5 * scale,
                "{what}: element {i}: {x} vs {y}"
            );
        }
    }
}

/// The element types the kernels run on.
pub trait Elem:
    Copy
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + PartialOrd
{
    const ZERO: Self;
    const ONE: Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn exp(self) -> Self;
    /// `out = act(x·a + sh)` elementwise, `act` = SiLU or the identity.
    fn affine_act(out: &mut [Self], x: &[Self], a: Self, sh: Self, silu: bool) {
        for (o, &v) in out.iter_mut().zip(x) {
            let z = v * a + sh;
            *o = if silu { z * sigmoid(z) } else { z };
        }
    }
    /// `out = w · act'(x·a + sh) · g` elementwise (`act` = SiLU or the identity): the
    /// gradient reaching the normalised value.
    #[allow(clippy::too_many_arguments)]
    fn act_grad(out: &mut [Self], x: &[Self], g: &[Self], a: Self, sh: Self, w: Self, silu: bool) {
        for ((o, &xv), &gv) in out.iter_mut().zip(x).zip(g) {
            let dz = if silu {
                let z = xv * a + sh;
                let s = sigmoid(z);
                gv * s * (Self::ONE + z * (Self::ONE - s))
            } else {
                gv
            };
            *o = dz * w;
        }
    }
    /// The direct convolution where it serves this type and shape (f32 on AVX-512, strides 1
    /// and 2, see `direct_conv::applicable`), else `None` (then im2col + GEMM).
    fn direct_conv2d(
        _x: &[Self],
        _k: &[Self],
        _bias: Option<&[Self]>,
        _g: &ConvGeom,
    ) -> Option<Vec<Self>> {
        None
    }
    /// The direct convolution's input gradient, as [`Elem::direct_conv2d`].
    fn direct_conv2d_input_grad(_grad: &[Self], _k: &[Self], _g: &ConvGeom) -> Option<Vec<Self>> {
        None
    }
    /// [`attention`] by the AVX-512 kernel where it serves this type, else `None`.
    fn fast_attention(
        _q: &[Self],
        _k: &[Self],
        _v: &[Self],
        _g: &AttnGeom,
    ) -> Option<AttnOut<Self>> {
        None
    }
    /// [`attention_grad`] by the AVX-512 kernel where it serves this type, else `None`.
    #[allow(clippy::too_many_arguments)]
    fn fast_attention_grad(
        _q: &[Self],
        _k: &[Self],
        _v: &[Self],
        _out: &[Self],
        _lse: &[Self],
        _dout: &[Self],
        _g: &AttnGeom,
    ) -> Option<AttnGrads<Self>> {
        None
    }
    /// `row ← exp(row − shift)`, returning Σ row.
    fn exp_shift_sum(row: &mut [Self], shift: Self) -> f64 {
        let mut s = 0f64;
        for v in row.iter_mut() {
            *v = (*v - shift).exp();
            s += v.to_f64();
        }
        s
    }
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn affine_act(out: &mut [Self], x: &[Self], a: Self, sh: Self, silu: bool) {
        simd::affine_act(out, x, a, sh, silu)
    }
    fn exp_shift_sum(row: &mut [Self], shift: Self) -> f64 {
        simd::exp_shift_sum(row, shift) as f64
    }
    fn act_grad(out: &mut [Self], x: &[Self], g: &[Self], a: Self, sh: Self, w: Self, silu: bool) {
        simd::act_grad(out, x, g, a, sh, w, silu)
    }
    fn direct_conv2d(
        x: &[Self],
        k: &[Self],
        bias: Option<&[Self]>,
        g: &ConvGeom,
    ) -> Option<Vec<Self>> {
        direct_conv::applicable(g).then(|| direct_conv::conv2d(x, k, bias, g))
    }
    fn direct_conv2d_input_grad(grad: &[Self], k: &[Self], g: &ConvGeom) -> Option<Vec<Self>> {
        direct_conv::applicable_grad(g).then(|| direct_conv::conv2d_input_grad(grad, k, g))
    }
    fn fast_attention(q: &[Self], k: &[Self], v: &[Self], g: &AttnGeom) -> Option<AttnOut<Self>> {
        has_avx512f().then(|| attention_avx512::attention(q, k, v, g))
    }
    fn fast_attention_grad(
        q: &[Self],
        k: &[Self],
        v: &[Self],
        out: &[Self],
        lse: &[Self],
        dout: &[Self],
        g: &AttnGeom,
    ) -> Option<AttnGrads<Self>> {
        has_avx512f().then(|| attention_avx512::attention_grad(q, k, v, out, lse, dout, g))
    }
}

/// Attention's output and per-row log-sum-exp.
pub type AttnOut<T> = (Vec<T>, Vec<T>);
/// Attention's input gradients (dq, dk, dv).
pub type AttnGrads<T> = (Vec<T>, Vec<T>, Vec<T>);

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Shape of one convolution: input (b, cin, h, w), kernel (cout, cin, kh, kw), output
/// (b, cout, oh, ow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub b: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub padding: usize,
    pub stride: usize,
}

impl ConvGeom {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.padding - self.kh) / self.stride + 1,
            (self.w + 2 * self.padding - self.kw) / self.stride + 1,
        )
    }

    /// Rows of the im2col matrix (in · kh · kw).
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// A 1×1, stride-1, unpadded convolution: the input plane is the im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// Output rows per block: one im2col block near 4 M elements when a GEMM is split over
    /// the threads (wide enough to share), near 256 K (1 MB in f32, within a core's L2) when
    /// each thread runs its own images.
    fn rows_per_block(&self) -> usize {
        let (oh, ow) = self.out_hw();
        let target = if by_image(self) {
            1usize << 18
        } else {
            1 << 22
        };
        (target / (self.k() * ow).max(1)).clamp(1, oh)
    }
}

/// Fills `col` (k × rows·ow) with the patches of output rows `r0..r0 + rows` of image `x`
/// (cin, h, w): row `(ci·kh + i)·kw + j`, column `r·ow + c` holds
/// `x[ci, (r0 + r)·s + i − p, c·s + j − p]` (0 outside).
fn im2col<T: Elem>(x: &[T], g: &ConvGeom, r0: usize, rows: usize, col: &mut [T], par: bool) {
    let (_, ow) = g.out_hw();
    let npix = rows * ow;
    let plane = g.h * g.w;
    let per_ci = g.kh * g.kw * npix;
    let fill = |(ci, dst): (usize, &mut [T])| {
        let src = &x[ci * plane..(ci + 1) * plane];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let d = &mut dst[(i * g.kw + j) * npix..(i * g.kw + j + 1) * npix];
                for r in 0..rows {
                    let drow = &mut d[r * ow..(r + 1) * ow];
                    let y = ((r0 + r) * g.stride + i) as isize - g.padding as isize;
                    if y < 0 || y >= g.h as isize {
                        drow.fill(T::ZERO);
                        continue;
                    }
                    let srow = &src[y as usize * g.w..(y as usize + 1) * g.w];
                    // output columns whose input column j + c·s − p lies inside
                    let off = j as isize - g.padding as isize;
                    for (c, v) in drow.iter_mut().enumerate() {
                        let xx = c as isize * g.stride as isize + off;
                        *v = if xx >= 0 && xx < g.w as isize {
                            srow[xx as usize]
                        } else {
                            T::ZERO
                        };
                    }
                }
            }
        }
    };
    let col = &mut col[..g.cin * per_ci];
    if par {
        col.par_chunks_mut(per_ci).enumerate().for_each(fill);
    } else {
        col.chunks_mut(per_ci).enumerate().for_each(fill);
    }
}

/// Adds the patches in `col` (as [`im2col`] lays them out) back into image `dx` (cin, h, w).
fn col2im<T: Elem>(col: &[T], g: &ConvGeom, r0: usize, rows: usize, dx: &mut [T], par: bool) {
    let (_, ow) = g.out_hw();
    let npix = rows * ow;
    let plane = g.h * g.w;
    let per_ci = g.kh * g.kw * npix;
    let add = |(ci, dst): (usize, &mut [T])| {
        let src = &col[ci * per_ci..(ci + 1) * per_ci];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let s = &src[(i * g.kw + j) * npix..(i * g.kw + j + 1) * npix];
                for r in 0..rows {
                    let y = ((r0 + r) * g.stride + i) as isize - g.padding as isize;
                    if y < 0 || y >= g.h as isize {
                        continue;
                    }
                    let drow = &mut dst[y as usize * g.w..(y as usize + 1) * g.w];
                    let srow = &s[r * ow..(r + 1) * ow];
                    let off = j as isize - g.padding as isize;
                    for (c, &v) in srow.iter().enumerate() {
                        let xx = c as isize * g.stride as isize + off;
                        if xx >= 0 && xx < g.w as isize {
                            drow[xx as usize] += v;
                        }
                    }
                }
            }
        }
    };
    let dx = &mut dx[..g.cin * plane];
    if par {
        dx.par_chunks_mut(plane).enumerate().for_each(add);
    } else {
        dx.chunks_mut(plane).enumerate().for_each(add);
    }
}

/// `conv2d(x, kernel) + bias` for contiguous `x` (b, cin, h, w) and `kernel`
/// (cout, cin, kh, kw); returns the contiguous (b, cout, oh, ow) output. Direct where
/// [`Elem::direct_conv2d`] serves, else im2col + GEMM.
pub fn conv2d<T: Elem>(x: &[T], kernel: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    match T::direct_conv2d(x, kernel, bias, g) {
        Some(out) => out,
        None => conv2d_im2col(x, kernel, bias, g),
    }
}

/// [`conv2d`] by im2col + GEMM: one GEMM per image and block of output rows.
fn conv2d_im2col<T: Elem>(x: &[T], kernel: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let (oh, ow) = g.out_hw();
    let (k, opix) = (g.k(), oh * ow);
    let mut out = vec![T::ZERO; g.b * g.cout * opix];
    if let Some(bias) = bias {
        out.par_chunks_mut(opix)
            .enumerate()
            .for_each(|(i, o)| o.fill(bias[i % g.cout]));
    }
    let rows_blk = g.rows_per_block();
    let col_len = if g.pointwise() { 0 } else { k * rows_blk * ow };
    // one image: out (cout × opix) (+)= kernel (cout × k) · im2col(x), by blocks of rows
    let image = |xb: &[T], ob: &mut [T], col: &mut [T], par: Parallelism| {
        let mut r0 = 0;
        while r0 < oh {
            let rows = rows_blk.min(oh - r0);
            let npix = rows * ow;
            let rhs: &[T] = if g.pointwise() {
                &xb[r0 * ow..]
            } else {
                im2col(xb, g, r0, rows, col, !matches!(par, Parallelism::None));
                col
            };
            let rhs_rs = if g.pointwise() { opix } else { npix } as isize;
            let dst = unsafe { ob.as_mut_ptr().add(r0 * ow) };
            if g.cout < TRANSPOSE_BELOW {
                // the same product transposed, outᵀ (npix × cout) = rhsᵀ (npix × k) ·
                // kernelᵀ (k × cout), written through strides into the same places: with
                // few output channels the GEMM's register tiles then run along the pixels
                unsafe {
                    gemm(
                        npix,
                        g.cout,
                        k,
                        dst,
                        opix as isize,
                        1,
                        bias.is_some(),
                        rhs.as_ptr(),
                        rhs_rs,
                        1,
                        kernel.as_ptr(),
                        k as isize,
                        1,
                        T::ONE,
                        T::ONE,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            } else {
                // out[:, r0·ow ..] (cout × npix, row stride opix) (+)= kernel (cout × k) · rhs (k × npix)
                unsafe {
                    gemm(
                        g.cout,
                        npix,
                        k,
                        dst,
                        1,
                        opix as isize,
                        bias.is_some(),
                        kernel.as_ptr(),
                        1,
                        k as isize,
                        rhs.as_ptr(),
                        1,
                        rhs_rs,
                        T::ONE,
                        T::ONE,
                        false,
                        false,
                        false,
                        par,
                    );
                }
            }
            r0 += rows;
        }
    };
    for_each_image(
        g,
        x,
        g.cin * g.h * g.w,
        &mut out,
        g.cout * opix,
        col_len,
        image,
    );
    out
}

/// Runs `image(src, dst, col, parallelism)` for every image of a batch: `src` and `dst`
/// split into images of `src_len` and `dst_len` elements, `col` an im2col buffer of
/// `col_len`. Small images go image by image over the threads (one buffer per thread, each
/// image's GEMMs on one thread, see [`by_image`]); otherwise one image at a time with its
/// GEMMs split over the threads.
fn for_each_image<T: Elem>(
    g: &ConvGeom,
    src: &[T],
    src_len: usize,
    dst: &mut [T],
    dst_len: usize,
    col_len: usize,
    image: impl Fn(&[T], &mut [T], &mut [T], Parallelism) + Sync,
) {
    if by_image(g) {
        dst.par_chunks_mut(dst_len)
            .zip(src.par_chunks(src_len))
            .for_each_init(
                || vec![T::ZERO; col_len],
                |col, (d, s)| image(s, d, col, Parallelism::None),
            );
    } else {
        let mut col = vec![T::ZERO; col_len];
        for (d, s) in dst.chunks_mut(dst_len).zip(src.chunks(src_len)) {
            image(s, d, &mut col, parallelism());
        }
    }
}

/// Convolutions with fewer output channels than this run their GEMM transposed.
const TRANSPOSE_BELOW: usize = 64;

/// Whether a batch is spread over the threads image by image (each image's GEMMs on one
/// thread) rather than each image's GEMM over the threads: when the images share out evenly
/// (or there are many) and an image is at most 512 MFLOP. Small images (the base model's VAE
/// and UNet, 16–96 channels) then run without the hand-offs a GEMM split across threads pays
/// per block; large ones (SD-1.5 at batch 1) keep every thread on one GEMM.
fn by_image(g: &ConvGeom) -> bool {
    let threads = candle_core::utils::get_num_threads();
    let (oh, ow) = g.out_hw();
    let flops = 2 * g.cout * g.k() * oh * ow;
    threads > 1
        && g.b >= threads
        && (g.b.is_multiple_of(threads) || g.b >= 4 * threads)
        && flops <= 512 << 20
}

/// The gradient of [`conv2d`] with respect to its input, given the output gradient `grad`
/// (b, cout, oh, ow), contiguous. Direct where [`Elem::direct_conv2d_input_grad`] serves,
/// else [`conv2d_input_grad_im2col`].
pub fn conv2d_input_grad<T: Elem>(grad: &[T], kernel: &[T], g: &ConvGeom) -> Vec<T> {
    match T::direct_conv2d_input_grad(grad, kernel, g) {
        Some(dx) => dx,
        None => conv2d_input_grad_im2col(grad, kernel, g),
    }
}

/// [`conv2d_input_grad`] as `kernelᵀ · grad` per image and block of rows, then col2im.
fn conv2d_input_grad_im2col<T: Elem>(grad: &[T], kernel: &[T], g: &ConvGeom) -> Vec<T> {
    let (oh, ow) = g.out_hw();
    let (k, opix, plane) = (g.k(), oh * ow, g.h * g.w);
    let mut dx = vec![T::ZERO; g.b * g.cin * plane];
    let rows_blk = g.rows_per_block();
    let col_len = if g.pointwise() { 0 } else { k * rows_blk * ow };
    let image = |gb: &[T], db: &mut [T], col: &mut [T], par: Parallelism| {
        let mut r0 = 0;
        while r0 < oh {
            let rows = rows_blk.min(oh - r0);
            let npix = rows * ow;
            let (dst, dst_rs): (*mut T, isize) = if g.pointwise() {
                (unsafe { db.as_mut_ptr().add(r0 * ow) }, plane as isize)
            } else {
                (col.as_mut_ptr(), npix as isize)
            };
            // dst (k × npix) = kernelᵀ (k × cout) · grad[:, r0·ow ..] (cout × npix)
            unsafe {
                gemm(
                    k,
                    npix,
                    g.cout,
                    dst,
                    1,
                    dst_rs,
                    false,
                    kernel.as_ptr(),
                    k as isize,
                    1,
                    gb.as_ptr().add(r0 * ow),
                    1,
                    opix as isize,
                    T::ZERO,
                    T::ONE,
                    false,
                    false,
                    false,
                    par,
                );
            }
            if !g.pointwise() {
                col2im(col, g, r0, rows, db, !matches!(par, Parallelism::None));
            }
            r0 += rows;
        }
    };
    for_each_image(
        g,
        grad,
        g.cout * opix,
        &mut dx,
        g.cin * plane,
        col_len,
        image,
    );
    dx
}

/// Shape of one group norm: (n, c, hw) with `groups` groups of `c / groups` channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormGeom {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
    pub eps: f64,
}

/// Mean and 1/√(var + eps) of one group's values (two passes, f64 accumulation per lane).
fn group_stats<T: Elem>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = sum(x, |v| v.to_f64()) / n;
    let var = sum(x, |v| {
        let d = v.to_f64() - mean;
        d * d
    }) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Σ f(x) with 8 independent accumulators (so the loop vectorises).
fn sum<T: Elem>(x: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += f(c[l]);
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += f(v);
    }
    s
}

fn sigmoid<T: Elem>(z: T) -> T {
    T::from_f64(1.0 / (1.0 + (-z.to_f64()).exp()))
}

/// `silu?(group_norm(x) · w + b)` of contiguous `x` (n, c, hw).
pub fn group_norm<T: Elem>(x: &[T], w: &[T], b: &[T], g: &NormGeom, silu: bool) -> Vec<T> {
    let cg = g.c / g.groups;
    let len = cg * g.hw;
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each(|(ng, (o, xg))| {
            let (mean, rstd) = group_stats(xg, g.eps);
            let c0 = (ng % g.groups) * cg;
            for ci in 0..cg {
                let a = rstd * w[c0 + ci].to_f64();
                let sh = b[c0 + ci].to_f64() - mean * a;
                let (a, sh) = (T::from_f64(a), T::from_f64(sh));
                let xs = &xg[ci * g.hw..(ci + 1) * g.hw];
                let os = &mut o[ci * g.hw..(ci + 1) * g.hw];
                T::affine_act(os, xs, a, sh, silu);
            }
        });
    out
}

/// The input gradient of [`group_norm`] (weight and bias frozen), given the output gradient.
pub fn group_norm_input_grad<T: Elem>(
    x: &[T],
    grad: &[T],
    w: &[T],
    b: &[T],
    g: &NormGeom,
    silu: bool,
) -> Vec<T> {
    let cg = g.c / g.groups;
    let len = cg * g.hw;
    let mut dx = vec![T::ZERO; x.len()];
    dx.par_chunks_mut(len)
        .zip(x.par_chunks(len).zip(grad.par_chunks(len)))
        .enumerate()
        .for_each(|(ng, (d, (xg, gg)))| {
            let (mean, rstd) = group_stats(xg, g.eps);
            let c0 = (ng % g.groups) * cg;
            // d holds dx̂ = dy · silu'(z) · w first, then dx
            let (mut s1, mut s2) = (0f64, 0f64);
            for ci in 0..cg {
                let wc = w[c0 + ci].to_f64();
                let a = T::from_f64(rstd * wc);
                let sh = T::from_f64(b[c0 + ci].to_f64() - mean * rstd * wc);
                let wt = T::from_f64(wc);
                let m = T::from_f64(mean);
                let r = T::from_f64(rstd);
                let xs = &xg[ci * g.hw..(ci + 1) * g.hw];
                let gs = &gg[ci * g.hw..(ci + 1) * g.hw];
                let ds = &mut d[ci * g.hw..(ci + 1) * g.hw];
                T::act_grad(ds, xs, gs, a, sh, wt, silu);
                s1 += sum(ds, |v| v.to_f64());
                let xh: f64 = ds
                    .iter()
                    .zip(xs)
                    .map(|(&dv, &xv)| (dv * ((xv - m) * r)).to_f64())
                    .sum();
                s2 += xh;
            }
            let n = len.max(1) as f64;
            let (m1, m2) = (s1 / n, s2 / n);
            let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
            let (m1t, m2t) = (T::from_f64(m1), T::from_f64(m2));
            for (dv, &xv) in d.iter_mut().zip(xg.iter()) {
                let xh = (xv - m) * r;
                *dv = r * (*dv - m1t - xh * m2t);
            }
        });
    dx
}

/// f32 loops compiled for AVX-512 / AVX2+FMA (chosen at run time) so that they vectorise: the
/// build targets baseline x86-64 (SSE2), and `f32::exp` is a scalar libm call. The exponential
/// is Cephes' `expf` polynomial (relative error about 2e-7 on the clamped range; results
/// below e⁻⁸⁷ flush to 0, as softmax and SiLU tolerate).
mod simd {
    const LOG2E: f32 = std::f32::consts::LOG2_E;

    #[inline(always)]
    fn exp(x: f32) -> f32 {
        let x = x.clamp(-87.0, 88.0);
        let n = (x * LOG2E + 0.5).floor();
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let r2 = r * r;
        let p = (((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 0.5)
            * r2
            + r
            + 1.0;
        // 2ⁿ from n's bits: adding 1.5·2²³ puts the integer n (|n| ≤ 127) in the low mantissa
        // bits, so that no float-to-int cast is needed (Rust's saturating `as` cast stops
        // the loop from vectorising: each lane went through a scalar conversion)
        let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4b40_0000);
        p * f32::from_bits(n_bits.wrapping_add(127) << 23)
    }

    #[inline(always)]
    fn affine_act_generic(out: &mut [f32], x: &[f32], a: f32, sh: f32, silu: bool) {
        if silu {
            for (o, &v) in out.iter_mut().zip(x) {
                let z = v * a + sh;
                *o = z / (1.0 + exp(-z));
            }
        } else {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * a + sh;
            }
        }
    }

    #[inline(always)]
    fn exp_shift_sum_generic(row: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for l in 0..16 {
                c[l] = exp(c[l] - shift);
                acc[l] += c[l];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp(*v - shift);
            s += *v;
        }
        s
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn act_grad_generic(
        out: &mut [f32],
        x: &[f32],
        g: &[f32],
        a: f32,
        sh: f32,
        w: f32,
        silu: bool,
    ) {
        if silu {
            for ((o, &xv), &gv) in out.iter_mut().zip(x).zip(g) {
                let z = xv * a + sh;
                let s = 1.0 / (1.0 + exp(-z));
                *o = gv * s * (1.0 + z * (1.0 - s)) * w;
            }
        } else {
            for (o, &gv) in out.iter_mut().zip(g) {
                *o = gv * w;
            }
        }
    }

    /// The complementary error function for z ≥ 0 by the Chebyshev fit of Numerical Recipes
    /// (`erfcc`): erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2), relative error below 1.2e-7
    /// for every z, so that GELU keeps its relative accuracy in the far negative tail too.
    #[inline(always)]
    fn erfc_nonneg(z: f32) -> f32 {
        const C: [f32; 10] = [
            -1.265_512_2,
            1.000_023_7,
            0.374_091_96,
            0.096_784_18,
            -0.186_288_06,
            0.278_868_07,
            -1.135_204,
            1.488_516,
            -0.822_152_2,
            0.170_872_77,
        ];
        let t = 1.0 / (1.0 + 0.5 * z);
        let mut p = C[9];
        for &c in C[..9].iter().rev() {
            p = p * t + c;
        }
        t * exp(p - z * z)
    }

    /// Φ(g), the standard normal distribution function (GELU is g·Φ(g)).
    #[inline(always)]
    fn normal_cdf(g: f32) -> f32 {
        // ½·erfc(|g|/√2): the tail beyond |g|
        let q = 0.5 * erfc_nonneg(g.abs() * std::f32::consts::FRAC_1_SQRT_2);
        if g >= 0.0 {
            1.0 - q
        } else {
            q
        }
    }

    /// φ(g), the standard normal density (GELU's derivative is Φ(g) + g·φ(g)).
    #[inline(always)]
    fn normal_pdf(g: f32) -> f32 {
        // 1/√(2π)
        0.398_942_3 * exp(-0.5 * g * g)
    }

    /// GEGLU over rows of `2·inner` values `[a | gate]`: `out = a · gelu(gate)` (erf GELU).
    #[inline(always)]
    fn geglu_generic(out: &mut [f32], h: &[f32], inner: usize) {
        for (o, row) in out.chunks_exact_mut(inner).zip(h.chunks_exact(2 * inner)) {
            let (a, gate) = row.split_at(inner);
            for ((o, &a), &g) in o.iter_mut().zip(a).zip(gate) {
                *o = a * g * normal_cdf(g);
            }
        }
    }

    /// The gradient of [`geglu_generic`]: `dh = [d·gelu(gate) | d·a·gelu'(gate)]`.
    #[inline(always)]
    fn geglu_grad_generic(dh: &mut [f32], h: &[f32], d: &[f32], inner: usize) {
        let rows = dh
            .chunks_exact_mut(2 * inner)
            .zip(h.chunks_exact(2 * inner));
        for ((dh, row), d) in rows.zip(d.chunks_exact(inner)) {
            let (a, gate) = row.split_at(inner);
            let (da, dg) = dh.split_at_mut(inner);
            for i in 0..inner {
                let (g, dv) = (gate[i], d[i]);
                let (cdf, pdf) = (normal_cdf(g), normal_pdf(g));
                da[i] = dv * g * cdf;
                dg[i] = dv * a[i] * (cdf + g * pdf);
            }
        }
    }

    macro_rules! dispatch {
        ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
            pub fn $name($($arg: $ty),*) -> $ret {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn avx512($($arg: $ty),*) -> $ret {
                        $generic($($arg),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2($($arg: $ty),*) -> $ret {
                        $generic($($arg),*)
                    }
                    if is_x86_feature_detected!("avx512f") {
                        return unsafe { avx512($($arg),*) };
                    }
                    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                        return unsafe { avx2($($arg),*) };
                    }
                }
                $generic($($arg),*)
            }
        };
    }

    dispatch!(affine_act, affine_act_generic, (out: &mut [f32], x: &[f32], a: f32, sh: f32, silu: bool) -> ());
    dispatch!(exp_shift_sum, exp_shift_sum_generic, (row: &mut [f32], shift: f32) -> f32);
    dispatch!(act_grad, act_grad_generic, (out: &mut [f32], x: &[f32], g: &[f32], a: f32, sh: f32, w: f32, silu: bool) -> ());
    dispatch!(geglu, geglu_generic, (out: &mut [f32], h: &[f32], inner: usize) -> ());
    dispatch!(geglu_grad, geglu_grad_generic, (dh: &mut [f32], h: &[f32], d: &[f32], inner: usize) -> ());

    #[cfg(test)]
    mod tests {
        #[test]
        fn exp_matches_libm() {
            let mut worst = 0f32;
            for i in -8700..=8790 {
                let x = i as f32 * 0.01 + 0.003;
                let (a, b) = (super::exp(x), x.exp());
                worst = worst.max(((a - b) / b).abs());
            }
            assert!(worst < 5e-7, "relative error {worst}");
            let mut row: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
            let want: f32 = row.iter().map(|v| (v - 2.0).exp()).sum();
            let got = super::exp_shift_sum(&mut row, 2.0);
            assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
            assert!((row[3] - (3.0f32 * 0.3 - 7.0).exp()).abs() < 1e-6);
        }
    }
}

/// Shape of one attention: queries (b, n, h·d), keys and values (b, m, h·d), heads side by
/// side in the last dimension (the layout of the q/k/v projections' output, so heads need
/// no split or merge copies).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnGeom {
    pub b: usize,
    pub heads: usize,
    pub n: usize,
    pub m: usize,
    pub d: usize,
    pub scale: f64,
    /// Query rows per block ([`AttnGeom::default_rows`]).
    pub rows: usize,
}

impl AttnGeom {
    fn c(&self) -> usize {
        self.heads * self.d
    }

    /// Query rows per block so that one block's scores stay near 64 K elements (in cache).
    pub fn default_rows(n: usize, m: usize) -> usize {
        ((1usize << 16) / m.max(1)).clamp(1, n.max(1))
    }
}

/// A pointer that may cross to rayon's threads: every task writes a disjoint part.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// `C (mr × nc, row stride dst_rs) (+)= beta · A · B` with explicit strides, one thread.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm1<T: Elem>(
    mr: usize,
    nc: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    a: *const T,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    b_rs: usize,
    b_cs: usize,
    beta: T,
) {
    gemm(
        mr,
        nc,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        T::ONE,
        beta,
        false,
        false,
        false,
        Parallelism::None,
    )
}

/// Softmax attention `softmax(s·q·kᵀ)·v` per image and head: returns the output (b, n, h·d)
/// and each query row's log-sum-exp (b, h, n) for the backward pass. Scores are formed one
/// block of query rows at a time and never kept.
pub fn attention<T: Elem>(q: &[T], k: &[T], v: &[T], g: &AttnGeom) -> AttnOut<T> {
    if let Some(r) = T::fast_attention(q, k, v, g) {
        return r;
    }
    attention_generic(q, k, v, g)
}

/// [`attention`] through the `gemm` crate, for any element type.
fn attention_generic<T: Elem>(q: &[T], k: &[T], v: &[T], g: &AttnGeom) -> AttnOut<T> {
    let c = g.c();
    let mut out = vec![T::ZERO; g.b * g.n * c];
    let mut lse = vec![T::ZERO; g.b * g.heads * g.n];
    let (po, pl) = (SendPtr(out.as_mut_ptr()), SendPtr(lse.as_mut_ptr()));
    let rows = g.rows.max(1);
    let scale = T::from_f64(g.scale);
    (0..g.b * g.heads).into_par_iter().for_each(|bh| {
        let (bi, h) = (bi_h(bh, g).0, bi_h(bh, g).1);
        let (po, pl) = (po, pl);
        let mut s = vec![T::ZERO; rows * g.m];
        let qb = unsafe { q.as_ptr().add(bi * g.n * c + h * g.d) };
        let kb = unsafe { k.as_ptr().add(bi * g.m * c + h * g.d) };
        let vb = unsafe { v.as_ptr().add(bi * g.m * c + h * g.d) };
        let mut r0 = 0;
        while r0 < g.n {
            let nr = rows.min(g.n - r0);
            unsafe {
                // s = scale · q[r0..] · kᵀ
                gemm1(
                    nr,
                    g.m,
                    g.d,
                    s.as_mut_ptr(),
                    g.m,
                    false,
                    qb.add(r0 * c),
                    c,
                    1,
                    kb,
                    1,
                    c,
                    scale,
                );
            }
            for r in 0..nr {
                let row = &mut s[r * g.m..(r + 1) * g.m];
                let mx = row
                    .iter()
                    .copied()
                    .fold(row[0], |a, b| if b > a { b } else { a });
                let sum = T::exp_shift_sum(row, mx);
                let inv = T::from_f64(1.0 / sum);
                for x in row.iter_mut() {
                    *x = *x * inv;
                }
                unsafe {
                    *pl.0.add(bh * g.n + r0 + r) = T::from_f64(mx.to_f64() + sum.ln());
                }
            }
            unsafe {
                // out[r0..] = p · v
                let dst = po.0.add(bi * g.n * c + r0 * c + h * g.d);
                gemm1(
                    nr,
                    g.d,
                    g.m,
                    dst,
                    c,
                    false,
                    s.as_ptr(),
                    g.m,
                    1,
                    vb,
                    c,
                    1,
                    T::ONE,
                );
            }
            r0 += nr;
        }
    });
    (out, lse)
}

fn bi_h(bh: usize, g: &AttnGeom) -> (usize, usize) {
    (bh / g.heads, bh % g.heads)
}

/// Gradients (dq, dk, dv) of [`attention`] given its inputs, output, log-sum-exp and the
/// output gradient `dout`: per block of query rows, p = exp(s·q·kᵀ − lse), dv += pᵀ·dout,
/// ds = p ⊙ (dout·vᵀ − rowsum(dout ⊙ out)), dq = s·ds·k, dk += s·dsᵀ·q.
#[allow(clippy::too_many_arguments)]
pub fn attention_grad<T: Elem>(
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    dout: &[T],
    g: &AttnGeom,
) -> AttnGrads<T> {
    if let Some(r) = T::fast_attention_grad(q, k, v, out, lse, dout, g) {
        return r;
    }
    attention_grad_generic(q, k, v, out, lse, dout, g)
}

/// [`attention_grad`] through the `gemm` crate, for any element type.
#[allow(clippy::too_many_arguments)]
fn attention_grad_generic<T: Elem>(
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    dout: &[T],
    g: &AttnGeom,
) -> AttnGrads<T> {
    let c = g.c();
    let mut dq = vec![T::ZERO; g.b * g.n * c];
    let mut dk = vec![T::ZERO; g.b * g.m * c];
    let mut dv = vec![T::ZERO; g.b * g.m * c];
    let (pq, pk, pv) = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    let rows = g.rows.max(1);
    let scale = T::from_f64(g.scale);
    (0..g.b * g.heads).into_par_iter().for_each(|bh| {
        let (bi, h) = bi_h(bh, g);
        let (pq, pk, pv) = (pq, pk, pv);
        let mut p = vec![T::ZERO; rows * g.m];
        let mut ds = vec![T::ZERO; rows * g.m];
        let off_n = bi * g.n * c + h * g.d;
        let off_m = bi * g.m * c + h * g.d;
        let (qb, kb, vb) = unsafe {
            (
                q.as_ptr().add(off_n),
                k.as_ptr().add(off_m),
                v.as_ptr().add(off_m),
            )
        };
        let (ob, gb) = unsafe { (out.as_ptr().add(off_n), dout.as_ptr().add(off_n)) };
        let mut r0 = 0;
        while r0 < g.n {
            let nr = rows.min(g.n - r0);
            unsafe {
                gemm1(
                    nr,
                    g.m,
                    g.d,
                    p.as_mut_ptr(),
                    g.m,
                    false,
                    qb.add(r0 * c),
                    c,
                    1,
                    kb,
                    1,
                    c,
                    scale,
                );
                gemm1(
                    nr,
                    g.m,
                    g.d,
                    ds.as_mut_ptr(),
                    g.m,
                    false,
                    gb.add(r0 * c),
                    c,
                    1,
                    vb,
                    1,
                    c,
                    T::ONE,
                );
            }
            for r in 0..nr {
                let l = lse[bh * g.n + r0 + r];
                let prow = &mut p[r * g.m..(r + 1) * g.m];
                T::exp_shift_sum(prow, l);
                let orow = unsafe { std::slice::from_raw_parts(ob.add((r0 + r) * c), g.d) };
                let grow = unsafe { std::slice::from_raw_parts(gb.add((r0 + r) * c), g.d) };
                let delta = orow
                    .iter()
                    .zip(grow)
                    .fold(T::ZERO, |a, (&o, &gg)| a + o * gg);
                for (dsv, &pv_) in ds[r * g.m..(r + 1) * g.m].iter_mut().zip(prow.iter()) {
                    *dsv = pv_ * (*dsv - delta);
                }
            }
            unsafe {
                // dv += pᵀ · dout[r0..]
                gemm1(
                    g.m,
                    g.d,
                    nr,
                    pv.0.add(off_m),
                    c,
                    true,
                    p.as_ptr(),
                    1,
                    g.m,
                    gb.add(r0 * c),
                    c,
                    1,
                    T::ONE,
                );
                // dq[r0..] = scale · ds · k
                gemm1(
                    nr,
                    g.d,
                    g.m,
                    pq.0.add(off_n + r0 * c),
                    c,
                    false,
                    ds.as_ptr(),
                    g.m,
                    1,
                    kb,
                    c,
                    1,
                    scale,
                );
                // dk += scale · dsᵀ · q[r0..]
                gemm1(
                    g.m,
                    g.d,
                    nr,
                    pk.0.add(off_m),
                    c,
                    true,
                    ds.as_ptr(),
                    1,
                    g.m,
                    qb.add(r0 * c),
                    c,
                    1,
                    scale,
                );
            }
            r0 += nr;
        }
    });
    (dq, dk, dv)
}

/// Rows per parallel task of the GEGLU kernels: about 64 K output values each.
fn geglu_rows_per_task(inner: usize) -> usize {
    ((1 << 16) / inner.max(1)).max(1)
}

/// GEGLU, the gated feed-forward activation: contiguous rows of `2·inner` values `[a | gate]`
/// give rows of `inner` values `a · gelu(gate)`, with the erf GELU `g·Φ(g)`. One pass
/// instead of candle's strided erf-GELU (a scalar `erf` call per value) and product.
pub fn geglu(h: &[f32], inner: usize) -> Vec<f32> {
    if inner == 0 {
        return Vec::new();
    }
    let rows = h.len() / (2 * inner).max(1);
    let mut out = vec![0f32; rows * inner];
    let per = geglu_rows_per_task(inner);
    out.par_chunks_mut(per * inner)
        .zip(h.par_chunks(per * 2 * inner))
        .for_each(|(o, h)| simd::geglu(o, h, inner));
    out
}

/// The gradient of [`geglu`] with respect to its input, from the output gradient `d`.
pub fn geglu_grad(h: &[f32], d: &[f32], inner: usize) -> Vec<f32> {
    if inner == 0 {
        return vec![0f32; h.len()];
    }
    let mut dh = vec![0f32; h.len()];
    let per = geglu_rows_per_task(inner);
    dh.par_chunks_mut(per * 2 * inner)
        .zip(h.par_chunks(per * 2 * inner).zip(d.par_chunks(per * inner)))
        .for_each(|(dh, (h, d))| simd::geglu_grad(dh, h, d, inner));
    dh
}

/// `layer_norm(x)·w + b` over the last dimension of contiguous `x` (rows × c).
pub fn layer_norm<T: Elem>(x: &[T], w: &[T], b: &[T], c: usize, eps: f64) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    let rows_per_task = (4096 / c.max(1)).max(1);
    out.par_chunks_mut(c * rows_per_task)
        .zip(x.par_chunks(c * rows_per_task))
        .for_each(|(o, xs)| {
            for (orow, xrow) in o.chunks_mut(c).zip(xs.chunks(c)) {
                let (mean, rstd) = group_stats(xrow, eps);
                let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
                for (((ov, &xv), &wv), &bv) in orow.iter_mut().zip(xrow).zip(w).zip(b) {
                    *ov = (xv - m) * r * wv + bv;
                }
            }
        });
    out
}

/// The input gradient of [`layer_norm`] (weight and bias frozen).
pub fn layer_norm_input_grad<T: Elem>(x: &[T], grad: &[T], w: &[T], c: usize, eps: f64) -> Vec<T> {
    let mut dx = vec![T::ZERO; x.len()];
    let rows_per_task = (4096 / c.max(1)).max(1);
    dx.par_chunks_mut(c * rows_per_task)
        .zip(
            x.par_chunks(c * rows_per_task)
                .zip(grad.par_chunks(c * rows_per_task)),
        )
        .for_each(|(d, (xs, gs))| {
            for ((drow, xrow), grow) in d.chunks_mut(c).zip(xs.chunks(c)).zip(gs.chunks(c)) {
                let (mean, rstd) = group_stats(xrow, eps);
                let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
                let (mut s1, mut s2) = (T::ZERO, T::ZERO);
                for (((dv, &xv), &gv), &wv) in drow.iter_mut().zip(xrow).zip(grow).zip(w) {
                    let dy = gv * wv;
                    *dv = dy;
                    s1 += dy;
                    s2 += dy * ((xv - m) * r);
                }
                let n = T::from_f64(1.0 / c.max(1) as f64);
                let (m1, m2) = (s1 * n, s2 * n);
                for (dv, &xv) in drow.iter_mut().zip(xrow) {
                    *dv = r * (*dv - m1 - (xv - m) * r * m2);
                }
            }
        });
    dx
}
