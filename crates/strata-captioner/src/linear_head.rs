//! Linear heads on frozen CLIP image embeddings, for users with labelled images: a
//! multi-label element head (sigmoid, binary cross-entropy) and a scene head (softmax,
//! cross-entropy), trained together with candle's AdamW on the whole labelled set at once
//! (the embeddings are computed once; a linear probe needs no mini-batches at this size).
//!
//! Features: the L2-normalised CLIP image embedding, standardised per dimension with the
//! training set's mean and standard deviation (stored in the head). Weights start at zero
//! (the loss is convex, so no seed is involved). Loss = mean BCE over images × elements +
//! mean CE over images whose scene is a knowledge-file scene.
//!
//! Saved as safetensors (`elements.weight/bias`, `scenes.weight/bias`,
//! `features.mean/std`) with metadata: the format, the CLIP's identity and fingerprint,
//! element and scene names (JSON lists), the decision thresholds and a training summary.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use strata_caption::Knowledge;
use strata_image::RgbImage;

use crate::clip_tagger::LabelledSet;
use crate::error::{CaptionerError, Result};
use crate::open_clip::{normalize_rows, ClipModel, ClipOptions};
use crate::parts::{ImageScene, ImageTagger, SceneGuess, Tag};

/// Format tag in the head file's metadata.
pub const HEAD_FORMAT: &str = "strata-clip-head/1";

/// Training settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOptions {
    /// Full-batch AdamW steps.
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Element probability from which an element is tagged.
    pub element_threshold: f32,
    /// No scene when the best scene probability is below this.
    pub scene_min_probability: Option<f32>,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            steps: 300,
            lr: 1e-2,
            weight_decay: 1e-4,
            element_threshold: 0.5,
            scene_min_probability: None,
        }
    }
}

