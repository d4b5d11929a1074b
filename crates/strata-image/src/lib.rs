//! strata-image: the one image layer of the workspace.
//!
//! - [`decode`]: any PNG, JPEG, TIFF/GeoTIFF, WebP or BMP file (format from its magic bytes,
//!   never its extension) to an 8-bit RGB [`RgbImage`], with the declared size checked
//!   against [`Limits`] before any pixel buffer is allocated.
//! - [`encode`]: PNG writing — with `tEXt`/`iTXt` chunks (A1111's `parameters`), atomic, and a
//!   deterministic RGB8/grey8 encoder whose bytes depend only on the pixels.
//! - [`resize`]: Pillow's `Image.resize` reproduced bit for bit (its fixed-point separable
//!   filters), the centre-crop conventions of transformers and torchvision, and the
//!   "resize to fill, then centre crop" used for training.
//! - [`RgbImage::to_chw_f32`] / [`RgbImage::from_chw_f32`]: the planar `[−1, 1]` layout the
//!   VAE reads and writes.
//!
//! Crate graph: strata-image depends on strata-raster for TIFF (so the GeoTIFF tiles
//! `strata prepare` writes and plain TIFFs go through one reader); strata-raster therefore
//! cannot use this crate and keeps its own staged tile writers and its value-preserving
//! PNG/JPEG readers for the prepare stage (which stretches raw values, not RGB8).

pub mod decode;
pub mod encode;
pub mod error;
pub mod resize;

pub use decode::{
    decode_rgb8, has_image_extension, read_rgb8, read_rgb8_with_limits, Format, Limits,
    IMAGE_EXTENSIONS,
};
pub use encode::{encode_png_grey8, encode_png_rgb8, encode_png_with_text, write_png_with_text};
pub use error::ImageError;
pub use resize::{
    center_crop, resize, resize_to_fill_center_crop, shortest_edge_size, Crop, Filter,
};

/// `error: cause: cause…` in one line: an error's message followed by each `source()`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An 8-bit RGB image: `data` is interleaved RGB, row-major, `width * height * 3` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// An image from interleaved RGB8 bytes; `None` when `data` is not `width * height * 3`
    /// bytes long.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height * 3).then_some(RgbImage {
            width,
            height,
            data,
        })
    }

    /// The pixel at `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Planar `3 × height × width` f32 values in `[−1, 1]` (`v / 127.5 − 1`), the layout of a
    /// `(1, 3, H, W)` tensor as the VAE reads it.
    pub fn to_chw_f32(&self) -> Vec<f32> {
        let n = self.width * self.height;
        let mut out = vec![0f32; 3 * n];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * n + i] = px[c] as f32 / 127.5 - 1.0;
            }
        }
        out
    }

    /// The inverse of [`to_chw_f32`](Self::to_chw_f32): planar `3 × height × width` values in
    /// `[−1, 1]` to RGB8 (`round((v + 1) · 127.5)`, clamped to 0..=255; NaN becomes 0).
    /// `None` when `chw` is not `3 * width * height` long.
    pub fn from_chw_f32(width: usize, height: usize, chw: &[f32]) -> Option<Self> {
        let n = width * height;
        if chw.len() != 3 * n {
            return None;
        }
        let mut data = vec![0u8; 3 * n];
        for i in 0..n {
            for c in 0..3 {
                let v = ((chw[c * n + i] + 1.0) * 127.5).round();
                data[i * 3 + c] = if v.is_nan() {
                    0
                } else {
                    v.clamp(0.0, 255.0) as u8
                };
            }
        }
        Some(RgbImage {
            width,
            height,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chw_round_trip_is_exact_for_every_level() {
        let data: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
        let img = RgbImage::new(16, 16, data).unwrap();
        let chw = img.to_chw_f32();
        assert_eq!(chw[0], -1.0);
        assert_eq!(chw[256], 1.0); // green plane starts at 255
        assert!(chw.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(RgbImage::from_chw_f32(16, 16, &chw).unwrap(), img);
    }

    #[test]
    fn from_chw_clamps_and_checks_length() {
        let img = RgbImage::from_chw_f32(1, 1, &[-3.0, 2.0, f32::NAN]).unwrap();
        assert_eq!(img.data, vec![0, 255, 0]);
        assert!(RgbImage::from_chw_f32(2, 1, &[0.0; 3]).is_none());
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_none());
    }
}
