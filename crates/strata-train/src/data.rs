//! Training data: the train split of a strata dataset (`metadata.jsonl` + images) or a kohya
//! dataset TOML (image folders with sidecar caption files, see [`kohya`]), images
//! resized (shorter side, bilinear) and centre-cropped to the model resolution, VAE-encoded
//! once to latents (posterior mean × the VAE's scaling factor, 0.18215 for SD-1.5).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use strata_caption::dataset::Split;
use strata_caption::MetadataRecord;
use strata_models::segments::SegmentTexts;
use strata_models::vae::AutoencoderKL;

use crate::error::{ce, Result, TrainError};

pub mod kohya;

/// One training image's captions.
#[derive(Debug, Clone)]
pub struct Item {
    pub file_name: String,
    pub segments: SegmentTexts,
    pub flat: String,
}

/// The encoded train split.
pub struct Dataset {
    pub dir: PathBuf,
    pub items: Vec<Item>,
    /// `(N, C, h, w)` scaled latents.
    pub latents: Tensor,
    /// Images skipped because they could not be read: `(file, why)`.
    pub skipped: Vec<(String, String)>,
}

/// Bilinear resize of a CHW f32 image (half-pixel centres, no antialias) so its shorter side
/// is `res`, then a centre crop to `res × res`.
pub fn resize_center_crop(img: &[f32], c: usize, h: usize, w: usize, res: usize) -> Vec<f32> {
    let scale = res as f64 / h.min(w) as f64;
    let (nh, nw) = (
        ((h as f64 * scale).round() as usize).max(res),
        ((w as f64 * scale).round() as usize).max(res),
    );
    let (top, left) = ((nh - res) / 2, (nw - res) / 2);
    let mut out = vec![0f32; c * res * res];
    let sy = h as f64 / nh as f64;
    let sx = w as f64 / nw as f64;
    for y in 0..res {
        let fy = (((y + top) as f64 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f64);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(h - 1);
        let wy = (fy - y0 as f64) as f32;
        for x in 0..res {
            let fx = (((x + left) as f64 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f64);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(w - 1);
            let wx = (fx - x0 as f64) as f32;
            for ch in 0..c {
                let p = &img[ch * h * w..];
                let a = p[y0 * w + x0] * (1.0 - wx) + p[y0 * w + x1] * wx;
                let b = p[y1 * w + x0] * (1.0 - wx) + p[y1 * w + x1] * wx;
                out[ch * res * res + y * res + x] = a * (1.0 - wy) + b * wy;
            }
        }
    }
    out
}

/// The training records of `data` with their repeat counts, and the images already known
/// to be unusable `(file, why)`. `data` is a strata dataset folder (the train split: records
/// without a split count as train, `test` records are never used; file names relative to
/// the folder) or a kohya dataset TOML ([`kohya`]; file names are the images' paths).
#[allow(clippy::type_complexity)]
pub fn read_train_records(
    data: &Path,
) -> Result<(Vec<(MetadataRecord, usize)>, Vec<(String, String)>)> {
    if kohya::is_dataset_toml(data) {
        let cfg = kohya::read_dataset_config(data)?;
        return kohya::records(&cfg);
    }
    let records = strata_caption::dataset::read_dataset(data).map_err(|e| TrainError::Dataset {
        path: data.to_path_buf(),
        what: crate::error::chain(&e),
    })?;
    let n_test = records
        .iter()
        .filter(|r| r.split == Some(Split::Test))
        .count();
    let train: Vec<_> = records
        .into_iter()
        .filter(|r| r.split != Some(Split::Test))
        .map(|r| (r, 1))
        .collect();
    if train.is_empty() {
        return Err(TrainError::Dataset {
            path: data.join("metadata.jsonl"),
            what: format!("no training records ({n_test} test records); check the split column"),
        });
    }
    Ok((train, vec![]))
}

/// Reads the training records of `dir` ([`read_train_records`]: a dataset folder or a kohya
/// dataset TOML), encodes the images with `vae` at `res × res` in batches of `batch`; an
/// image repeated N times (kohya's `num_repeats`) is encoded once and appears N times.
/// Unreadable images are skipped and listed; no readable image is an error.
pub fn load(
    dir: &Path,
    vae: &AutoencoderKL,
    res: usize,
    batch: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Dataset> {
    let (train, mut skipped) = read_train_records(dir)?;
    let mut items = vec![];
    let mut repeats = vec![];
    let mut pixels: Vec<f32> = vec![];
    for (r, n) in &train {
        let p = dir_of(dir).join(&r.file_name);
        match strata_models::pipeline::read_png_image(&p, &Device::Cpu) {
            Ok(t) => {
                let (_, c, h, w) = t.dims4().map_err(ce("image shape"))?;
                let v = t
                    .flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .map_err(ce("image data"))?;
                pixels.extend(resize_center_crop(&v, c, h, w, res));
                let segments = SegmentTexts::new(&r.scene, &r.relation, &r.elements);
                let flat = if r.text.trim().is_empty() {
                    segments.joined()
                } else {
                    r.text.clone()
                };
                items.push(Item {
                    file_name: r.file_name.clone(),
                    segments,
                    flat,
                });
                repeats.push(*n);
            }
            Err(e) => skipped.push((r.file_name.clone(), e)),
        }
    }
    if items.is_empty() {
        return Err(TrainError::Dataset {
            path: dir.to_path_buf(),
            what: format!(
                "none of the {} training images could be read; first error: {}",
                train.len() + skipped.len(),
                skipped.first().map(|s| s.1.as_str()).unwrap_or("-")
            ),
        });
    }
    let n = items.len();
    let all = Tensor::from_vec(pixels, (n, 3, res, res), device)
        .map_err(ce("image batch"))?
        .to_dtype(vae_dtype(vae))
        .map_err(ce("image dtype"))?;
    let mut lat = vec![];
    let mut i = 0;
    while i < n {
        let k = batch.max(1).min(n - i);
        let x = all.narrow(0, i, k).map_err(ce("image batch"))?;
        lat.push(
            vae.encode(&x, None)
                .map_err(ce("VAE encoding of the training images"))?,
        );
        i += k;
        progress(i, n);
    }
    let mut latents = Tensor::cat(&lat, 0)
        .map_err(ce("latents"))?
        .to_dtype(candle_core::DType::F32)
        .map_err(ce("latents"))?;
    if repeats.iter().any(|&r| r != 1) {
        let idx: Vec<u32> = repeats
            .iter()
            .enumerate()
            .flat_map(|(i, &r)| std::iter::repeat_n(i as u32, r))
            .collect();
        items = idx.iter().map(|&i| items[i as usize].clone()).collect();
        let idx = Tensor::new(idx.as_slice(), latents.device()).map_err(ce("repeats"))?;
        latents = latents.index_select(&idx, 0).map_err(ce("repeats"))?;
    }
    Ok(Dataset {
        dir: dir.to_path_buf(),
        items,
        latents,
        skipped,
    })
}

/// The folder record file names are relative to: the dataset folder, or none for a kohya
/// TOML (its records hold the images' own paths).
pub fn dir_of(data: &Path) -> &Path {
    if kohya::is_dataset_toml(data) {
        Path::new("")
    } else {
        data
    }
}

fn vae_dtype(vae: &AutoencoderKL) -> candle_core::DType {
    let _ = vae;
    candle_core::DType::F32
}
