//! Direct convolution (stride 1 or 2) in f32 for CPUs with AVX-512: no im2col matrix, no GEMM
//! packing of the image.
//!
//! Why: im2col + GEMM writes every input value kh·kw times into a patch matrix and the GEMM
//! then packs that matrix again before its micro-kernel reads it; with the few channels of
//! the VAEs (16–128 in and out on planes of 64²–256²) those copies cost as much as the
//! arithmetic, and PyTorch's oneDNN, which convolves directly, was 1.1–1.7× faster on every
//! VAE row. Here one register tile holds 8 output channels × up to 3 output rows × 16 output
//! columns (24 accumulators); for every input channel and tap it loads one 16-wide row
//! segment per output row straight from a zero-padded copy of the input (the padding done
//! once, so no bounds tests in the loop) and multiplies it by 8 broadcast weights from a
//! kernel repacked once per call as (channel tile, in, kh, kw, 8). Every output value is
//! written once (bias first). For stride 2 the padded copy stores each row's even and odd
//! columns apart, so that the 16 columns a tap reads are again one load. The input gradient
//! of a stride-1 convolution is the same kernel run on the output gradient with the kernel
//! flipped and its channel axes swapped.
//!
//! Checked against the im2col path (this module's tests) and, through `ops`, against
//! candle's convolution and its gradient.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::{has_avx512f, ConvGeom, SendPtr};

/// Output channels per register tile.
const MR: usize = 8;
/// f32 lanes of one vector.
const LANES: usize = 16;
/// Output rows per register tile.
const ROWS: usize = 3;

/// Whether [`conv2d`] serves `g` on this CPU: stride 1 or 2, a kernel larger than 1×1 (1×1 runs
/// as a plain GEMM already), output rows worth the tile (see [`wide_enough`]), and AVX-512.
pub(super) fn applicable(g: &ConvGeom) -> bool {
    let (_, ow) = g.out_hw();
    (1..=2).contains(&g.stride) && g.kh * g.kw > 1 && wide_enough(ow, g.cin) && has_avx512f()
}

/// Whether [`conv2d_input_grad`] serves `g`: stride 1, a square kernel larger than 1×1 with
/// padding below its size, rows of the gradient's output (the input's) worth the tile,
/// AVX-512.
pub(super) fn applicable_grad(g: &ConvGeom) -> bool {
    g.stride == 1
        && g.kh == g.kw
        && g.kh > 1
        && g.padding < g.kh
        && wide_enough(g.w, g.cout)
        && has_avx512f()
}

/// Rows of `ow` outputs from `cin` input channels: at least 16 wide (narrower rows leave
/// vector lanes idle), and at least 32 wide when the channels are many. At 16² with 640 or
/// 1 280 channels im2col + GEMM measured 1.1–1.9× faster (the GEMM's large packed blocks
/// win when a plane is one vector wide), while at 32² and wider, or with up to 128
/// channels, the direct kernel was 1.1–3.9× faster.
fn wide_enough(ow: usize, cin: usize) -> bool {
    ow >= 2 * LANES || (ow >= LANES && cin <= 128)
}

/// `conv2d(x, kernel) + bias` (stride 1 or 2) for contiguous `x` (b, cin, h, w) and `kernel`
/// (cout, cin, kh, kw).
pub(super) fn conv2d(x: &[f32], kernel: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let kk = g.kh * g.kw;
    let packed = pack(g.cout, g.cin, kk, |co, ci, t| {
        kernel[(co * g.cin + ci) * kk + t]
    });
    let shape = Shape {
        b: g.b,
        cin: g.cin,
        h: g.h,
        w: g.w,
        pad: g.padding,
        kh: g.kh,
        kw: g.kw,
        stride: g.stride,
    };
    run(x, &shape, &packed, g.cout, bias)
}