impl HeadOptions {
    fn check(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(CaptionerError::Setting("steps: at least 1".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(CaptionerError::Setting(format!(
                "learning rate {}: must be > 0",
                self.lr
            )));
        }
        if !(0.0..=1.0).contains(&self.element_threshold) {
            return Err(CaptionerError::Setting(format!(
                "element threshold {}: a probability, in [0, 1]",
                self.element_threshold
            )));
        }
        Ok(())
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    pub images: usize,
    /// Loss before the first step and after the last.
    pub initial_loss: f32,
    pub final_loss: f32,
    /// Loss every 10 steps (and the last).
    pub losses: Vec<(usize, f32)>,
    /// Lexicon elements without a positive image (the head learns to never tag them).
    pub elements_without_examples: Vec<String>,
    /// Scenes without an image.
    pub scenes_without_examples: Vec<String>,
    /// Records skipped: unreadable image (file name, reason).
    pub skipped: Vec<(String, String)>,
    /// Element labels not in the lexicon (label, count).
    pub unknown_labels: BTreeMap<String, usize>,
    /// Records whose scene is not a knowledge-file scene (left out of the scene loss).
    pub unknown_scenes: BTreeMap<String, usize>,
}

/// The trained weights (`(classes, E)` matrices) and what they mean.
#[derive(Debug, Clone)]
pub struct HeadWeights {
    pub element_names: Vec<String>,
    pub scene_names: Vec<String>,
    pub element_w: Tensor,
    pub element_b: Tensor,
    pub scene_w: Tensor,
    pub scene_b: Tensor,
    pub feature_mean: Tensor,
    pub feature_std: Tensor,
    /// [`ClipModel::identity`] and fingerprint of the CLIP the features come from.
    pub clip_identity: String,
    pub clip_fingerprint: String,
    pub clip_source: PathBuf,
    pub element_threshold: f32,
    pub scene_min_probability: Option<f32>,
    /// Free-form training summary (dataset, images, steps, loss).
    pub trained_on: String,
}

/// The training loss (see the module header) for features `x` (N×E, standardised), element
/// targets `y` (N×elements, 0/1) and one-hot scenes `s` (N×scenes; all-zero rows are left
/// out of the scene term). Differentiable in the four parameters.
pub fn head_loss(
    x: &Tensor,
    y: &Tensor,
    s: &Tensor,
    element_w: &Tensor,
    element_b: &Tensor,
    scene_w: &Tensor,
    scene_b: &Tensor,
) -> candle_core::Result<Tensor> {
    let z = x.matmul(&element_w.t()?)?.broadcast_add(element_b)?;
    // BCE with logits, stable: softplus(z) − y·z, softplus(z) = relu(z) + ln(1 + e^−|z|)
    let softplus = (z.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    let bce = (softplus - (y * &z)?)?.mean_all()?;
    let q = x.matmul(&scene_w.t()?)?.broadcast_add(scene_b)?;
    let m = q.max_keepdim(1)?.detach();
    let lse = (q.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + &m)?;
    let logp = q.broadcast_sub(&lse)?;
    let labelled = s.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let ce = if labelled > 0.0 {
        ((logp * s)?.sum_all()?.neg()? / labelled)?
    } else {
        Tensor::zeros((), x.dtype(), x.device())?
    };
    bce + ce
}

/// Rows of per-class probabilities, one row an image.
pub type Probabilities = Vec<Vec<f32>>;

/// A CLIP with a trained head: implements [`ImageTagger`] and [`ImageScene`].
pub struct Head {
    pub clip: ClipModel,
    pub weights: HeadWeights,
    /// The file the head was loaded from or saved to.
    pub file: Option<PathBuf>,
}

fn standardise(f: &Tensor, mean: &Tensor, std: &Tensor) -> Result<Tensor> {
    Ok(f.broadcast_sub(mean)?.broadcast_div(std)?)
}

/// Trains heads on features already computed: `features` N×E (normalised CLIP
/// embeddings), `elements[i]` / `scenes[i]` the labels of image i (lexicon names; a scene
/// not in `scene_names` is left out of the scene term).
pub fn train_on_features(
    features: &Tensor,
    elements: &[Vec<String>],
    scenes: &[Option<String>],
    element_names: &[String],
    scene_names: &[String],
    options: &HeadOptions,
) -> Result<(HeadWeights, Vec<(usize, f32)>)> {
    options.check()?;
    let (n, e) = features.dims2()?;
    if n == 0 || elements.len() != n || scenes.len() != n {
        return Err(CaptionerError::Setting(format!(
            "{n} feature rows, {} element label sets, {} scenes: need the same number, at least one",
            elements.len(),
            scenes.len()
        )));
    }
    let dev = features.device();
    let mean = features.mean_keepdim(0)?;
    let var = features.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
    let std = var.sqrt()?;
    let ones = Tensor::ones_like(&std)?;
    let std = std.ge(1e-6)?.where_cond(&std, &ones)?;
    let x = standardise(features, &mean, &std)?;
    let mut y = vec![0f32; n * element_names.len()];
    let mut s = vec![0f32; n * scene_names.len()];
    for i in 0..n {
        for (j, name) in element_names.iter().enumerate() {
            if elements[i].contains(name) {
                y[i * element_names.len() + j] = 1.0;
            }
        }
        if let Some(sc) = &scenes[i] {
            if let Some(j) = scene_names.iter().position(|x| x == sc) {
                s[i * scene_names.len() + j] = 1.0;
            }
        }
    }
    let y = Tensor::from_vec(y, (n, element_names.len()), dev)?;
    let s = Tensor::from_vec(s, (n, scene_names.len()), dev)?;
    let ew = Var::zeros((element_names.len(), e), DType::F32, dev)?;
    let eb = Var::zeros(element_names.len(), DType::F32, dev)?;
    let sw = Var::zeros((scene_names.len(), e), DType::F32, dev)?;
    let sb = Var::zeros(scene_names.len(), DType::F32, dev)?;
    let mut opt = AdamW::new(
        vec![ew.clone(), eb.clone(), sw.clone(), sb.clone()],
        ParamsAdamW {
            lr: options.lr,
            weight_decay: options.weight_decay,
            ..Default::default()
        },
    )?;
    let mut losses = vec![];
    for step in 0..=options.steps {
        let loss = head_loss(&x, &y, &s, &ew, &eb, &sw, &sb)?;
        let l = loss.to_scalar::<f32>()?;
        if !l.is_finite() {
            return Err(CaptionerError::Setting(format!(
                "the head's loss became {l} at step {step}; lower the learning rate"
            )));
        }
        if step % 10 == 0 || step == options.steps {
            losses.push((step, l));
        }
        if step < options.steps {
            opt.backward_step(&loss)?;
        }
    }
    Ok((
        HeadWeights {
            element_names: element_names.to_vec(),
            scene_names: scene_names.to_vec(),
            element_w: ew.as_tensor().detach(),
            element_b: eb.as_tensor().detach(),
            scene_w: sw.as_tensor().detach(),
            scene_b: sb.as_tensor().detach(),
            feature_mean: mean.squeeze(0)?,
            feature_std: std.squeeze(0)?,
            clip_identity: String::new(),
            clip_fingerprint: String::new(),
            clip_source: PathBuf::new(),
            element_threshold: options.element_threshold,
            scene_min_probability: options.scene_min_probability,
            trained_on: String::new(),
        },
        losses,
    ))
}

/// Trains element and scene heads on `clip`'s frozen image embeddings of a labelled dataset
/// folder (`metadata.jsonl` with `scene` and `elements` per image; labels mapped through the
/// knowledge file's aliases). Unreadable images are skipped and listed in the report.
pub fn train_head(
    clip: ClipModel,
    dataset_dir: &Path,
    knowledge: &Knowledge,
    options: &HeadOptions,
) -> Result<(Head, TrainReport)> {
    let data = LabelledSet::read(dataset_dir, knowledge)?;
    if data.images.is_empty() {
        return Err(CaptionerError::BadField {
            path: dataset_dir.join("metadata.jsonl"),
            field: "file_name".into(),
            what: "no record has a readable image; nothing to train on".into(),
        });
    }
    let element_names: Vec<String> = knowledge.elements.iter().map(|e| e.name.clone()).collect();
    let scene_names: Vec<String> = knowledge.scenes.iter().map(|s| s.name.clone()).collect();
    let mut parts = vec![];
    for chunk in data.images.chunks(32) {
        parts.push(normalize_rows(&clip.image_embeddings(chunk)?)?);
    }
    let features = Tensor::cat(&parts, 0)?;
    let mut unknown_scenes = BTreeMap::new();
    let scenes: Vec<Option<String>> = data
        .scenes
        .iter()
        .map(|s| {
            if scene_names.contains(s) {
                Some(s.clone())
            } else {
                *unknown_scenes.entry(s.clone()).or_default() += 1;
                None
            }
        })
        .collect();
    let (mut weights, losses) = train_on_features(
        &features,
        &data.elements,
        &scenes,
        &element_names,
        &scene_names,
        options,
    )?;
    weights.clip_identity = clip.identity();
    weights.clip_fingerprint = clip.fingerprint.clone();
    // absolute, so `Head::open` finds the CLIP from any working folder
    weights.clip_source = std::fs::canonicalize(&clip.source).unwrap_or(clip.source.clone());
    let initial_loss = losses.first().map_or(f32::NAN, |l| l.1);
    let final_loss = losses.last().map_or(f32::NAN, |l| l.1);
    weights.trained_on = format!(
        "{} ({} images, {} AdamW steps lr {} wd {}, loss {initial_loss:.4} -> {final_loss:.4})",
        dataset_dir.display(),
        data.images.len(),
        options.steps,
        options.lr,
        options.weight_decay
    );
    let report = TrainReport {
        images: data.images.len(),
        initial_loss,
        final_loss,
        losses,
        elements_without_examples: element_names
            .iter()
            .filter(|n| !data.elements.iter().any(|e| e.contains(n)))
            .cloned()
            .collect(),
        scenes_without_examples: scene_names
            .iter()
            .filter(|n| !scenes.iter().any(|s| s.as_ref() == Some(n)))
            .cloned()
            .collect(),
        skipped: data.skipped,
        unknown_labels: data.unknown,
        unknown_scenes,
    };
    Ok((
        Head {
            clip,
            weights,
            file: None,
        },
        report,
    ))
}

fn meta_err(path: &Path, field: &str, what: impl Into<String>) -> CaptionerError {
    CaptionerError::BadField {
        path: path.to_path_buf(),
        field: field.into(),
        what: what.into(),
    }
}

impl HeadWeights {
    /// Writes the head as safetensors with metadata (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t = HashMap::new();
        t.insert("elements.weight".to_string(), self.element_w.clone());
        t.insert("elements.bias".to_string(), self.element_b.clone());
        t.insert("scenes.weight".to_string(), self.scene_w.clone());
        t.insert("scenes.bias".to_string(), self.scene_b.clone());
        t.insert("features.mean".to_string(), self.feature_mean.clone());
        t.insert("features.std".to_string(), self.feature_std.clone());
        let mut m = HashMap::new();
        m.insert("format".to_string(), HEAD_FORMAT.to_string());
        m.insert("clip".to_string(), self.clip_identity.clone());
        m.insert(
            "clip_fingerprint".to_string(),
            self.clip_fingerprint.clone(),
        );
        m.insert(
            "clip_source".to_string(),
            self.clip_source.display().to_string(),
        );
        m.insert(
            "element_names".to_string(),
            serde_json::to_string(&self.element_names).expect("strings"),
        );
        m.insert(
            "scene_names".to_string(),
            serde_json::to_string(&self.scene_names).expect("strings"),
        );
        m.insert(
            "element_threshold".to_string(),
            self.element_threshold.to_string(),
        );
        if let Some(p) = self.scene_min_probability {
            m.insert("scene_min_probability".to_string(), p.to_string());
        }
        m.insert("trained_on".to_string(), self.trained_on.clone());
        strata_models::safetensors_io::save(path, &t, Some(m)).map_err(|e| {
            CaptionerError::Weights {
                path: path.to_path_buf(),
                what: format!("writing the head failed: {e}"),
                hint: "check the folder exists and is writable".into(),
            }
        })
    }

    /// Reads a head file written by [`Self::save`].
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        let (t, m) = strata_models::safetensors_io::load(path, device).map_err(|e| {
            CaptionerError::Weights {
                path: path.to_path_buf(),
                what: e.to_string(),
                hint: "give a head written by strata's CLIP head training".into(),
            }
        })?;
        let field = |k: &str| {
            m.get(k).cloned().ok_or_else(|| {
                meta_err(
                    path,
                    k,
                    format!("missing from the metadata (not a {HEAD_FORMAT} file)"),
                )
            })
        };
        let format = field("format")?;
        if format != HEAD_FORMAT {
            return Err(meta_err(
                path,
                "format",
                format!("`{format}`, expected `{HEAD_FORMAT}`"),
            ));
        }
        let names = |k: &str| -> Result<Vec<String>> {
            serde_json::from_str(&field(k)?)
                .map_err(|e| meta_err(path, k, format!("not a JSON list of names ({e})")))
        };
        let element_names = names("element_names")?;
        let scene_names = names("scene_names")?;
        let tensor = |k: &str| -> Result<Tensor> {
            t.get(k)
                .map(|x| x.to_dtype(DType::F32))
                .transpose()?
                .ok_or_else(|| meta_err(path, k, "tensor missing"))
        };
        let w = Self {
            element_w: tensor("elements.weight")?,
            element_b: tensor("elements.bias")?,
            scene_w: tensor("scenes.weight")?,
            scene_b: tensor("scenes.bias")?,
            feature_mean: tensor("features.mean")?,
            feature_std: tensor("features.std")?,
            element_threshold: field("element_threshold")?
                .parse()
                .map_err(|e| meta_err(path, "element_threshold", format!("not a number ({e})")))?,
            scene_min_probability: match m.get("scene_min_probability") {
                Some(v) => Some(v.parse().map_err(|e| {
                    meta_err(path, "scene_min_probability", format!("not a number ({e})"))
                })?),
                None => None,
            },
            clip_identity: field("clip")?,
            clip_fingerprint: field("clip_fingerprint")?,
            clip_source: PathBuf::from(field("clip_source")?),
            trained_on: m.get("trained_on").cloned().unwrap_or_default(),
            element_names,
            scene_names,
        };
        let e = w.feature_mean.dim(0)?;
        for (k, t, rows) in [
            ("elements.weight", &w.element_w, w.element_names.len()),
            ("scenes.weight", &w.scene_w, w.scene_names.len()),
        ] {
            if t.dims() != [rows, e] {
                return Err(meta_err(
                    path,
                    k,
                    format!(
                        "shape {:?}, expected [{rows}, {e}] from the names and features",
                        t.dims()
                    ),
                ));
            }
        }
        Ok(w)
    }
}

impl Head {
    /// Saves the head (see [`HeadWeights::save`]) and remembers the file for [`Self::name`].
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.weights.save(path)?;
        self.file = Some(path.to_path_buf());
        Ok(())
    }

