//! Resizing as Pillow's `Image.resize(size, filter)` does it on RGB images, bit for bit.
//!
//! Written here rather than taken from a crate because the point is Pillow's exact output
//! (CLIP's and torchvision's preprocessing, the training crops): general resizers (e.g.
//! `fast_image_resize`, `image::imageops`) use other coefficient precisions and rounding.
//!
//! What Pillow does (libImaging/Resample.c), reproduced step by step:
//! - separable convolution, **horizontal pass first**, each pass rounding to 8 bits;
//! - per output position, `center = (i + 0.5) · scale` with `scale = in / out`; the filter is
//!   stretched by `max(scale, 1)` (antialiasing: the support grows with the shrink factor);
//!   source taps `[trunc(center − support + 0.5), trunc(center + support + 0.5))` clipped to
//!   the image; weights `filter((j − center + 0.5) / max(scale, 1))` normalised to sum 1;
//! - weights become fixed point with 22 fractional bits (`PRECISION_BITS = 32 − 8 − 2`),
//!   rounded half away from zero; a pass sums `pixel · weight` in i32 starting from
//!   `1 << 21` and keeps `clamp(sum >> 22, 0, 255)`;
//! - a pass whose size does not change is skipped (so it does not blur);
//! - filters: box (support 0.5), bilinear/triangle (1), Hamming (1), bicubic with
//!   `a = −0.5` (2), Lanczos-3 (3);
//! - nearest neighbour is not a convolution in Pillow: it is the affine "scale" transform,
//!   source index `trunc(x₀ + k · scale)` with `x₀ = scale / 2` accumulated by repeated
//!   addition (as Pillow does, so the rounding of the sum is the same).
//!
//! The tests compare against Pillow's own output on real-content fixtures (bit-exact).

use crate::RgbImage;

/// Pillow's resampling filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Filter {
    /// `Image.NEAREST`: the source pixel under each output pixel's centre.
    Nearest,
    /// `Image.BOX`: area average.
    Box,
    /// `Image.BILINEAR`: triangle filter (antialiased when shrinking).
    Bilinear,
    /// `Image.HAMMING`.
    Hamming,
    /// `Image.BICUBIC`: cubic convolution with a = −0.5.
    Bicubic,
    /// `Image.LANCZOS`: Lanczos with a = 3.
    Lanczos,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow's constants are C floats (0.54f, 0.46f)
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                let a = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output position: the first source index and the fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i32>>,
}

fn precompute(in_size: usize, out_size: usize, f: Filter) -> Coeffs {
    // Pillow: box (in0, in1) as C floats, `scale = (double)(in1 - in0) / outSize`
    let scale = (in_size as f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = f.support() * filterscale;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        let mut k: Vec<f64> = (0..n)
            .map(|x| f.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|v| *v /= ww);
        }
        let one = (1i64 << PRECISION_BITS) as f64;
        let fixed = k
            .iter()
            .map(|&v| {
                if v < 0.0 {
                    (-0.5 + v * one) as i32
                } else {
                    (0.5 + v * one) as i32
                }
            })
            .collect();
        bounds.push((xmin as usize, n));
        weights.push(fixed);
    }
    Coeffs { bounds, weights }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over rows `[y0, y1)` of `img`.
