//! What every metric reads, built once per `strata eval` run: the image folders (decoded
//! once), the caption records, the segmenter's predictions when a metric needs them, the
//! list of skipped items, and the relation-fidelity details the report shows beside the
//! table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use strata_caption::MetadataRecord;
use strata_synth::Triple;

use crate::error::EvalError;
use crate::fidelity::RelationFidelity;
use crate::images::{list_images, pair_key, read_image, Rgb};
use crate::per_image::ImageValues;
use crate::run::{EvalOptions, Metric};
use crate::seg::{Prediction, SegNet, SegQuality, Segmenter};

/// One folder of images: pairing keys (relative names without extension) and pixels.
pub struct ImageSet {
    /// `real`, or the generated set's label.
    pub label: String,
    pub dir: PathBuf,
    pub keys: Vec<String>,
    pub images: Vec<Rgb>,
    /// Each image's path relative to `dir`, as read.
    pub files: Vec<String>,
}

impl ImageSet {
    /// Reads every image under `dir` ([`list_images`]); unreadable ones go to `failed` (file, problem).
    pub fn load(
        label: &str,
        dir: &Path,
        failed: &mut Vec<(String, String)>,
    ) -> Result<ImageSet, EvalError> {
        if !dir.is_dir() {
            return Err(EvalError::BadInput {
                path: dir.to_path_buf(),
                what: "is not a folder of images".into(),
            });
        }
        let rels = list_images(dir)?;
        let failed_before = failed.len();
        let mut keys = Vec::new();
        let mut images = Vec::new();
        let mut files = Vec::new();
        for rel in rels {
            let p = dir.join(&rel);
            match read_image(&p) {
                Ok(img) => {
                    keys.push(pair_key(&rel));
                    images.push(img);
                    files.push(rel.clone());
                }
                Err(e) => failed.push((p.display().to_string(), crate::error::chain(&e))),
            }
        }
        if images.is_empty() {
            let first = failed[failed_before..]
                .first()
                .map(|(file, why)| format!("; first problem: {file}: {why}"))
                .unwrap_or_default();
            return Err(EvalError::BadInput {
                path: dir.to_path_buf(),
                what: format!("holds no readable image (PNG, JPEG, TIFF, WebP or BMP){first}"),
            });
        }
        Ok(ImageSet {
            label: label.to_string(),
            dir: dir.to_path_buf(),
            keys,
            images,
            files,
        })
    }

    /// All images, by reference.
    pub fn refs(&self) -> Vec<&Rgb> {
        self.images.iter().collect()
    }
}

/// Generated images whose real pair (same relative name) has another size: reported (the
/// metrics resize both to their networks' inputs, so a set generated at another size still
/// scores, but a user comparing pixel-aligned pairs should know). The demo's CI preset
/// generates at 32 px against 64-px real scenes on purpose.
fn report_paired_sizes(real: &ImageSet, set: &ImageSet, progress: &mut dyn FnMut(&str)) {
    let mut odd = 0;
    let mut first = None;
    for ((key, img), file) in set.keys.iter().zip(&set.images).zip(&set.files) {
        let Some(i) = real.keys.iter().position(|k| k == key) else {
            continue;
        };
        let r = &real.images[i];
        if (r.width, r.height) != (img.width, img.height) {
            odd += 1;
            first.get_or_insert_with(|| {
                format!(
                    "{} is {}×{}, its real pair {} is {}×{}",
                    set.dir.join(file).display(),
                    img.width,
                    img.height,
                    real.dir.join(&real.files[i]).display(),
                    r.width,
                    r.height
                )
            });
        }
    }
    if let Some(f) = first {
        progress(&format!(
            "note: {odd} generated image(s) differ in size from their real pair (e.g. {f}); the metrics resize both"
        ));
    }
}

/// The segmenter's quality and its predictions on the real and every generated image.
pub struct Segmentation {
    pub quality: SegQuality,
    pub real: Vec<Prediction>,
    pub sets: Vec<Vec<Prediction>>,
}