    /// A head file on a loaded CLIP; refuses a CLIP other than the one it was trained on.
    pub fn load(path: &Path, clip: ClipModel) -> Result<Self> {
        let weights = HeadWeights::read(path, clip.device())?;
        if weights.clip_fingerprint != clip.fingerprint {
            return Err(meta_err(
                path,
                "clip_fingerprint",
                format!(
                    "trained on {} but the CLIP given is {}; give that CLIP",
                    weights.clip_identity,
                    clip.identity()
                ),
            ));
        }
        Ok(Head {
            clip,
            weights,
            file: Some(path.to_path_buf()),
        })
    }

    /// A head file with its CLIP: `clip_path`, or else the CLIP path recorded in the file.
    pub fn open(
        path: &Path,
        clip_path: Option<&Path>,
        device: &Device,
        clip_options: &ClipOptions,
    ) -> Result<Self> {
        let recorded = HeadWeights::read(path, device)?.clip_source;
        let clip_path = clip_path.map(Path::to_path_buf).unwrap_or(recorded);
        let clip = ClipModel::load(&clip_path, device, clip_options)?;
        Self::load(path, clip)
    }

    /// Element probabilities and scene probabilities, `N × elements` and `N × scenes`.
    pub fn probabilities(&self, images: &[RgbImage]) -> Result<(Probabilities, Probabilities)> {
        let f = normalize_rows(&self.clip.image_embeddings(images)?)?;
        let w = &self.weights;
        let x = standardise(&f, &w.feature_mean, &w.feature_std)?;
        let z = x.matmul(&w.element_w.t()?)?.broadcast_add(&w.element_b)?;
        let pe = candle_nn::ops::sigmoid(&z)?.to_vec2::<f32>()?;
        let q = x.matmul(&w.scene_w.t()?)?.broadcast_add(&w.scene_b)?;
        let ps = candle_nn::ops::softmax(&q, 1)?.to_vec2::<f32>()?;
        Ok((pe, ps))
    }