/// The input gradient of the stride-1 [`conv2d`] for the output gradient `grad`
/// (b, cout, oh, ow): the convolution of `grad`, padded by `kh − 1 − padding`, with the
/// flipped kernel whose channel axes are swapped.
pub(super) fn conv2d_input_grad(grad: &[f32], kernel: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (oh, ow) = g.out_hw();
    let (kh, kw) = (g.kh, g.kw);
    let kk = kh * kw;
    let packed = pack(g.cin, g.cout, kk, |ci, co, t| {
        let (i, j) = (t / kw, t % kw);
        kernel[(co * g.cin + ci) * kk + (kh - 1 - i) * kw + (kw - 1 - j)]
    });
    let shape = Shape {
        b: g.b,
        cin: g.cout,
        h: oh,
        w: ow,
        pad: kh - 1 - g.padding,
        kh,
        kw,
        stride: 1,
    };
    run(grad, &shape, &packed, g.cin, None)
}

/// The kernel as (⌈cout / 8⌉, cin, kh·kw, 8), zero beyond `cout`; `at(co, ci, tap)`. One
/// channel tile per task (the SD-1.5 UNet's largest kernels are 15 M values).
fn pack(
    cout: usize,
    cin: usize,
    kk: usize,
    at: impl Fn(usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let tiles = cout.div_ceil(MR);
    let mut p = vec![0f32; tiles * cin * kk * MR];
    p.par_chunks_mut(cin * kk * MR)
        .enumerate()
        .for_each(|(t, dst)| {
            for m in 0..MR.min(cout - t * MR) {
                let co = t * MR + m;
                for ci in 0..cin {
                    for tap in 0..kk {
                        dst[(ci * kk + tap) * MR + m] = at(co, ci, tap);
                    }
                }
            }
        });
    p
}

/// Bytes of padded input one task keeps in the core's L2 while its channel tiles pass over it.
const SLAB_BYTES: usize = 256 << 10;
/// Input channels per block at most (the block's kernel tile, 8 × 96 × 3 × 3 f32, is 27 KB).
const MAX_CHANNEL_BLOCK: usize = 96;

/// The input side of one convolution: input (b, cin, h, w), square zero padding `pad`, a
/// kh × kw kernel, stride.
struct Shape {
    b: usize,
    cin: usize,
    h: usize,
    w: usize,
    pad: usize,
    kh: usize,
    kw: usize,
    stride: usize,
}

/// The convolution proper (stride 1 or 2, square padding `pad`), with a packed kernel.
///
/// The padded copy is laid out (b, row, channel, column), so that one tile's reads over a
/// block of input channels lie in one stretch of memory instead of one page per channel
/// plane. One task is an image, a block of output rows and a group of channel tiles; within
/// it the input channels go in blocks whose padded rows (the slab, about 256 KB) stay in the
/// core's L2 while every channel tile of the group and every column passes over them, the
/// partial sums kept in the output.
fn run(x: &[f32], sh: &Shape, packed: &[f32], cout: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let &Shape {
        b,
        cin,
        h,
        w,
        pad,
        kh,
        kw,
        stride: s,
    } = sh;
    let (oh, ow) = ((h + 2 * pad - kh) / s + 1, (w + 2 * pad - kw) / s + 1);
    // Each padded row of a channel holds its columns by phase (column X at (X mod s)·wq +
    // X / s; for stride 1, as they are), so that a tap's 16 columns of a stride-2 row are
    // one contiguous load. A phase is wide enough that every 16-wide load of every tap, and
    // every padded column, stays inside.
    let hp = h + 2 * pad;
    let wq = ow.next_multiple_of(LANES) + (kw + s - 2) / s;
    let wp = s * wq;
    let row_stride = cin * wp;
    let pad_and_convolve = |xp: &mut Vec<f32>| {
        let len = b * hp * row_stride;
        xp.clear();
        xp.reserve(len);
        // every padded row written whole: zeros around the data, zero rows above and below
        xp.spare_capacity_mut()[..len]
            .par_chunks_mut(row_stride)
            .enumerate()
            .for_each(|(n, dst)| {
                let (bi, r) = (n / hp, n % hp);
                for (ci, d) in dst.chunks_exact_mut(wp).enumerate() {
                    let src: &[f32] = if r < pad || r >= pad + h {
                        &[]
                    } else {
                        &x[((bi * cin + ci) * h + r - pad) * w..][..w]
                    };
                    if s == 1 {
                        let (lead, rest) = d.split_at_mut(if src.is_empty() { 0 } else { pad });
                        let (mid, tail) = rest.split_at_mut(src.len());
                        for v in lead.iter_mut().chain(tail) {
                            v.write(0.0);
                        }
                        for (v, &val) in mid.iter_mut().zip(src) {
                            v.write(val);
                        }
                    } else {
                        for v in d.iter_mut() {
                            v.write(0.0);
                        }
                        for (xx, &val) in src.iter().enumerate() {
                            let c = xx + pad;
                            d[(c % s) * wq + c / s].write(val);
                        }
                    }
                }
            });
        // SAFETY: the loop above wrote all `len` values
        unsafe { xp.set_len(len) };
        // where tap (i, j) of output (0, 0) reads, from the image's first padded row
        let taps: Vec<usize> = (0..kh * kw)
            .map(|t| (t / kw) * row_stride + (t % kw % s) * wq + t % kw / s)
            .collect();
        let geo = Padded {
            b,
            cin,
            hp,
            wp,
            kh,
            stride: s,
            taps: &taps,
            oh,
            ow,
        };
        let out = convolve(xp, &geo, packed, cout, bias);
        if xp.len() > KEEP_PADDED {
            *xp = Vec::new();
        }
        out
    };
    // a thread that steals another convolution while this one waits for its tasks finds
    // the buffer taken and uses a fresh one
    PADDED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut xp) => pad_and_convolve(&mut xp),
        Err(_) => pad_and_convolve(&mut Vec::new()),
    })
}

