//! Training data, streamed: the train split of a strata dataset (`metadata.jsonl` + images)
//! or a kohya dataset TOML (image folders with sidecar caption files, see [`kohya`]).
//!
//! [`scan`] reads the records and each image's header (size) once at the start; only this
//! per-item metadata (captions, file names, sizes, repeats) is held for the whole run.
//! Unreadable images are skipped and listed there. Pixels are decoded by [`decode_item`] on
//! worker threads a few micro-batches ahead of the step that needs them ([`prefetch`],
//! bounded) and VAE-encoded at the step on the training device, one image at a time
//! (posterior mean × the VAE's scaling factor, 0.18215 for SD-1.5). With `--cache-latents`
//! the latents are kept on disk ([`cache`]) and the workers read them instead.
//!
//! Images are resized to fill their target (`resolution²`, or their aspect-ratio bucket,
//! [`bucket`]) and centre-cropped. Which items form micro-batch `k` is [`sampler`]'s pure
//! function of the seed and `k`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use strata_caption::dataset::Split;
use strata_caption::MetadataRecord;
use strata_models::segments::SegmentTexts;
use strata_models::vae::AutoencoderKL;

use crate::error::{ce, Result, TrainError};

pub mod bucket;
pub mod cache;
pub mod kohya;
pub mod prefetch;
pub mod sampler;

use bucket::BucketOptions;
use cache::{CachedLatent, FileStamp, LatentCache};
use prefetch::Prefetch;
use sampler::Sampler;

/// Names how [`decode_item`] turns a file into pixels; part of every latent-cache key, so
/// changing the decoder or the resampling (change this string with it) never reuses latents
/// made the old way.
pub const DECODE_VERSION: &str = "strata-image-rgb8/pillow-lanczos-fill-crop/v1";

/// One training item (an image counted once per repeat): its captions and its image.
#[derive(Debug, Clone)]
pub struct Item {
    pub file_name: String,
    pub segments: SegmentTexts,
    pub flat: String,
    /// Index into [`Dataset::images`].
    pub image: usize,
}

/// One image file, as the start-up scan found it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub file_name: String,
    pub path: PathBuf,
    /// Size of the file's pixels.
    pub width: usize,
    pub height: usize,
    /// Size it is trained at (`resolution²`, or its bucket's).
    pub target: (usize, usize),
    /// The file's path, length and modification time when scanned (latent-cache key).
    pub stamp: FileStamp,
}

/// The train split's metadata; no pixels or latents.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    /// Items, repeats expanded (kohya's `num_repeats`: an image repeated N times appears N
    /// times in a row).
    pub items: Vec<Item>,
    pub images: Vec<ImageInfo>,
    /// With bucketing: every bucket `(width, height)`; empty otherwise.
    pub buckets: Vec<(usize, usize)>,
    /// Images skipped because they could not be read: `(file, why)`.
    pub skipped: Vec<(String, String)>,
}

/// How [`scan`] sizes the images.
#[derive(Debug, Clone, Copy)]
pub struct DataOptions {
    pub resolution: usize,
    /// Aspect-ratio bucketing; `None` trains every image at `resolution²`.
    pub bucket: Option<BucketOptions>,
}

impl Dataset {
    /// Items grouped by bucket (empty buckets left out), for [`Sampler::buckets`]; `None`
    /// without bucketing.
    pub fn bucket_groups(&self) -> Option<Vec<Vec<usize>>> {
        if self.buckets.is_empty() {
            return None;
        }
        let mut g: Vec<Vec<usize>> = vec![vec![]; self.buckets.len()];
        for (i, it) in self.items.iter().enumerate() {
            let t = self.images[it.image].target;
            let b = self
                .buckets
                .iter()
                .position(|&x| x == t)
                .expect("bucket of a target");
            g[b].push(i);
        }
        Some(g.into_iter().filter(|v| !v.is_empty()).collect())
    }

    /// The default latent-cache folder: `.strata-latent-cache/` in the dataset folder, or
    /// beside a kohya dataset TOML.
    pub fn default_cache_dir(&self) -> PathBuf {
        if kohya::is_dataset_toml(&self.dir) {
            self.dir
                .parent()
                .unwrap_or(Path::new("."))
                .join(".strata-latent-cache")
        } else {
            self.dir.join(".strata-latent-cache")
        }
    }
}