/// Shared state of one evaluation. Metrics read the images and captions, add skipped items
/// to `failed`, and may leave details for the report (relation fidelity).
pub struct EvalContext<'a> {
    pub opts: &'a EvalOptions,
    pub real: ImageSet,
    /// The generated sets, in `opts.generated` order.
    pub sets: Vec<ImageSet>,
    /// Where the captions came from (`--captions`, or the real folder's metadata.jsonl).
    pub caption_path: Option<PathBuf>,
    /// Caption records by pairing key.
    pub captions: Option<BTreeMap<String, MetadataRecord>>,
    /// Present when a requested metric needs the segmenter.
    pub segmentation: Option<Segmentation>,
    /// `(file, problem)` of every image or record that was skipped.
    pub failed: Vec<(String, String)>,
    /// Relation fidelity of the real images through the segmenter (the ceiling).
    pub real_relation_fidelity: Option<RelationFidelity>,
    /// Relation fidelity per generated set (when computed).
    pub set_relation_fidelity: Vec<Option<RelationFidelity>>,
    /// Per-image values of the real folder, aligned with `real.files`.
    pub real_values: Vec<ImageValues>,
    /// Per-image values of each generated set, aligned with its `files`.
    pub set_values: Vec<Vec<ImageValues>>,
    /// Progress messages (stage names, training steps).
    pub progress: &'a mut dyn FnMut(&str),
}

impl<'a> EvalContext<'a> {
    /// Reads the folders and captions; trains or loads the segmenter and segments every
    /// image when `segmentation` is true.
    pub fn build(
        opts: &'a EvalOptions,
        segmentation: bool,
        progress: &'a mut dyn FnMut(&str),
    ) -> Result<EvalContext<'a>, EvalError> {
        let mut failed = Vec::new();
        progress(&format!("reading {}", opts.real.display()));
        let real = ImageSet::load("real", &opts.real, &mut failed)?;
        let mut sets = Vec::new();
        for g in &opts.generated {
            progress(&format!("reading {}", g.dir.display()));
            let set = ImageSet::load(&g.label, &g.dir, &mut failed)?;
            report_paired_sizes(&real, &set, &mut *progress);
            sets.push(set);
        }
        let caption_path = opts
            .captions
            .clone()
            .or_else(|| Some(opts.real.join("metadata.jsonl")).filter(|p| p.is_file()));
        let captions = match &caption_path {
            Some(p) => Some(read_captions(p)?),
            None => None,
        };
        let n = sets.len();
        let real_values = ImageValues::for_files(&real.files, &real.keys);
        let set_values = sets
            .iter()
            .map(|s| {
                let mut v = ImageValues::for_files(&s.files, &s.keys);
                for (r, g) in pairs(&real, s) {
                    v[g].real_file = Some(real.files[r].clone());
                }
                v
            })
            .collect();
        let mut ctx = EvalContext {
            opts,
            real,
            sets,
            caption_path,
            captions,
            segmentation: None,
            failed,
            real_relation_fidelity: None,
            set_relation_fidelity: vec![None; n],
            real_values,
            set_values,
            progress,
        };
        if segmentation {
            let seg = ctx.segment()?;
            for (v, p) in ctx.real_values.iter_mut().zip(&seg.real) {
                v.seg_features = Some(p.features.clone());
            }
            for (vs, ps) in ctx.set_values.iter_mut().zip(&seg.sets) {
                for (v, p) in vs.iter_mut().zip(ps) {
                    v.seg_features = Some(p.features.clone());
                }
            }
            ctx.segmentation = Some(seg);
        }
        Ok(ctx)
    }

    /// Whether `m` was asked for.
    pub fn wants(&self, m: Metric) -> bool {
        self.opts.metrics.contains(&m)
    }

    pub fn progress(&mut self, message: &str) {
        (self.progress)(message)
    }

    /// Indices `(real, generated)` of the images of set `set` whose names match a real one.
    pub fn pairs(&self, set: usize) -> Vec<(usize, usize)> {
        pairs(&self.real, &self.sets[set])
    }

    /// The segmenter: `opts.segmenter_net` when given, else loaded when `opts.segmenter`
    /// exists, else trained (and saved there). Its quality is measured on held-out synthetic
    /// scenes from its own held-out seed; then every image is segmented.
    fn segment(&mut self) -> Result<Segmentation, EvalError> {
        let opts = self.opts;
        let held_out = |net: &dyn Segmenter| {
            crate::seg::synth_samples(opts.train.held_out_scenes, net.held_out_seed())
        };
        let (net, quality): (std::sync::Arc<dyn Segmenter>, SegQuality) =
            match (&opts.segmenter_net, &opts.segmenter) {
                (Some(net), _) => {
                    self.progress(&format!(
                        "segmenter: {}; measuring it on {} held-out synthetic scenes",
                        net.description(),
                        opts.train.held_out_scenes
                    ));
                    let q = crate::seg::evaluate(net.as_ref(), &held_out(net.as_ref()), f64::NAN)?;
                    (net.clone(), q)
                }
                (None, Some(p)) if p.is_file() => {
                    self.progress(&format!("loading segmenter {}", p.display()));
                    let mut net = SegNet::load(p)?;
                    net.held_out_seed = opts.train.seed.wrapping_mul(2).wrapping_add(2);
                    let q = crate::seg::evaluate(&net, &held_out(&net), f64::NAN)?;
                    (std::sync::Arc::new(net), q)
                }
                _ => {
                    let steps = opts.train.steps;
                    let progress = &mut *self.progress;
                    let mut cb = |s: usize, l: f64| {
                        if s.is_multiple_of(50) || s == steps {
                            progress(&format!("segmenter step {s}/{steps} loss {l:.3}"));
                        }
                    };
                    let (net, q) = crate::seg::train(&opts.train, &mut cb)?;
                    if let Some(p) = &opts.segmenter {
                        net.save(p)?;
                    }
                    (std::sync::Arc::new(net), q)
                }
            };
        self.progress("segmenting images");
        let real = net.predict(&self.real.refs())?;
        let mut sets = Vec::new();
        for s in &self.sets {
            sets.push(net.predict(&s.refs())?);
        }
        Ok(Segmentation {
            quality,
            real,
            sets,
        })
    }
}