thread_local! {
    /// The padded input, kept between calls on the same thread (up to [`KEEP_PADDED`]
    /// values): a fresh buffer of this size costs its page faults at every call, which on the
    /// small VAE convolutions is as much as the arithmetic.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest padded input kept between calls: 16 M values (64 MB).
const KEEP_PADDED: usize = 16 << 20;

/// The padded input's layout (b, hp, cin, wp) and the output size.
struct Padded<'a> {
    b: usize,
    cin: usize,
    hp: usize,
    wp: usize,
    kh: usize,
    stride: usize,
    /// Offsets of the kernel's taps (row-major) from an output's first read.
    taps: &'a [usize],
    oh: usize,
    ow: usize,
}

/// The tiles over the padded input `xp`.
fn convolve(
    xp: &[f32],
    geo: &Padded,
    packed: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let &Padded {
        b,
        cin,
        hp,
        wp,
        kh,
        stride: s,
        taps,
        oh,
        ow,
    } = geo;
    let kk = taps.len();
    // rows of the padded input a tile row reads beyond its own
    let extra = kh.saturating_sub(s);
    let row_stride = cin * wp;
    let len = b * cout * oh * ow;
    // written by the tiles through a pointer, every value once before it is read (the
    // partial sums of later channel blocks), then taken as initialised
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let tiles = cout.div_ceil(MR);
    // blocking: channels per block, then output rows per block (a multiple of the tile's)
    let row_bytes = wp * std::mem::size_of::<f32>();
    let cb = (SLAB_BYTES / ((s * ROWS + extra) * row_bytes))
        .clamp(8, MAX_CHANNEL_BLOCK)
        .min(cin);
    let rows_blk = ((SLAB_BYTES / (cb * row_bytes)).saturating_sub(extra) / (s * ROWS) * ROWS)
        .clamp(ROWS, oh.next_multiple_of(ROWS));
    let row_blocks = oh.div_ceil(rows_blk);
    // enough tasks to share: split the channel tiles when images × row blocks are few
    let threads = rayon::current_num_threads().max(1);
    let groups = (4 * threads).div_ceil(b * row_blocks).clamp(1, tiles);
    let per_group = tiles.div_ceil(groups);
    let groups = tiles.div_ceil(per_group);
    let dst = SendPtr(out.as_mut_ptr());
    (0..b * row_blocks * groups)
        .into_par_iter()
        .for_each(|task| {
            let dst = &dst;
            let bi = task / (row_blocks * groups);
            let (rb, grp) = ((task / groups) % row_blocks, task % groups);
            let (ya, yb) = (rb * rows_blk, ((rb + 1) * rows_blk).min(oh));
            let (ta, tb) = (grp * per_group, ((grp + 1) * per_group).min(tiles));
            let xi = &xp[bi * hp * row_stride..];
            let mut c0 = 0;
            while c0 < cin {
                let cn = cb.min(cin - c0);
                for t in ta..tb {
                    let co0 = t * MR;
                    let mvalid = MR.min(cout - co0);
                    let mut init = [0f32; MR];
                    if let (Some(bias), 0) = (bias, c0) {
                        init[..mvalid].copy_from_slice(&bias[co0..co0 + mvalid]);
                    }
                    let wk = &packed[(t * cin + c0) * kk * MR..];
                    let mut y = ya;
                    while y < yb {
                        // four rows left: two tiles of two (a one-row tile is slower)
                        let nv = if yb - y == 4 { 2 } else { ROWS.min(yb - y) };
                        let mut x0 = 0;
                        while x0 < ow {
                            let o = ((bi * cout + co0) * oh + y) * ow + x0;
                            // SAFETY: the tile reads padded rows s·y .. s·(y + nv − 1) + kh
                            // ≤ hp of image bi, channels c0..c0 + cn ≤ cin, in each phase
                            // columns x0 .. x0 + 16 + (kw − 1) / s ≤ wq, and cn·kk·8 packed
                            // weights from `wk`; it writes (and, after
                            // the first channel block, reads) mvalid channels × nv rows × its
                            // columns of the output from `o`, which belong to this task alone.
                            unsafe {
                                let args = Tile {
                                    x: xi.as_ptr().add(s * y * row_stride + c0 * wp + x0),
                                    ci_stride: wp,
                                    row_step: s * row_stride,
                                    taps: taps.as_ptr(),
                                    kk,
                                    cin: cn,
                                    w: wk.as_ptr(),
                                    init,
                                    accumulate: c0 > 0,
                                    out: dst.0.add(o),
                                    out_plane: oh * ow,
                                    ow,
                                    mvalid,
                                    cols: LANES.min(ow - x0),
                                };
                                match nv {
                                    3 => tile::<3>(&args),
                                    2 => tile::<2>(&args),
                                    _ => tile::<1>(&args),
                                }
                            }
                            x0 += LANES;
                        }
                        y += nv;
                    }
                }
                c0 += cn;
            }
        });
    // SAFETY: the tasks above cover every image, channel tile, row and column, and each tile
    // stores all of its valid channels, rows and columns
    unsafe { out.set_len(len) };
    out
}

