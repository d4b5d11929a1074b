//! PNG writing (the `png` crate).
//!
//! - [`encode_png_rgb8`] / [`encode_png_grey8`]: deterministic bytes — fixed compression
//!   (fast) and a fixed `Sub` filter on every row, no timestamp or other metadata — so the
//!   same pixels always give the same file (the synthetic data set hashes its files).
//! - [`encode_png_with_text`] / [`write_png_with_text`]: RGB8 with text chunks, one per
//!   `(key, value)`: `tEXt` when the value is ASCII, `iTXt` (UTF-8) otherwise. A1111's
//!   convention stores the prompt and settings under the key `parameters`.
//!   [`write_png_with_text`] writes atomically through `strata_io::atomic`.

use std::path::Path;

use crate::error::ImageError;

type Result<T> = std::result::Result<T, ImageError>;

fn check_len(path: &Path, w: usize, h: usize, per_px: usize, len: usize) -> Result<()> {
    if w == 0 || h == 0 || w > u32::MAX as usize || h > u32::MAX as usize {
        return Err(ImageError::Invalid {
            path: path.to_path_buf(),
            what: format!("cannot write a {w}×{h} PNG (each side must be 1 to 2³²−1)"),
        });
    }
    if len != w * h * per_px {
        return Err(ImageError::Invalid {
            path: path.to_path_buf(),
            what: format!(
                "{len} bytes of pixels for a {w}×{h} image with {per_px} byte(s) per pixel (expected {})",
                w * h * per_px
            ),
        });
    }
    Ok(())
}

fn encode_err(path: &Path) -> impl Fn(png::EncodingError) -> ImageError + '_ {
    move |e| ImageError::Encode {
        path: path.to_path_buf(),
        what: e.to_string(),
    }
}

fn deterministic(
    path: &Path,
    w: usize,
    h: usize,
    color: png::ColorType,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        enc.set_filter(png::FilterType::Sub);
        enc.set_adaptive_filter(png::AdaptiveFilterType::NonAdaptive);
        let mut wr = enc.write_header().map_err(encode_err(path))?;
        wr.write_image_data(data).map_err(encode_err(path))?;
        wr.finish().map_err(encode_err(path))?;
    }
    Ok(out)
}

/// Deterministic RGB8 PNG bytes (`path` only names the file in errors).
pub fn encode_png_rgb8(path: &Path, w: usize, h: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    check_len(path, w, h, 3, rgb.len())?;
    deterministic(path, w, h, png::ColorType::Rgb, rgb)
}

/// Deterministic 8-bit greyscale PNG bytes (e.g. a class-id mask).
pub fn encode_png_grey8(path: &Path, w: usize, h: usize, grey: &[u8]) -> Result<Vec<u8>> {
    check_len(path, w, h, 1, grey.len())?;
    deterministic(path, w, h, png::ColorType::Grayscale, grey)
}

fn write_text_png(
    out: &mut dyn std::io::Write,
    path: &Path,
    rgb: &[u8],
    w: usize,
    h: usize,
    text: &[(&str, String)],
) -> Result<()> {
    let mut enc = png::Encoder::new(out, w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text {
        let r = if v.is_ascii() {
            enc.add_text_chunk(k.to_string(), v.clone())
        } else {
            enc.add_itxt_chunk(k.to_string(), v.clone())
        };
        r.map_err(encode_err(path))?;
    }
    let mut wr = enc.write_header().map_err(encode_err(path))?;
    wr.write_image_data(rgb).map_err(encode_err(path))?;
    wr.finish().map_err(encode_err(path))
}

/// RGB8 PNG bytes with text chunks (`path` only names the file in errors).
pub fn encode_png_with_text(
    path: &Path,
    rgb: &[u8],
    width: usize,
    height: usize,
    text: &[(&str, String)],
) -> Result<Vec<u8>> {
    check_len(path, width, height, 3, rgb.len())?;
    let mut out = Vec::new();
    write_text_png(&mut out, path, rgb, width, height, text)?;
    Ok(out)
}

/// Writes an RGB8 PNG with text chunks to `path` atomically (a temporary file in the same
/// folder, then a rename; missing folders are created).
pub fn write_png_with_text(
    path: &Path,
    rgb: &[u8],
    width: usize,
    height: usize,
    text: &[(&str, String)],
) -> Result<()> {
    let bytes = encode_png_with_text(path, rgb, width, height, text)?;
    strata_io::atomic::write(path, &bytes).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        what: "write the PNG",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_pixels_same_bytes_and_readable() {
        let px: Vec<u8> = (0..6 * 4 * 3).map(|i| (i * 7) as u8).collect();
        let a = encode_png_rgb8(Path::new("a.png"), 6, 4, &px).unwrap();
        let b = encode_png_rgb8(Path::new("b.png"), 6, 4, &px).unwrap();
        assert_eq!(a, b);
        let img = crate::decode_rgb8(Path::new("a.png"), &a, &Default::default()).unwrap();
        assert_eq!((img.width, img.height, img.data), (6, 4, px));
    }

    #[test]
    fn wrong_length_is_an_error_naming_the_file() {
        let e = encode_png_grey8(Path::new("m.png"), 4, 4, &[0; 15]).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("m.png: 15 bytes"), "{s}");
    }
}
