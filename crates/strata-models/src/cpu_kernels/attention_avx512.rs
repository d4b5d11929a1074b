//! Attention forward and backward in f32 on AVX-512, with the products done by one
//! register-tiled kernel instead of the `gemm` crate.
//!
//! Why: attention's products have one short side, the head width (40–160 in SD-1.5, 8–64
//! in the base model): scores are (rows × keys) over 40 terms, outputs (rows × 40) over
//! thousands. `gemm` (whose x86 kernels in 0.19 are AVX2 unless a feature built for AVX-512
//! everywhere is turned on, which measured slower on the UNet) packs both operands at every
//! call, and with so few terms or so few columns the packing costs about as much as the
//! arithmetic: attention over the 4 096 tokens of SD-1.5 at 64² latents ran at about a third
//! of what the same CPU's convolutions reach. Here the keys, values, queries and output
//! gradient of one head are copied once per head into the layouts the kernel reads (keys and
//! values transposed, row widths rounded up to 16 and zero-padded), and every product is
//! 8 rows × up to 48 columns of accumulators, fed by 16-wide row loads and broadcasts from
//! the other operand read in place through strides.
//!
//! The algorithm is the generic one in the parent module (scores one block of query rows
//! at a time, never kept; the backward recomputes probabilities from the saved
//! log-sum-exp); the results agree with it to f32 rounding (tests below) and, through `ops`
//! and the attention module, with candle's composed attention and its gradient.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::{simd, AttnGeom, SendPtr};

/// Rows of one register tile.
const MR: usize = 8;
/// f32 lanes of one vector.
const LANES: usize = 16;
/// Column vectors of one register tile at most (48 columns).
const NV: usize = 3;
/// Terms of the product per pass over a column block (the other operand's rows then stay
/// in cache across the row tiles).
const KC: usize = 256;

/// One operand read in place: element (i, p) at `ptr + i·rs + p·cs`.
#[derive(Clone, Copy)]
struct Strided {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

/// `C (m × n, row stride c_rs) = alpha · A · B (+ C when accumulate)`, with A (m × k) read
/// through strides and B (k × n) by rows of stride `b_rs`, readable (and finite) up to `n`
/// rounded up to 16 columns; only the first `n` columns of C are written.
///
/// # Safety
/// The pointers must cover the stated extents, and C must not overlap A or B.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    alpha: f32,
    accumulate: bool,
) {
    // passes over the k terms, KC at a time (one pass, writing alpha·0, when k is 0)
    let mut p0 = 0;
    loop {
        let kc = KC.min(k - p0);
        let acc_chunk = accumulate || p0 > 0;
        let mut j0 = 0;
        while j0 < n {
            let cols = (n - j0).min(NV * LANES);
            let nv = cols.div_ceil(LANES);
            let last = cols - (nv - 1) * LANES;
            let mut i0 = 0;
            while i0 < m {
                let t = Tile {
                    k: kc,
                    a: Strided {
                        ptr: a.ptr.add(i0 * a.rs + p0 * a.cs),
                        ..a
                    },
                    rows: MR.min(m - i0),
                    b: b.add(p0 * b_rs + j0),
                    b_rs,
                    c: c.add(i0 * c_rs + j0),
                    c_rs,
                    last,
                    alpha,
                    accumulate: acc_chunk,
                };
                match nv {
                    3 => tile::<3>(&t),
                    2 => tile::<2>(&t),
                    _ => tile::<1>(&t),
                }
                i0 += MR;
            }
            j0 += NV * LANES;
        }
        p0 += kc;
        if p0 >= k {
            break;
        }
    }
}

struct Tile {
    k: usize,
    a: Strided,
    rows: usize,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    /// Columns written of the last vector (1..=16).
    last: usize,
    alpha: f32,
    accumulate: bool,
}