pub(crate) fn read_captions(path: &Path) -> Result<BTreeMap<String, MetadataRecord>, EvalError> {
    let recs = strata_caption::dataset::read_metadata(path).map_err(|e| EvalError::BadInput {
        path: path.to_path_buf(),
        what: format!("{e}"),
    })?;
    let mut map = BTreeMap::new();
    for r in recs {
        map.insert(pair_key(&r.file_name), r);
    }
    Ok(map)
}

/// The relation triples a caption record requests (its `relations` field).
pub fn triples_of(rec: &MetadataRecord) -> Result<Vec<Triple>, String> {
    match rec.extra.get("relations") {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`relations` field: {e}")),
    }
}

/// The caption record of an image key: exact, then by file name alone.
pub fn lookup<'c>(
    caps: &'c BTreeMap<String, MetadataRecord>,
    key: &str,
) -> Option<&'c MetadataRecord> {
    caps.get(key).or_else(|| {
        let base = key.rsplit('/').next().unwrap_or(key);
        caps.iter()
            .find(|(k, _)| k.rsplit('/').next() == Some(base))
            .map(|(_, r)| r)
    })
}

/// Indices `(real, generated)` of the images whose names match.
pub fn pairs(real: &ImageSet, gen: &ImageSet) -> Vec<(usize, usize)> {
    let idx: BTreeMap<&String, usize> = real.keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    gen.keys
        .iter()
        .enumerate()
        .filter_map(|(g, k)| idx.get(k).map(|&r| (r, g)))
        .collect()
}

/// Mean and population standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// `imgs` as N×3×H×W in [0, 1].
pub fn unit_tensor(imgs: &[&Rgb]) -> Result<Tensor, EvalError> {
    Ok(crate::images::to_tensor(
        &imgs.iter().map(|i| (*i).clone()).collect::<Vec<_>>(),
        [0.0; 3],
        [1.0; 3],
        &Device::Cpu,
    )?)
}