fn horizontal(img: &RgbImage, w: usize, y0: usize, y1: usize, c: &Coeffs) -> RgbImage {
    let mut data = vec![0u8; w * (y1 - y0) * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for y in y0..y1 {
        let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let out = &mut data[(y - y0) * w * 3..(y - y0 + 1) * w * 3];
        for (x, ((xmin, n), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
            let mut acc = [half; 3];
            for (j, &kw) in k.iter().enumerate().take(*n) {
                let p = &row[(xmin + j) * 3..(xmin + j) * 3 + 3];
                acc[0] += p[0] as i32 * kw;
                acc[1] += p[1] as i32 * kw;
                acc[2] += p[2] as i32 * kw;
            }
            out[x * 3] = clip8(acc[0]);
            out[x * 3 + 1] = clip8(acc[1]);
            out[x * 3 + 2] = clip8(acc[2]);
        }
    }
    RgbImage {
        width: w,
        height: y1 - y0,
        data,
    }
}

/// Vertical pass; `offset` is the first source row held in `img`.
fn vertical(img: &RgbImage, h: usize, offset: usize, c: &Coeffs) -> RgbImage {
    let w = img.width;
    let mut data = vec![0u8; w * h * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; w * 3];
    for (y, ((ymin, n), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
        acc.iter_mut().for_each(|a| *a = half);
        for (j, &kw) in k.iter().enumerate().take(*n) {
            let r = ymin + j - offset;
            let row = &img.data[r * w * 3..(r + 1) * w * 3];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * kw;
            }
        }
        for (o, &a) in data[y * w * 3..(y + 1) * w * 3].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

fn nearest(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    // Pillow's ImagingScaleAffine: positions accumulated by repeated addition.
    let tab = |in_size: usize, out_size: usize| -> Vec<Option<usize>> {
        let a = (in_size as f32) as f64 / out_size as f64;
        let mut xo = a * 0.5;
        (0..out_size)
            .map(|_| {
                let xin = if xo < 0.0 { -1 } else { xo as i64 };
                xo += a;
                (xin >= 0 && (xin as usize) < in_size).then_some(xin as usize)
            })
            .collect()
    };
    let (xs, ys) = (tab(img.width, w), tab(img.height, h));
    let mut data = vec![0u8; w * h * 3];
    for (y, sy) in ys.iter().enumerate() {
        let Some(sy) = sy else { continue };
        for (x, sx) in xs.iter().enumerate() {
            if let Some(sx) = sx {
                let s = (sy * img.width + sx) * 3;
                data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&img.data[s..s + 3]);
            }
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// `PIL.Image.resize((w, h), filter)` of an RGB image. Sizes must be non-zero (a zero-sized
/// input or output gives an empty image).
pub fn resize(img: &RgbImage, w: usize, h: usize, filter: Filter) -> RgbImage {
    if w == 0 || h == 0 || img.width == 0 || img.height == 0 {
        return RgbImage {
            width: w,
            height: h,
            data: vec![0; w * h * 3],
        };
    }
    if (w, h) == (img.width, img.height) {
        return img.clone();
    }
    if filter == Filter::Nearest {
        return nearest(img, w, h);
    }
    let need_h = w != img.width;
    let need_v = h != img.height;
    let cv = precompute(img.height, h, filter);
    // Pillow (13) runs the vertical pass first when the image loses more than twice as many
    // rows as columns (`in_h − h > 2 · (in_w − w)`); each pass rounds to 8 bits, so the order
    // shows in the result.
    let (dx, dy) = (img.width as i64 - w as i64, img.height as i64 - h as i64);
    if need_h && dy > 0 && dy > 2 * dx {
        let ch = precompute(img.width, w, filter);
        let tmp = vertical(img, h, 0, &cv);
        return horizontal(&tmp, w, 0, h, &ch);
    }
    // rows of the source the vertical pass reads
    let first = cv.bounds[0].0;
    let last = cv.bounds[h - 1].0 + cv.bounds[h - 1].1;
    if !need_h {
        return vertical(img, h, 0, &cv);
    }
    let ch = precompute(img.width, w, filter);
    let tmp = horizontal(img, w, first, last, &ch);
    if need_v {
        vertical(&tmp, h, first, &cv)
    } else {
        tmp
    }
}

/// Output size when the shorter side becomes `short`, the longer one scaled and truncated
/// (transformers' `get_resize_output_image_size`, torchvision's `Resize(int)`).
pub fn shortest_edge_size(width: usize, height: usize, short: usize) -> (usize, usize) {
    if width <= height {
        (
            short,
            (short as f64 * height as f64 / width as f64) as usize,
        )
    } else {
        (
            (short as f64 * width as f64 / height as f64) as usize,
            short,
        )
    }
}

/// How a centre crop rounds its offset `(big − small) / 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    /// Rounded down, `(H − h) // 2` (transformers' `center_crop`; also the training crop).
    Transformers,
    /// Rounded to nearest, ties to even, `round((H − h) / 2)` (torchvision's `CenterCrop`).
    Torchvision,
}

/// The centre `cw × ch` window of `img` (offsets rounded as `how` says). A window larger than
/// the image repeats its edge pixels.
pub fn center_crop(img: &RgbImage, cw: usize, ch: usize, how: Crop) -> RgbImage {
    let off = |big: usize, small: usize| -> usize {
        let d = big.saturating_sub(small);
        match how {
            Crop::Transformers => d / 2,
            Crop::Torchvision => (d as f64 / 2.0).round_ties_even() as usize,
        }
    };
    let (x0, y0) = (off(img.width, cw), off(img.height, ch));
    let mut data = Vec::with_capacity(cw * ch * 3);
    for y in 0..ch {
        let row = (y0 + y).min(img.height - 1);
        for x in 0..cw {
            let col = (x0 + x).min(img.width - 1);
            data.extend_from_slice(&img.data[(row * img.width + col) * 3..][..3]);
        }
    }
    RgbImage {
        width: cw,
        height: ch,
        data,
    }
}

/// Resize so the image covers `w × h` (scale `max(w / W, h / H)`, each side rounded to the
/// nearest integer and at least the target), then take the centre `w × h` window with the
/// offset rounded down (`(W' − w) / 2`, [`Crop::Transformers`]). This is the training crop.
pub fn resize_to_fill_center_crop(img: &RgbImage, w: usize, h: usize, filter: Filter) -> RgbImage {
    let scale = (w as f64 / img.width as f64).max(h as f64 / img.height as f64);
    let nw = ((img.width as f64 * scale).round() as usize).max(w);
    let nh = ((img.height as f64 * scale).round() as usize).max(h);
    let r = resize(img, nw, nh, filter);
    center_crop(&r, w, h, Crop::Transformers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> RgbImage {
        let data = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 77]
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn constant_image_stays_constant_with_every_filter() {
        let img = RgbImage {
            width: 13,
            height: 7,
            data: [10u8, 200, 255].repeat(13 * 7),
        };
        for f in [
            Filter::Nearest,
            Filter::Box,
            Filter::Bilinear,
            Filter::Hamming,
            Filter::Bicubic,
            Filter::Lanczos,
        ] {
            for (w, h) in [(5, 3), (29, 17), (13, 20), (1, 1)] {
                let r = resize(&img, w, h, f);
                assert_eq!(r.data, [10u8, 200, 255].repeat(w * h), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn fill_crop_covers_the_target() {
        let img = ramp(40, 20);
        let r = resize_to_fill_center_crop(&img, 16, 16, Filter::Lanczos);
        assert_eq!((r.width, r.height), (16, 16));
        // 40x20 -> 32x16, crop x offset (32-16)/2 = 8: the same as cropping the resized image
        let full = resize(&img, 32, 16, Filter::Lanczos);
        assert_eq!(r, center_crop(&full, 16, 16, Crop::Transformers));
    }

    #[test]
    fn crop_offsets_round_as_documented() {
        let img = ramp(7, 1);
        // (7-4)/2 = 1.5: transformers floor -> 1, torchvision ties-to-even -> 2
        assert_eq!(
            center_crop(&img, 4, 1, Crop::Transformers).data[..3],
            img.data[3..6]
        );
        assert_eq!(
            center_crop(&img, 4, 1, Crop::Torchvision).data[..3],
            img.data[6..9]
        );
    }

    #[test]
    fn shortest_edge_truncates_the_long_side() {
        assert_eq!(shortest_edge_size(640, 427, 224), (335, 224));
        assert_eq!(shortest_edge_size(100, 300, 10), (10, 30));
    }
}
