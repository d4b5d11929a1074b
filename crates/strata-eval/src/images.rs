//! Image folders: reading (every format strata-image reads: PNG, JPEG, TIFF, WebP, BMP, as
//! RGB8), listing and pairing by name, and the batch-to-tensor step of the preprocessing.
//! Resizing and centre crops are strata-image's (Pillow's arithmetic).

use std::path::{Path, PathBuf};

use crate::error::EvalError;

/// An 8-bit RGB image.
pub use strata_image::RgbImage as Rgb;

/// Reads an image as 8-bit RGB (grey replicated, alpha dropped, 16-bit scaled).
pub fn read_image(path: &Path) -> Result<Rgb, EvalError> {
    strata_image::read_rgb8(path).map_err(|e| match e {
        strata_image::ImageError::Io { source, what, .. } => EvalError::Io {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        },
        e => EvalError::BadImage {
            path: path.to_path_buf(),
            what: {
                let s = strata_image::error_chain(&e);
                let prefix = format!("{}: ", path.display());
                s.strip_prefix(&prefix).map(str::to_string).unwrap_or(s)
            },
        },
    })
}

/// Every image file (extension in [`strata_image::IMAGE_EXTENSIONS`], any case) under `dir`
/// (recursively), as paths relative to `dir` with `/` separators, sorted. Files named
/// `*.tmp` and the top-level `masks/` folder are skipped.
pub fn list_images(dir: &Path) -> Result<Vec<String>, EvalError> {
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
            } else if strata_image::has_image_extension(&p) {
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

/// The key two folders are paired on: the relative path without the `images/` prefix and
/// without an image extension (so `images/a.jpg` pairs with `a.png`).
pub fn pair_key(rel: &str) -> String {
    let rel = rel.strip_prefix("images/").unwrap_or(rel);
    if strata_image::has_image_extension(Path::new(rel)) {
        if let Some((stem, _)) = rel.rsplit_once('.') {
            return stem.to_string();
        }
    }
    rel.to_string()
}

/// `dir.join(rel)`.
pub fn join(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_takes_every_format_and_skips_tmp_and_masks() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "a.png",
            "b.JPG",
            "c.jpeg",
            "d.tif",
            "e.tiff",
            "f.webp",
            "g.bmp",
            "h.png.tmp",
            "i.txt",
            "masks/m.png",
            "sub/j.png",
            "sub/masks/k.png",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(
            list_images(d.path()).unwrap(),
            [
                "a.png",
                "b.JPG",
                "c.jpeg",
                "d.tif",
                "e.tiff",
                "f.webp",
                "g.bmp",
                "sub/j.png",
                "sub/masks/k.png"
            ]
        );
    }

    #[test]
    fn pairing_ignores_the_images_prefix_and_the_extension() {
        assert_eq!(pair_key("images/park/p_1.jpg"), "park/p_1");
        assert_eq!(pair_key("park/p_1.png"), "park/p_1");
        assert_eq!(pair_key("notes.v2"), "notes.v2");
    }
}