/// One register tile's operands.
struct Tile {
    /// The padded input at (the tile's first row, first channel, first column).
    x: *const f32,
    ci_stride: usize,
    /// From one output row's reads to the next's.
    row_step: usize,
    /// Offsets of the kk taps.
    taps: *const usize,
    kk: usize,
    cin: usize,
    /// The packed kernel of the tile's channel block, from its first input channel.
    w: *const f32,
    init: [f32; MR],
    /// Add to what the output holds (a later block of input channels) instead of `init`.
    accumulate: bool,
    /// The output at (the tile's first channel, first row, first column).
    out: *mut f32,
    out_plane: usize,
    ow: usize,
    mvalid: usize,
    cols: usize,
}

/// `NV` output rows × 16 columns × 8 channels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const NV: usize>(a: &Tile) {
    unsafe {
        let mask: __mmask16 = if a.cols >= LANES {
            0xffff
        } else {
            (1u16 << a.cols) - 1
        };
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for (m, row) in acc.iter_mut().enumerate() {
            let b = _mm512_set1_ps(a.init[m]);
            for (v, acc) in row.iter_mut().enumerate() {
                *acc = if a.accumulate && m < a.mvalid {
                    _mm512_maskz_loadu_ps(mask, a.out.add(m * a.out_plane + v * a.ow))
                } else {
                    b
                };
            }
        }
        let mut wp = a.w;
        for ci in 0..a.cin {
            let xc = a.x.add(ci * a.ci_stride);
            for t in 0..a.kk {
                let xt = xc.add(*a.taps.add(t));
                let mut xv = [_mm512_setzero_ps(); NV];
                for (v, xv) in xv.iter_mut().enumerate() {
                    *xv = _mm512_loadu_ps(xt.add(v * a.row_step));
                }
                for (m, row) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wp.add(m));
                    for (v, acc) in row.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(wv, xv[v], *acc);
                    }
                }
                wp = wp.add(MR);
            }
        }
        for (m, row) in acc.iter().enumerate().take(a.mvalid) {
            for (v, acc) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(a.out.add(m * a.out_plane + v * a.ow), mask, *acc);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const NV: usize>(_: &Tile) {
    unreachable!("the direct convolution needs AVX-512")
}

#[cfg(test)]
mod tests {
    use super::super::test_data::{assert_close, uniform as data};
    use super::super::{conv2d_im2col, conv2d_input_grad_im2col, ConvGeom};

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_close(a, b, 1e-6, what)
    }

    /// Output widths on and off the 16-lane grid, row counts on and off the 3-row tile,
    /// channel counts on and off the 8-channel tile, 3×3 and 5×3 kernels, padding 0–2,
    /// strides 1 and 2 (input widths even and odd).
    #[test]
    fn direct_matches_im2col() {
        if !super::has_avx512f() {
            eprintln!("no AVX-512: the direct convolution is not used on this CPU");
            return;
        }
        let geoms = [
            (2, 3, 16, 16, 16, 3, 3, 1, 1),
            (1, 16, 20, 37, 3, 3, 3, 1, 1),
            (3, 5, 7, 40, 20, 3, 3, 0, 1),
            (1, 9, 11, 33, 13, 5, 3, 2, 1),
            (2, 32, 32, 64, 32, 3, 3, 1, 1),
            (2, 8, 33, 33, 16, 3, 3, 0, 2),
            (1, 12, 14, 40, 9, 3, 3, 1, 2),
            (2, 5, 19, 71, 24, 5, 3, 2, 2),
        ];
        for (n, &(b, cin, h, w, cout, kh, kw, padding, stride)) in geoms.iter().enumerate() {
            let g = ConvGeom {
                b,
                cin,
                h,
                w,
                cout,
                kh,
                kw,
                padding,
                stride,
            };
            let x = data(b * cin * h * w, n as u64);
            let k = data(cout * cin * kh * kw, 100 + n as u64);
            let bias = data(cout, 200 + n as u64);
            assert!(super::applicable(&g), "{g:?} should be served");
            let want = conv2d_im2col(&x, &k, Some(&bias), &g);
            close(
                &super::conv2d(&x, &k, Some(&bias), &g),
                &want,
                &format!("{g:?} forward"),
            );
            let want = conv2d_im2col(&x, &k, None, &g);
            close(
                &super::conv2d(&x, &k, None, &g),
                &want,
                &format!("{g:?} no bias"),
            );
            if super::applicable_grad(&g) {
                let (oh, ow) = g.out_hw();
                let gr = data(b * cout * oh * ow, 300 + n as u64);
                let want = conv2d_input_grad_im2col(&gr, &k, &g);
                close(
                    &super::conv2d_input_grad(&gr, &k, &g),
                    &want,
                    &format!("{g:?} grad"),
                );
            }
        }
    }
}