/// Reads an image file and returns its pixels resized to fill `width × height` and
/// centre-cropped: CHW (3 channels) f32 in [−1, 1]. The one place that decodes and resizes
/// training images; change [`DECODE_VERSION`] with it.
pub fn decode_item(
    path: &Path,
    width: usize,
    height: usize,
) -> std::result::Result<Vec<f32>, String> {
    let img = strata_image::read_rgb8(path).map_err(|e| strata_image::error_chain(&e))?;
    Ok(
        strata_image::resize_to_fill_center_crop(
            &img,
            width,
            height,
            strata_image::Filter::Lanczos,
        )
        .to_chw_f32(),
    )
}

/// The pixel size `(width, height)` of an image file, checked by decoding it whole (pixels
/// dropped): the start-up check that catches missing, unsupported and damaged files (a JPEG
/// truncated after its header included) before the first step, so they are skipped and
/// listed instead of stopping a run half-way.
pub fn probe_item(path: &Path) -> std::result::Result<(usize, usize), String> {
    let img = strata_image::read_rgb8(path).map_err(|e| strata_image::error_chain(&e))?;
    if img.width == 0 || img.height == 0 {
        return Err(format!("{}: the image is empty", path.display()));
    }
    Ok((img.width, img.height))
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

/// Refuses an image that resolves (through symbolic links) to a file outside the dataset
/// folder: a dataset handed to a training run should not make it read, cache and learn from
/// files elsewhere on the machine. `root` is the dataset folder, canonicalised once by the
/// caller (`None` when it cannot be). A missing file passes here and fails when probed.
fn inside_dataset(root: Option<&Path>, image: &Path) -> std::result::Result<(), String> {
    let (Some(root), Ok(real)) = (root, image.canonicalize()) else {
        return Ok(());
    };
    if real.starts_with(root) {
        Ok(())
    } else {
        Err(format!(
            "resolves to {}, outside the dataset folder {}; copy the image into the dataset instead of linking it",
            real.display(),
            root.display()
        ))
    }
}

/// Reads the training records of `data` ([`read_train_records`]: a dataset folder or a kohya
/// dataset TOML) and checks every image's header ([`probe_item`]); unreadable images are
/// skipped and listed, no readable image is an error. Each image gets its training size:
/// `resolution²`, or with bucketing the bucket nearest its aspect ratio. No pixels are read.
pub fn scan(data: &Path, opts: &DataOptions) -> Result<Dataset> {
    let (train, mut skipped) = read_train_records(data)?;
    let buckets = match &opts.bucket {
        Some(b) => bucket::bucket_resolutions(opts.resolution, b),
        None => vec![],
    };
    let mut items = vec![];
    let mut images = vec![];
    let root = dir_of(data).canonicalize().ok();
    for (r, n) in &train {
        let p = dir_of(data).join(&r.file_name);
        let probed = inside_dataset(root.as_deref(), &p)
            .and_then(|_| probe_item(&p))
            .and_then(|wh| Ok((wh, FileStamp::of(&p).map_err(|e| e.to_string())?)));
        match probed {
            Ok(((w, h), stamp)) => {
                let target = if buckets.is_empty() {
                    (opts.resolution, opts.resolution)
                } else {
                    buckets[bucket::nearest_bucket(&buckets, w, h)]
                };
                let segments = SegmentTexts::new(&r.scene, &r.relation, &r.elements);
                let flat = if r.text.trim().is_empty() {
                    segments.joined()
                } else {
                    r.text.clone()
                };
                for _ in 0..*n {
                    items.push(Item {
                        file_name: r.file_name.clone(),
                        segments: segments.clone(),
                        flat: flat.clone(),
                        image: images.len(),
                    });
                }
                images.push(ImageInfo {
                    file_name: r.file_name.clone(),
                    path: p,
                    width: w,
                    height: h,
                    target,
                    stamp,
                });
            }
            Err(e) => skipped.push((r.file_name.clone(), e)),
        }
    }
    if images.is_empty() {
        return Err(TrainError::Dataset {
            path: data.to_path_buf(),
            what: format!(
                "none of the {} training images could be read; first error: {}",
                train.len() + skipped.len(),
                skipped
                    .first()
                    .map(|(name, e)| if e.contains(name.as_str()) {
                        e.clone()
                    } else {
                        format!("{name}: {e}")
                    })
                    .unwrap_or_else(|| "-".into())
            ),
        });
    }
    Ok(Dataset {
        dir: data.to_path_buf(),
        items,
        images,
        buckets,
        skipped,
    })
}

/// Worker threads and look-ahead of a [`LatentStream`].
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Decoding threads.
    pub workers: usize,
    /// Micro-batches decoded ahead of the step at most (the prefetch bound).
    pub depth: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            workers: cores.clamp(1, 4),
            depth: 4,
        }
    }
}