/// `V` column vectors × 8 rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize>(t: &Tile) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        // rows past the matrix read row 0 again (finite, never stored)
        let rows: [*const f32; MR] =
            std::array::from_fn(|r| t.a.ptr.add(if r < t.rows { r * t.a.rs } else { 0 }));
        let mut off = 0;
        for p in 0..t.k {
            let brow = t.b.add(p * t.b_rs);
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(brow.add(v * LANES));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*rows[r].add(off));
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(w, bv[v], *acc);
                }
            }
            off += t.a.cs;
        }
        let alpha = _mm512_set1_ps(t.alpha);
        let last: __mmask16 = if t.last >= LANES {
            0xffff
        } else {
            (1u16 << t.last) - 1
        };
        for (r, acc) in acc.iter().enumerate().take(t.rows) {
            for (v, &acc) in acc.iter().enumerate() {
                let mask = if v + 1 == V { last } else { 0xffff };
                let dst = t.c.add(r * t.c_rs + v * LANES);
                let mut val = _mm512_mul_ps(acc, alpha);
                if t.accumulate {
                    val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(mask, dst));
                }
                _mm512_mask_storeu_ps(dst, mask, val);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const V: usize>(_: &Tile) {
    unreachable!("the attention kernel needs AVX-512")
}

/// `rows × d` of one head (row stride `c` in the source) as a (rows × round16(d)) copy.
fn padded_rows(src: &[f32], rows: usize, c: usize, d: usize) -> Vec<f32> {
    let dp = d.next_multiple_of(LANES);
    let mut out = vec![0f32; rows * dp];
    for (r, o) in out.chunks_exact_mut(dp).enumerate() {
        o[..d].copy_from_slice(&src[r * c..r * c + d]);
    }
    out
}

/// `rows × d` of one head (row stride `c` in the source) transposed: (d × round16(rows)).
fn transposed(src: &[f32], rows: usize, c: usize, d: usize) -> Vec<f32> {
    let rp = rows.next_multiple_of(LANES);
    let mut out = vec![0f32; d * rp];
    for r in 0..rows {
        for (j, &v) in src[r * c..r * c + d].iter().enumerate() {
            out[j * rp + r] = v;
        }
    }
    out
}

/// [`super::attention`] for f32 on AVX-512.
pub(super) fn attention(q: &[f32], k: &[f32], v: &[f32], g: &AttnGeom) -> (Vec<f32>, Vec<f32>) {
    let c = g.c();
    let mut out = vec![0f32; g.b * g.n * c];
    let mut lse = vec![0f32; g.b * g.heads * g.n];
    let (po, pl) = (SendPtr(out.as_mut_ptr()), SendPtr(lse.as_mut_ptr()));
    let rows = g.rows.max(1);
    let mp = g.m.next_multiple_of(LANES);
    (0..g.b * g.heads).into_par_iter().for_each(|bh| {
        let (po, pl) = (po, pl);
        let (bi, h) = (bh / g.heads, bh % g.heads);
        let (off_n, off_m) = (bi * g.n * c + h * g.d, bi * g.m * c + h * g.d);
        let kt = transposed(&k[off_m..], g.m, c, g.d);
        let vp = padded_rows(&v[off_m..], g.m, c, g.d);
        let mut s = vec![0f32; rows * mp];
        let mut r0 = 0;
        while r0 < g.n {
            let nr = rows.min(g.n - r0);
            // SAFETY: the operands cover nr query rows × d, d × mp keys, m × round16(d)
            // values; the scores buffer holds nr × mp; the output rows r0..r0 + nr of this
            // head (d columns at row stride c) belong to this task alone
            unsafe {
                let qa = Strided {
                    ptr: q.as_ptr().add(off_n + r0 * c),
                    rs: c,
                    cs: 1,
                };
                matmul(
                    nr,
                    g.m,
                    g.d,
                    qa,
                    kt.as_ptr(),
                    mp,
                    s.as_mut_ptr(),
                    mp,
                    g.scale as f32,
                    false,
                );
            }
            for r in 0..nr {
                let row = &mut s[r * mp..r * mp + g.m];
                let mx = row.iter().copied().fold(row[0], f32::max);
                let sum = simd::exp_shift_sum(row, mx);
                let inv = 1.0 / sum;
                for x in row.iter_mut() {
                    *x *= inv;
                }
                unsafe { *pl.0.add(bh * g.n + r0 + r) = mx + sum.ln() };
            }
            unsafe {
                let pa = Strided {
                    ptr: s.as_ptr(),
                    rs: mp,
                    cs: 1,
                };
                matmul(
                    nr,
                    g.d,
                    g.m,
                    pa,
                    vp.as_ptr(),
                    g.d.next_multiple_of(LANES),
                    po.0.add(off_n + r0 * c),
                    c,
                    1.0,
                    false,
                );
            }
            r0 += nr;
        }
    });
    (out, lse)
}

/// [`super::attention_grad`] for f32 on AVX-512.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_grad(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    g: &AttnGeom,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = g.c();
    let mut dq = vec![0f32; g.b * g.n * c];
    let mut dk = vec![0f32; g.b * g.m * c];
    let mut dv = vec![0f32; g.b * g.m * c];
    let (pq, pk, pv) = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    let rows = g.rows.max(1);
    let (mp, dp) = (g.m.next_multiple_of(LANES), g.d.next_multiple_of(LANES));
    let scale = g.scale as f32;
    (0..g.b * g.heads).into_par_iter().for_each(|bh| {
        let (pq, pk, pv) = (pq, pk, pv);
        let (bi, h) = (bh / g.heads, bh % g.heads);
        let (off_n, off_m) = (bi * g.n * c + h * g.d, bi * g.m * c + h * g.d);
        let kt = transposed(&k[off_m..], g.m, c, g.d);
        let vt = transposed(&v[off_m..], g.m, c, g.d);
        let kp = padded_rows(&k[off_m..], g.m, c, g.d);
        let qp = padded_rows(&q[off_n..], g.n, c, g.d);
        let gp = padded_rows(&dout[off_n..], g.n, c, g.d);
        let mut p = vec![0f32; rows * mp];
        let mut ds = vec![0f32; rows * mp];
        let mut r0 = 0;
        while r0 < g.n {
            let nr = rows.min(g.n - r0);
            let rows_of = |base: &[f32]| Strided {
                ptr: base[off_n + r0 * c..].as_ptr(),
                rs: c,
                cs: 1,
            };
            // SAFETY: as in the forward; dk and dv rows of this head belong to this task
            unsafe {
                // p = scale · q · kᵀ, ds = dout · vᵀ
                matmul(
                    nr,
                    g.m,
                    g.d,
                    rows_of(q),
                    kt.as_ptr(),
                    mp,
                    p.as_mut_ptr(),
                    mp,
                    scale,
                    false,
                );
                matmul(
                    nr,
                    g.m,
                    g.d,
                    rows_of(dout),
                    vt.as_ptr(),
                    mp,
                    ds.as_mut_ptr(),
                    mp,
                    1.0,
                    false,
                );
            }
            for r in 0..nr {
                let l = lse[bh * g.n + r0 + r];
                let prow = &mut p[r * mp..r * mp + g.m];
                simd::exp_shift_sum(prow, l);
                let o = &out[off_n + (r0 + r) * c..][..g.d];
                let gr = &dout[off_n + (r0 + r) * c..][..g.d];
                let delta: f32 = o.iter().zip(gr).map(|(a, b)| a * b).sum();
                for (dsv, &pv_) in ds[r * mp..r * mp + g.m].iter_mut().zip(prow.iter()) {
                    *dsv = pv_ * (*dsv - delta);
                }
            }
            unsafe {
                // dv += pᵀ · dout[r0..]
                let pt = Strided {
                    ptr: p.as_ptr(),
                    rs: 1,
                    cs: mp,
                };
                matmul(
                    g.m,
                    g.d,
                    nr,
                    pt,
                    gp.as_ptr().add(r0 * dp),
                    dp,
                    pv.0.add(off_m),
                    c,
                    1.0,
                    true,
                );
                // dq[r0..] = scale · ds · k
                let dsa = Strided {
                    ptr: ds.as_ptr(),
                    rs: mp,
                    cs: 1,
                };
                matmul(
                    nr,
                    g.d,
                    g.m,
                    dsa,
                    kp.as_ptr(),
                    dp,
                    pq.0.add(off_n + r0 * c),
                    c,
                    scale,
                    false,
                );
                // dk += scale · dsᵀ · q[r0..]
                let dst = Strided {
                    ptr: ds.as_ptr(),
                    rs: 1,
                    cs: mp,
                };
                matmul(
                    g.m,
                    g.d,
                    nr,
                    dst,
                    qp.as_ptr().add(r0 * dp),
                    dp,
                    pk.0.add(off_m),
                    c,
                    scale,
                    true,
                );
            }
            r0 += nr;
        }
    });
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::super::test_data::{assert_close, uniform as data};
    use super::super::{attention_generic, attention_grad_generic, AttnGeom};

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_close(a, b, 1e-2, what)
    }

    /// Head widths on and off the 16-lane grid (8, 20, 40, 80: one to five vectors),
    /// query and key counts on and off the 8-row tile and the 16-column vector, blocks of
    /// query rows that do and do not divide the queries, more keys than one pass of the
    /// product takes (300 > 256): forward and all three gradients agree with the generic
    /// kernel.
    #[test]
    fn avx512_attention_matches_generic() {
        if !super::super::has_avx512f() {
            eprintln!("no AVX-512: the generic attention kernel serves this CPU");
            return;
        }
        let cases = [
            (2, 2, 37, 77, 20, 5),
            (1, 3, 64, 64, 8, 64),
            (2, 1, 50, 300, 40, 16),
            (1, 2, 19, 9, 80, 7),
            (1, 1, 1, 1, 40, 1),
        ];
        for (n_case, &(b, heads, n, m, d, rows)) in cases.iter().enumerate() {
            let g = AttnGeom {
                b,
                heads,
                n,
                m,
                d,
                scale: 1.0 / (d as f64).sqrt(),
                rows,
            };
            let c = heads * d;
            let seed = 10 * n_case as u64;
            let q = data(b * n * c, seed);
            let k = data(b * m * c, seed + 1);
            let v = data(b * m * c, seed + 2);
            let dout = data(b * n * c, seed + 3);
            let what = format!("{g:?}");
            let (o, l) = super::attention(&q, &k, &v, &g);
            let (ow, lw) = attention_generic(&q, &k, &v, &g);
            close(&o, &ow, &format!("{what} output"));
            close(&l, &lw, &format!("{what} log-sum-exp"));
            let (dq, dk, dv) = super::attention_grad(&q, &k, &v, &ow, &lw, &dout, &g);
            let (dqw, dkw, dvw) = attention_grad_generic(&q, &k, &v, &ow, &lw, &dout, &g);
            close(&dq, &dqw, &format!("{what} dq"));
            close(&dk, &dkw, &format!("{what} dk"));
            close(&dv, &dvw, &format!("{what} dv"));
        }
    }
}
