//! Image folders: PNG reading (RGB/RGBA/grey, 8 or 16 bit), resizing and pairing by name.

use std::path::{Path, PathBuf};

use crate::error::EvalError;

/// An 8-bit RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Read a PNG as 8-bit RGB (grey is replicated, alpha dropped, 16-bit scaled).
pub fn read_png(path: &Path) -> Result<Rgb, EvalError> {
    let bad = |what: String| EvalError::BadImage {
        path: path.to_path_buf(),
        what,
    };
    let file = std::fs::File::open(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        what: "opening the image".into(),
        source,
    })?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| {
        bad(format!(
            "not a readable PNG ({e}); only PNG images are evaluated"
        ))
    })?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("PNG data is damaged ({e})")))?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    let ch = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(bad("indexed PNG was not expanded".into())),
    };
    let mut data = Vec::with_capacity(w * h * 3);
    for px in buf.chunks_exact(ch) {
        match ch {
            1 | 2 => data.extend_from_slice(&[px[0], px[0], px[0]]),
            _ => data.extend_from_slice(&px[..3]),
        }
    }
    Ok(Rgb {
        width: w,
        height: h,
        data,
    })
}

/// Resize with area averaging when shrinking and bilinear sampling when enlarging
/// (half-pixel centres), per channel, in f32.
pub fn resize(img: &Rgb, w: usize, h: usize) -> Rgb {
    if img.width == w && img.height == h {
        return img.clone();
    }
    let mut out = vec![0u8; w * h * 3];
    let sx = img.width as f32 / w as f32;
    let sy = img.height as f32 / h as f32;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            if sx >= 1.0 && sy >= 1.0 {
                // box filter over the source footprint
                let x0 = (x as f32 * sx) as usize;
                let x1 = (((x + 1) as f32 * sx).ceil() as usize)
                    .min(img.width)
                    .max(x0 + 1);
                let y0 = (y as f32 * sy) as usize;
                let y1 = (((y + 1) as f32 * sy).ceil() as usize)
                    .min(img.height)
                    .max(y0 + 1);
                let n = ((x1 - x0) * (y1 - y0)) as f32;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        let p = &img.data[(yy * img.width + xx) * 3..][..3];
                        for c in 0..3 {
                            acc[c] += p[c] as f32;
                        }
                    }
                }
                for a in &mut acc {
                    *a /= n;
                }
            } else {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (img.width - 1) as f32);
                let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (img.height - 1) as f32);
                let (x0, y0) = (fx as usize, fy as usize);
                let (x1, y1) = ((x0 + 1).min(img.width - 1), (y0 + 1).min(img.height - 1));
                let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
                let p =
                    |xx: usize, yy: usize, c: usize| img.data[(yy * img.width + xx) * 3 + c] as f32;
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = (p(x0, y0, c) * (1.0 - tx) + p(x1, y0, c) * tx) * (1.0 - ty)
                        + (p(x0, y1, c) * (1.0 - tx) + p(x1, y1, c) * tx) * ty;
                }
            }
            for c in 0..3 {
                out[(y * w + x) * 3 + c] = acc[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb {
        width: w,
        height: h,
        data: out,
    }
}

/// Every `.png` under `dir` (recursively), as paths relative to `dir` with `/` separators,
/// sorted. Files named `*.tmp` and the `masks/` folder are skipped.
pub fn list_pngs(dir: &Path) -> Result<Vec<String>, EvalError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), EvalError> {
        let rd = std::fs::read_dir(dir).map_err(|source| EvalError::Io {
            path: dir.to_path_buf(),
            what: "listing the image folder".into(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| EvalError::Io {
                path: dir.to_path_buf(),
                what: "listing the image folder".into(),
                source,
            })?;
            let p = entry.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "masks") && dir == root {
                    continue;
                }
                walk(root, &p, out)?;
            } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// The key two folders are paired on: the relative path without the `images/` prefix.
pub fn pair_key(rel: &str) -> String {
    rel.strip_prefix("images/").unwrap_or(rel).to_string()
}

/// `dir.join(rel)`.
pub fn join(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}