/// What a worker hands over for one item.
enum Fetched {
    /// Decoded CHW pixels at the item's target size, to encode at the step.
    Pixels(Vec<f32>),
    /// A latent read from the cache.
    Latent(CachedLatent),
}

type FetchedBatch = std::result::Result<Vec<Fetched>, TrainError>;

/// Latents of micro-batches, streamed: worker threads decode the images (or read cached
/// latents) of the next micro-batches while the current one trains, and [`Self::batch`]
/// encodes what is not cached on the training device.
pub struct LatentStream {
    sampler: Arc<Sampler>,
    images: Arc<Vec<ImageInfo>>,
    item_image: Arc<Vec<usize>>,
    cache: Option<LatentCache>,
    queue: Prefetch<FetchedBatch>,
}

impl LatentStream {
    /// A stream over `data` drawing batches from `sampler`, reading latents from `cache`
    /// when given; look-ahead starts at micro-batch `start`.
    pub fn new(
        data: &Dataset,
        sampler: Sampler,
        cache: Option<LatentCache>,
        opts: StreamOptions,
        start: u64,
    ) -> Self {
        let sampler = Arc::new(sampler);
        let images = Arc::new(data.images.clone());
        let item_image: Arc<Vec<usize>> = Arc::new(data.items.iter().map(|i| i.image).collect());
        let (s, im, ii, c) = (
            sampler.clone(),
            images.clone(),
            item_image.clone(),
            cache.clone(),
        );
        let produce = Arc::new(move |k: u64| -> FetchedBatch {
            s.batch(k)
                .iter()
                .map(|&i| fetch(&im[ii[i]], c.as_ref()))
                .collect()
        });
        Self {
            queue: Prefetch::new(opts.workers, opts.depth, start, produce),
            sampler,
            images,
            item_image,
            cache,
        }
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The item indices of micro-batch `k` and their latents `(B, C, h, w)` (f32, on
    /// `device`). Images not in the cache are encoded here, one at a time, and stored in the
    /// cache when there is one.
    pub fn batch(
        &self,
        k: u64,
        vae: &AutoencoderKL,
        device: &Device,
    ) -> Result<(Vec<usize>, Tensor)> {
        let idx = self.sampler.batch(k);
        let fetched = self.queue.get(k)?;
        let mut lat = Vec::with_capacity(idx.len());
        for (&i, f) in idx.iter().zip(fetched) {
            let img = &self.images[self.item_image[i]];
            lat.push(match f {
                Fetched::Latent(l) => Tensor::from_vec(l.data, l.shape, device)
                    .and_then(|t| t.unsqueeze(0))
                    .map_err(ce("cached latent"))?,
                Fetched::Pixels(px) => {
                    let t = encode_item(vae, px, img.target, device)?;
                    if let Some(c) = &self.cache {
                        store(c, img, &t)?;
                    }
                    t
                }
            });
        }
        let x0 = Tensor::cat(&lat, 0).map_err(ce("batch latents"))?;
        Ok((idx, x0))
    }
}

/// Reads one item for a worker: its cached latent when there is one, else its pixels.
fn fetch(img: &ImageInfo, cache: Option<&LatentCache>) -> std::result::Result<Fetched, TrainError> {
    if let Some(c) = cache {
        if let Some(l) = c.read(&c.key(&img.stamp, img.target.0, img.target.1)) {
            return Ok(Fetched::Latent(l));
        }
    }
    decode_item(&img.path, img.target.0, img.target.1)
        .map(Fetched::Pixels)
        .map_err(|e| decode_error(img, e))
}

fn decode_error(img: &ImageInfo, e: String) -> TrainError {
    TrainError::Dataset {
        path: img.path.clone(),
        what: format!(
            "could not be decoded during training although its header was readable at the start ({e}); fix or remove the image, then continue with --resume"
        ),
    }
}

/// Scaled posterior mean `(1, C, h, w)` (f32) of one image's pixels.
fn encode_item(
    vae: &AutoencoderKL,
    px: Vec<f32>,
    (w, h): (usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let x = Tensor::from_vec(px, (1, 3, h, w), device).map_err(ce("image"))?;
    vae.encode(&x, None)
        .and_then(|z| z.to_dtype(DType::F32))
        .map_err(ce("VAE encoding of a training image"))
}

fn store(c: &LatentCache, img: &ImageInfo, t: &Tensor) -> Result<()> {
    let (_, ch, h, w) = t.dims4().map_err(ce("latent shape"))?;
    let data = t
        .flatten_all()
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(ce("latent"))?;
    let key = c.key(&img.stamp, img.target.0, img.target.1);
    c.write(
        &key,
        &CachedLatent {
            shape: (ch, h, w),
            data,
        },
    )
    .map_err(|source| TrainError::Io {
        path: c.path(&key),
        what: "writing a cached latent",
        source,
    })?;
    Ok(())
}

/// The VAE weights file of a model (the single file, or `vae/` of a diffusers folder), whose
/// sha256 keys the latent cache.
pub fn vae_weights_file(model: &Path) -> Option<PathBuf> {
    if model.is_file() {
        return Some(model.to_path_buf());
    }
    strata_models::loading::weights_file(&model.join("vae"), "diffusion_pytorch_model", false).ok()
}

/// Opens the latent cache in `dir` for the VAE of `model` (hashing its weights file).
pub fn open_cache(dir: &Path, model: &Path) -> Result<LatentCache> {
    let f = vae_weights_file(model).ok_or_else(|| TrainError::Config {
        field: "cache-latents".into(),
        what: format!(
            "no VAE weights file found in {} to key the latent cache with",
            model.display()
        ),
    })?;
    let vae_hash = crate::trainer::sha256_file(&f).map_err(|source| TrainError::Io {
        path: f.clone(),
        what: "hashing the VAE weights for the latent cache",
        source,
    })?;
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
        path: dir.to_path_buf(),
        what: "creating the latent cache folder",
        source,
    })?;
    Ok(LatentCache {
        dir: dir.to_path_buf(),
        vae_hash,
    })
}

/// Fills `cache` with the latents of every image of `data` not yet in it (decoded on worker
/// threads, encoded one at a time on `device`); `progress(done, todo)` after each. Returns
/// how many were encoded.
pub fn fill_cache(
    data: &Dataset,
    cache: &LatentCache,
    vae: &AutoencoderKL,
    device: &Device,
    opts: StreamOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let todo: Vec<ImageInfo> = data
        .images
        .iter()
        .filter(|im| {
            !cache
                .path(&cache.key(&im.stamp, im.target.0, im.target.1))
                .is_file()
        })
        .cloned()
        .collect();
    let n = todo.len();
    if n == 0 {
        return Ok(0);
    }
    let todo = Arc::new(todo);
    let t2 = todo.clone();
    let queue: Prefetch<std::result::Result<Vec<f32>, String>> = Prefetch::new(
        opts.workers,
        opts.depth * opts.workers.max(1),
        0,
        Arc::new(move |j: u64| match t2.get(j as usize) {
            Some(im) => decode_item(&im.path, im.target.0, im.target.1),
            // the look-ahead runs past the last image
            None => Ok(vec![]),
        }),
    );
    progress(0, n);
    for (j, im) in todo.iter().enumerate() {
        let px = queue.get(j as u64).map_err(|e| decode_error(im, e))?;
        let t = encode_item(vae, px, im.target, device)?;
        store(cache, im, &t)?;
        progress(j + 1, n);
    }
    Ok(n)
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
