//! Image resizing as Pillow's `Image.resize` does it (separable filters whose support grows
//! with the shrink factor — "antialiased" — horizontal pass first, 8-bit rounding after each
//! pass), which is what CLIP's image processor (bicubic) and torchvision's `Resize` on PIL
//! images (bilinear) use; plus the two centre-crop conventions.

use crate::images::Rgb;

/// Pillow's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }
    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => (1.0 - x).max(0.0),
            Filter::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

/// `(first source index, weights)` for each output position.
fn coeffs(in_size: usize, out_size: usize, f: Filter) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let fscale = scale.max(1.0);
    let support = f.support() * fscale;
    (0..out_size)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| f.eval((x as f64 - center + 0.5) / fscale))
                .collect();
            let s: f64 = w.iter().sum();
            if s != 0.0 {
                w.iter_mut().for_each(|v| *v /= s);
            }
            (xmin, w)
        })
        .collect()
}

/// Resize to `w`×`h` as `PIL.Image.resize((w, h), filter)` on an RGB image.
pub fn resize_pil(img: &Rgb, w: usize, h: usize, f: Filter) -> Rgb {
    let round = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    // horizontal pass
    let mut tmp = img.clone();
    if w != img.width {
        let cx = coeffs(img.width, w, f);
        let mut data = vec![0u8; w * img.height * 3];
        for y in 0..img.height {
            for (x, (x0, ws)) in cx.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = 0.0;
                    for (k, wt) in ws.iter().enumerate() {
                        acc += wt * img.data[(y * img.width + x0 + k) * 3 + c] as f64;
                    }
                    data[(y * w + x) * 3 + c] = round(acc);
                }
            }
        }
        tmp = Rgb {
            width: w,
            height: img.height,
            data,
        };
    }
    if h == tmp.height {
        return tmp;
    }
    let cy = coeffs(tmp.height, h, f);
    let mut data = vec![0u8; w * h * 3];
    for (y, (y0, ws)) in cy.iter().enumerate() {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, wt) in ws.iter().enumerate() {
                    acc += wt * tmp.data[((y0 + k) * w + x) * 3 + c] as f64;
                }
                data[(y * w + x) * 3 + c] = round(acc);
            }
        }
    }
    Rgb {
        width: w,
        height: h,
        data,
    }
}

/// Output size when the shorter side becomes `short` (the longer one is truncated, as
/// transformers' `get_resize_output_image_size` and torchvision's `Resize(int)` do).
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

/// Centre crop offsets: transformers rounds down (`(H − h) // 2`), torchvision rounds to
/// nearest (`round((H − h) / 2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    Transformers,
    Torchvision,
}

pub fn center_crop(img: &Rgb, cw: usize, ch: usize, how: Crop) -> Rgb {
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
    Rgb {
        width: cw,
        height: ch,
        data,
    }
}

/// A batch of images as N×3×H×W f32, each channel `(v/255 − mean[c]) / std[c]`.
pub fn to_tensor(
    imgs: &[Rgb],
    mean: [f32; 3],
    std: [f32; 3],
    device: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    let (w, h) = (imgs[0].width, imgs[0].height);
    let mut v = Vec::with_capacity(imgs.len() * 3 * w * h);
    for img in imgs {
        for c in 0..3 {
            for p in 0..w * h {
                v.push((img.data[p * 3 + c] as f32 / 255.0 - mean[c]) / std[c]);
            }
        }
    }
    candle_core::Tensor::from_vec(v, (imgs.len(), 3, h, w), device)
}