    fn source(&self) -> String {
        match &self.file {
            Some(f) => f.display().to_string(),
            None => "(unsaved)".into(),
        }
    }
}

impl ImageTagger for Head {
    fn name(&self) -> String {
        format!(
            "clip-linear-head:{} on {}; p>={}",
            self.source(),
            self.clip.source.display(),
            self.weights.element_threshold
        )
    }

    fn tag(&mut self, image: &RgbImage) -> Result<Vec<Tag>> {
        let (pe, _) = self.probabilities(std::slice::from_ref(image))?;
        let mut tags: Vec<Tag> = self
            .weights
            .element_names
            .iter()
            .zip(&pe[0])
            .filter(|(_, &p)| p >= self.weights.element_threshold)
            .map(|(n, &p)| Tag {
                element: n.clone(),
                score: p,
            })
            .collect();
        tags.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(tags)
    }
}

impl ImageScene for Head {
    fn name(&self) -> String {
        format!(
            "clip-linear-head:{} on {}",
            self.source(),
            self.clip.source.display()
        )
    }

    fn classify(&mut self, image: &RgbImage) -> Result<Option<SceneGuess>> {
        let (_, ps) = self.probabilities(std::slice::from_ref(image))?;
        let best = ps[0]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, &p)| (i, p));
        Ok(best.and_then(|(i, p)| {
            self.weights
                .scene_min_probability
                .is_none_or(|m| p >= m)
                .then(|| SceneGuess {
                    scene: self.weights.scene_names[i].clone(),
                    score: p,
                })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn randn(rng: &mut rand_chacha::ChaCha8Rng, shape: (usize, usize), scale: f64) -> Tensor {
        let v: Vec<f64> = (0..shape.0 * shape.1)
            .map(|_| (rng.gen::<f64>() - 0.5) * 2.0 * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The loss's gradient (candle's backward) against central finite differences, in f64.
    #[test]
    fn loss_gradient_matches_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (n, e, ne, ns) = (5, 4, 3, 3);
        let x = randn(&mut rng, (n, e), 1.5);
        let y = Tensor::from_vec(
            (0..n * ne)
                .map(|i| ((i * 7) % 3 == 0) as u8 as f64)
                .collect::<Vec<_>>(),
            (n, ne),
            &Device::Cpu,
        )
        .unwrap();
        // one unlabelled scene row (all zero)
        let mut s = vec![0f64; n * ns];
        for i in 0..n - 1 {
            s[i * ns + (i % ns)] = 1.0;
        }
        let s = Tensor::from_vec(s, (n, ns), &Device::Cpu).unwrap();
        let params = [
            randn(&mut rng, (ne, e), 2.0),
            randn(&mut rng, (1, ne), 1.0).squeeze(0).unwrap(),
            randn(&mut rng, (ns, e), 2.0),
            randn(&mut rng, (1, ns), 1.0).squeeze(0).unwrap(),
        ];
        let vars: Vec<Var> = params
            .iter()
            .map(|p| Var::from_tensor(p).unwrap())
            .collect();
        let loss = head_loss(&x, &y, &s, &vars[0], &vars[1], &vars[2], &vars[3]).unwrap();
        let grads = loss.backward().unwrap();
        let eval = |ps: &[Tensor]| -> f64 {
            head_loss(&x, &y, &s, &ps[0], &ps[1], &ps[2], &ps[3])
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let h = 1e-6;
        let mut worst = 0f64;
        for (k, v) in vars.iter().enumerate() {
            let g = grads
                .get(v)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = params[k].flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for j in 0..base.len() {
                let bump = |d: f64| {
                    let mut b = base.clone();
                    b[j] += d;
                    let mut ps = params.to_vec();
                    ps[k] = Tensor::from_vec(b, params[k].shape(), &Device::Cpu).unwrap();
                    eval(&ps)
                };
                let fd = (bump(h) - bump(-h)) / (2.0 * h);
                worst = worst.max((fd - g[j]).abs() / (1e-8 + fd.abs().max(g[j].abs())).max(1e-3));
            }
        }
        assert!(worst < 1e-6, "relative gradient error {worst}");
    }

    /// Separable synthetic features: the head fits them (every label right) and the loss
    /// falls well below its value at zero weights (ln 2 + ln 3).
    #[test]
    fn head_fits_separable_features() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let scenes: Vec<String> = ["p", "q", "r"].iter().map(|s| s.to_string()).collect();
        let n = 30;
        let mut f = vec![];
        let mut els = vec![];
        let mut sc = vec![];
        for i in 0..n {
            let (a, b) = (i % 2 == 0, i % 3 == 0);
            let k = i % 3;
            let noise = |r: &mut rand_chacha::ChaCha8Rng| (r.gen::<f32>() - 0.5) * 0.2;
            f.extend([
                if a { 1.0 } else { -1.0 } + noise(&mut rng),
                if b { 1.0 } else { -1.0 } + noise(&mut rng),
                (k as f32 - 1.0) + noise(&mut rng),
                noise(&mut rng),
            ]);
            let mut e = vec![];
            if a {
                e.push("a".to_string());
            }
            if b {
                e.push("b".to_string());
            }
            els.push(e);
            sc.push(Some(
                scenes[if k == 1 {
                    0
                } else if k == 0 {
                    1
                } else {
                    2
                }]
                .clone(),
            ));
        }
        let x = Tensor::from_vec(f, (n, 4), &Device::Cpu).unwrap();
        let (w, losses) =
            train_on_features(&x, &els, &sc, &names, &scenes, &HeadOptions::default()).unwrap();
        let l0 = losses[0].1;
        assert!((l0 - (2f32.ln() + 3f32.ln())).abs() < 1e-5, "{l0}");
        let last = losses.last().unwrap().1;
        assert!(last < 0.1 * l0, "{l0} -> {last}");
        let xs = standardise(&x, &w.feature_mean, &w.feature_std).unwrap();
        let z = xs
            .matmul(&w.element_w.t().unwrap())
            .unwrap()
            .broadcast_add(&w.element_b)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (i, row) in z.iter().enumerate() {
            assert_eq!(row[0] > 0.0, els[i].contains(&"a".to_string()));
            assert_eq!(row[1] > 0.0, els[i].contains(&"b".to_string()));
        }
    }
}
