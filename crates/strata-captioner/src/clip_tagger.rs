//! Zero-shot element tags and scene with a CLIP (transformers or open_clip layout, see
//! [`crate::open_clip`]).
//!
//! CLIP's zero-shot recipe with prompt ensembles: every class (an element of the knowledge
//! file's lexicon, or a scene) is written into several templates (`an aerial image of {}.`,
//! ...); for elements the phrases are the lexicon name and its first
//! [`ZeroShotOptions::aliases`] aliases. The class embedding is the mean of the L2-normalised
//! text embeddings of all its prompts, normalised again; an image's score for a class is the
//! cosine between the class embedding and its normalised image embedding.
//!
//! * Scene: the class with the highest cosine (score = that cosine), or none when it is below
//!   [`ZeroShotOptions::scene_min_cosine`].
//! * Elements (multi-label): every element whose cosine reaches its own threshold. Without
//!   calibration all share [`ZeroShotOptions::default_threshold`]; [`ClipTagger::calibrate`]
//!   picks, per element, the threshold maximising F1 on a labelled dataset folder
//!   (`metadata.jsonl` with `elements`), and [`ClipTagger::save_thresholds`] writes them as
//!   a small JSON file tied to the model's fingerprint and the prompts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use strata_caption::Knowledge;
use strata_image::RgbImage;

use crate::error::{CaptionerError, Result};
use crate::open_clip::{normalize_rows, ClipModel, ClipOptions};
use crate::parts::{ImageScene, ImageTagger, SceneGuess, Tag};

/// Default element prompt templates (`{}` is the element phrase).
pub const ELEMENT_TEMPLATES: &[&str] = &[
    "an aerial image of {}.",
    "a satellite photo showing {}.",
    "a remote sensing image with {}.",
];
/// Default scene prompt templates.
pub const SCENE_TEMPLATES: &[&str] = &[
    "an aerial image of a {} scene.",
    "a satellite photo of a {} area.",
    "a remote sensing image of {}.",
];
/// Cosine an uncalibrated element must reach: a rough value for ViT-B CLIPs (matching
/// image-text pairs typically score 0.25–0.35); calibrate for real use.
pub const DEFAULT_THRESHOLD: f32 = 0.25;

/// Format tag of threshold files.
pub const THRESHOLDS_FORMAT: &str = "strata-clip-thresholds/1";

/// How prompts are built and decisions made.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotOptions {
    pub element_templates: Vec<String>,
    pub scene_templates: Vec<String>,
    /// How many of each element's aliases join its name in the prompts (in file order).
    pub aliases: usize,
    /// Cosine threshold of elements without a calibrated one.
    pub default_threshold: f32,
    /// No scene when the best scene cosine is below this.
    pub scene_min_cosine: Option<f32>,
    /// Checkpoint options (activation, config, tokenizer) for open_clip files.
    pub clip: ClipOptions,
}

impl Default for ZeroShotOptions {
    fn default() -> Self {
        ZeroShotOptions {
            element_templates: ELEMENT_TEMPLATES.iter().map(|s| s.to_string()).collect(),
            scene_templates: SCENE_TEMPLATES.iter().map(|s| s.to_string()).collect(),
            aliases: 2,
            default_threshold: DEFAULT_THRESHOLD,
            scene_min_cosine: None,
            clip: ClipOptions::default(),
        }
    }
}

impl ZeroShotOptions {
    fn check(&self) -> Result<()> {
        for (what, t) in [
            ("element", &self.element_templates),
            ("scene", &self.scene_templates),
        ] {
            if t.is_empty() {
                return Err(CaptionerError::Setting(format!(
                    "{what} prompt templates: give at least one"
                )));
            }
            if let Some(bad) = t.iter().find(|s| s.matches("{}").count() != 1) {
                return Err(CaptionerError::Setting(format!(
                    "{what} prompt template `{bad}`: needs exactly one `{{}}` for the class name"
                )));
            }
        }
        if !(-1.0..=1.0).contains(&self.default_threshold) {
            return Err(CaptionerError::Setting(format!(
                "default threshold {}: a cosine, in [-1, 1]",
                self.default_threshold
            )));
        }
        Ok(())
    }

    /// A short description of the prompts (recorded in threshold files: thresholds only
    /// hold for the prompts they were calibrated with).
    pub fn prompt_signature(&self) -> String {
        format!(
            "elements {:?} aliases {}; scenes {:?}",
            self.element_templates, self.aliases, self.scene_templates
        )
    }
}

/// One element's calibrated threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementThreshold {
    pub threshold: f32,
    /// F1 on the calibration set at this threshold.
    pub f1: f32,
    /// Labelled images that have / lack the element.
    pub positives: usize,
    pub negatives: usize,
}

/// A threshold file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdFile {
    pub format: String,
    /// The model the thresholds were calibrated on ([`ClipModel::identity`]).
    pub model: String,
    pub model_fingerprint: String,
    pub prompts: String,
    /// Where the labels came from.
    pub calibrated_on: String,
    /// Cosine used for elements missing from `elements`.
    pub default_threshold: f32,
    pub elements: BTreeMap<String, ElementThreshold>,
}

/// What [`ClipTagger::calibrate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationReport {
    pub images: usize,
    /// Elements that got a threshold.
    pub calibrated: BTreeMap<String, ElementThreshold>,
    /// Elements with no positive example (they keep the default threshold).
    pub uncalibrated: Vec<String>,
    /// Records whose image could not be read (file name, reason); they are skipped.
    pub skipped: Vec<(String, String)>,
    /// Element labels that are not in the knowledge file's lexicon (label, count).
    pub unknown_labels: BTreeMap<String, usize>,
}

/// The F1-maximising cut for "positive when score ≥ t": candidates are the distinct scores
/// (highest first, the first best wins ties, i.e. the fewest positives); the threshold is
/// the midpoint between the lowest kept score and the next lower one (the lowest kept score
/// when none is lower). Returns `(threshold, f1)`; `None` without any positive label.
pub fn best_f1_threshold(scores: &[f32], labels: &[bool]) -> Option<(f32, f32)> {
    if !labels.iter().any(|&l| l) || scores.len() != labels.len() {
        return None;
    }
    let mut uniq: Vec<f32> = scores.to_vec();
    uniq.sort_by(|a, b| b.total_cmp(a));
    uniq.dedup();
    let (mut best, mut best_k) = (-1f64, 0usize);
    for (k, &u) in uniq.iter().enumerate() {
        let (mut tp, mut fp, mut fnn) = (0usize, 0usize, 0usize);
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= u, l) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fnn += 1,
                _ => {}
            }
        }
        let f1 = if tp == 0 {
            0.0
        } else {
            2.0 * tp as f64 / (2 * tp + fp + fnn) as f64
        };
        if f1 > best + 1e-12 {
            best = f1;
            best_k = k;
        }
    }
    let t = if best_k + 1 == uniq.len() {
        uniq[best_k]
    } else {
        0.5 * (uniq[best_k] + uniq[best_k + 1])
    };
    Some((t, best as f32))
}

/// The zero-shot tagger and scene classifier.
pub struct ClipTagger {
    pub model: ClipModel,
    options: ZeroShotOptions,
    element_names: Vec<String>,
    element_emb: Tensor,
    scene_names: Vec<String>,
    scene_emb: Tensor,
    thresholds: Vec<f32>,
    threshold_source: String,
    calibrated: BTreeMap<String, ElementThreshold>,
    calibrated_on: String,
}

impl ClipTagger {
    /// Loads a CLIP (a transformers folder, an open_clip folder or checkpoint file: detected
    /// from the tensor names) with the default prompts and threshold.
    pub fn load(path: &Path, device: &Device, knowledge: &Knowledge) -> Result<Self> {
        Self::load_with(path, device, knowledge, &ZeroShotOptions::default())
    }

    pub fn load_with(
        path: &Path,
        device: &Device,
        knowledge: &Knowledge,
        options: &ZeroShotOptions,
    ) -> Result<Self> {
        options.check()?;
        let model = ClipModel::load(path, device, &options.clip)?;
        Self::from_model(model, knowledge, options)
    }

    /// A tagger on an already loaded model; computes the class embeddings.
    pub fn from_model(
        model: ClipModel,
        knowledge: &Knowledge,
        options: &ZeroShotOptions,
    ) -> Result<Self> {
        options.check()?;
        if knowledge.elements.is_empty() || knowledge.scenes.is_empty() {
            return Err(CaptionerError::Setting(format!(
                "knowledge file {}: needs elements and scenes for zero-shot tagging",
                knowledge.source
            )));
        }
        let element_classes: Vec<(String, Vec<String>)> = knowledge
            .elements
            .iter()
            .map(|e| {
                let mut p = vec![e.name.clone()];
                p.extend(e.aliases.iter().take(options.aliases).cloned());
                (e.name.clone(), p)
            })
            .collect();
        let scene_classes: Vec<(String, Vec<String>)> = knowledge
            .scenes
            .iter()
            .map(|s| (s.name.clone(), vec![s.name.clone()]))
            .collect();
        let element_emb = class_embeddings(&model, &element_classes, &options.element_templates)?;
        let scene_emb = class_embeddings(&model, &scene_classes, &options.scene_templates)?;
        let n = element_classes.len();
        Ok(ClipTagger {
            model,
            element_names: element_classes.into_iter().map(|c| c.0).collect(),
            element_emb,
            scene_names: scene_classes.into_iter().map(|c| c.0).collect(),
            scene_emb,
            thresholds: vec![options.default_threshold; n],
            threshold_source: format!("uncalibrated cos>={}", options.default_threshold),
            options: options.clone(),
            calibrated: BTreeMap::new(),
            calibrated_on: String::new(),
        })
    }

    pub fn element_names(&self) -> &[String] {
        &self.element_names
    }
    pub fn scene_names(&self) -> &[String] {
        &self.scene_names
    }
    /// Per-element thresholds, in [`Self::element_names`] order.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }
    /// Where the thresholds come from (recorded by [`ImageTagger::name`]).
    pub fn threshold_source(&self) -> &str {
        &self.threshold_source
    }

    /// Normalised image embeddings `N×E`.
    pub fn image_embeddings(&self, images: &[RgbImage]) -> Result<Tensor> {
        normalize_rows(&self.model.image_embeddings(images)?)
    }

    /// Cosines `N × elements`.
    pub fn element_scores(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let i = self.image_embeddings(images)?;
        Ok(i.matmul(&self.element_emb.t()?)?.to_vec2::<f32>()?)
    }

    /// Cosines `N × scenes`.
    pub fn scene_scores(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let i = self.image_embeddings(images)?;
        Ok(i.matmul(&self.scene_emb.t()?)?.to_vec2::<f32>()?)
    }

    /// Tags from one row of element cosines.
    pub fn tags_from_scores(&self, scores: &[f32]) -> Vec<Tag> {
        let mut tags: Vec<Tag> = self
            .element_names
            .iter()
            .zip(scores)
            .zip(&self.thresholds)
            .filter(|((_, &s), &t)| s >= t)
            .map(|((n, &s), _)| Tag {
                element: n.clone(),
                score: s,
            })
            .collect();
        tags.sort_by(|a, b| b.score.total_cmp(&a.score));
        tags
    }

    /// Per-element thresholds maximising F1 ([`best_f1_threshold`]) on a labelled dataset
    /// folder (`metadata.jsonl` with `elements`; labels are mapped to lexicon names through
    /// the knowledge file's aliases). Elements without a positive keep the default. Records
    /// whose image cannot be read are skipped and listed in the report.
    pub fn calibrate(
        &mut self,
        dataset_dir: &Path,
        knowledge: &Knowledge,
    ) -> Result<CalibrationReport> {
        let data = LabelledSet::read(dataset_dir, knowledge)?;
        if data.images.is_empty() {
            return Err(CaptionerError::BadField {
                path: dataset_dir.join("metadata.jsonl"),
                field: "file_name".into(),
                what: "no record has a readable image; nothing to calibrate on".into(),
            });
        }
        let mut scores: Vec<Vec<f32>> = vec![];
        for chunk in data.images.chunks(32) {
            scores.extend(self.element_scores(chunk)?);
        }
        let mut calibrated = BTreeMap::new();
        let mut uncalibrated = vec![];
        for (j, name) in self.element_names.iter().enumerate() {
            let col: Vec<f32> = scores.iter().map(|r| r[j]).collect();
            let labels: Vec<bool> = data.elements.iter().map(|e| e.contains(name)).collect();
            match best_f1_threshold(&col, &labels) {
                Some((t, f1)) => {
                    let positives = labels.iter().filter(|&&l| l).count();
                    self.thresholds[j] = t;
                    calibrated.insert(
                        name.clone(),
                        ElementThreshold {
                            threshold: t,
                            f1,
                            positives,
                            negatives: labels.len() - positives,
                        },
                    );
                }
                None => {
                    self.thresholds[j] = self.options.default_threshold;
                    uncalibrated.push(name.clone());
                }
            }
        }
        self.threshold_source = format!(
            "calibrated on {} ({} images, {} elements; others cos>={})",
            dataset_dir.display(),
            data.images.len(),
            calibrated.len(),
            self.options.default_threshold
        );
        self.calibrated = calibrated.clone();
        self.calibrated_on = dataset_dir.display().to_string();
        Ok(CalibrationReport {
            images: data.images.len(),
            calibrated,
            uncalibrated,
            skipped: data.skipped,
            unknown_labels: data.unknown,
        })
    }

    /// The current thresholds as a file.
    pub fn threshold_file(&self) -> ThresholdFile {
        ThresholdFile {
            format: THRESHOLDS_FORMAT.into(),
            model: self.model.identity(),
            model_fingerprint: self.model.fingerprint.clone(),
            prompts: self.options.prompt_signature(),
            calibrated_on: self.calibrated_on.clone(),
            default_threshold: self.options.default_threshold,
            elements: self.calibrated.clone(),
        }
    }

    /// Writes the thresholds as JSON (atomically).
    pub fn save_thresholds(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.threshold_file())
            .map_err(|e| CaptionerError::Setting(format!("serialising thresholds: {e}")))?;
        strata_io::atomic::write(path, format!("{text}\n").as_bytes()).map_err(|source| {
            CaptionerError::Io {
                path: path.to_path_buf(),
                what: "writing the thresholds".into(),
                source,
            }
        })
    }

    /// Reads thresholds written by [`Self::save_thresholds`]; refuses a file calibrated on
    /// another model or other prompts (cosines are not comparable across them).
    pub fn load_thresholds(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|source| CaptionerError::Io {
            path: path.to_path_buf(),
            what: "reading the thresholds".into(),
            source,
        })?;
        let f: ThresholdFile =
            serde_json::from_str(&text).map_err(|e| CaptionerError::BadField {
                path: path.to_path_buf(),
                field: "(file)".into(),
                what: format!("not a strata CLIP threshold file ({e})"),
            })?;
        let bad = |field: &str, what: String| CaptionerError::BadField {
            path: path.to_path_buf(),
            field: field.into(),
            what,
        };
        if f.format != THRESHOLDS_FORMAT {
            return Err(bad(
                "format",
                format!("`{}`, expected `{THRESHOLDS_FORMAT}`", f.format),
            ));
        }
        if f.model_fingerprint != self.model.fingerprint {
            return Err(bad(
                "model_fingerprint",
                format!(
                    "calibrated on {} but this model is {}; calibrate again for this model",
                    f.model,
                    self.model.identity()
                ),
            ));
        }
        let sig = self.options.prompt_signature();
        if f.prompts != sig {
            return Err(bad(
                "prompts",
                format!(
                    "calibrated with `{}`, these prompts are `{sig}`; calibrate again",
                    f.prompts
                ),
            ));
        }
        if let Some(unknown) = f.elements.keys().find(|k| !self.element_names.contains(k)) {
            return Err(bad(
                "elements",
                format!("`{unknown}` is not an element of the knowledge file in use"),
            ));
        }
        for (j, name) in self.element_names.iter().enumerate() {
            self.thresholds[j] = f
                .elements
                .get(name)
                .map_or(f.default_threshold, |e| e.threshold);
        }
        self.options.default_threshold = f.default_threshold;
        self.calibrated = f.elements;
        self.calibrated_on = f.calibrated_on;
        self.threshold_source = format!("thresholds {}", path.display());
        Ok(())
    }
}

/// Class embeddings `classes × E`: mean of the normalised prompt embeddings, renormalised.
fn class_embeddings(
    model: &ClipModel,
    classes: &[(String, Vec<String>)],
    templates: &[String],
) -> Result<Tensor> {
    let mut prompts = vec![];
    let mut counts = vec![];
    for (_, phrases) in classes {
        let before = prompts.len();
        for p in phrases {
            for t in templates {
                prompts.push(t.replacen("{}", p, 1));
            }
        }
        counts.push(prompts.len() - before);
    }
    let emb = normalize_rows(&model.text_embeddings(&prompts)?)?;
    let mut rows = vec![];
    let mut at = 0;
    for c in counts {
        rows.push(emb.narrow(0, at, c)?.mean(0)?);
        at += c;
    }
    normalize_rows(&Tensor::stack(&rows, 0)?)
}

/// Images of a labelled dataset folder with their lexicon element sets and scenes.
pub(crate) struct LabelledSet {
    pub images: Vec<RgbImage>,
    pub elements: Vec<Vec<String>>,
    pub scenes: Vec<String>,
    pub skipped: Vec<(String, String)>,
    pub unknown: BTreeMap<String, usize>,
}

impl LabelledSet {
    pub fn read(dir: &Path, knowledge: &Knowledge) -> Result<Self> {
        let meta = dir.join("metadata.jsonl");
        let records = strata_caption::read_dataset(dir).map_err(|e| CaptionerError::BadField {
            path: meta.clone(),
            field: "(records)".into(),
            what: format!("{e}; a labelled folder holds images and a metadata.jsonl with scene and elements per image"),
        })?;
        let mut out = LabelledSet {
            images: vec![],
            elements: vec![],
            scenes: vec![],
            skipped: vec![],
            unknown: BTreeMap::new(),
        };
        for r in records {
            let p: PathBuf = dir.join(&r.file_name);
            match strata_image::read_rgb8(&p) {
                Ok(img) => {
                    let mut els = vec![];
                    for e in &r.elements {
                        match knowledge.element(e) {
                            Some(n) => els.push(n.to_string()),
                            None => *out.unknown.entry(e.clone()).or_default() += 1,
                        }
                    }
                    out.images.push(img);
                    out.elements.push(els);
                    out.scenes.push(knowledge.scene_name(&r.scene));
                }
                Err(e) => out
                    .skipped
                    .push((r.file_name.clone(), strata_image::error_chain(&e))),
            }
        }
        Ok(out)
    }
}

impl ImageTagger for ClipTagger {
    fn name(&self) -> String {
        format!(
            "clip-zero-shot:{}; {}",
            self.model.source.display(),
            self.threshold_source
        )
    }

    fn tag(&mut self, image: &RgbImage) -> Result<Vec<Tag>> {
        let s = self.element_scores(std::slice::from_ref(image))?;
        Ok(self.tags_from_scores(&s[0]))
    }
}

impl ImageScene for ClipTagger {
    fn name(&self) -> String {
        format!("clip-zero-shot:{}", self.model.source.display())
    }

    fn classify(&mut self, image: &RgbImage) -> Result<Option<SceneGuess>> {
        let s = self.scene_scores(std::slice::from_ref(image))?;
        let best = s[0]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, &c)| (i, c));
        Ok(best.and_then(|(i, c)| {
            (self.options.scene_min_cosine.is_none_or(|m| c >= m)).then(|| SceneGuess {
                scene: self.scene_names[i].clone(),
                score: c,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_threshold_by_hand() {
        // positives 0.9, 0.8, 0.5; negatives 0.7, 0.3, 0.2. Cuts (tp, fp, fn → F1):
        // ≥0.9 (1,0,2 → .5), ≥0.8 (2,0,1 → .8), ≥0.7 (2,1,1 → .667), ≥0.5 (3,1,0 → .857),
        // ≥0.3 (3,2,0 → .75), ≥0.2 (3,3,0 → .667): best keeps 0.5, next lower is 0.3.
        let s = [0.9, 0.7, 0.3, 0.8, 0.2, 0.5];
        let l = [true, false, false, true, false, true];
        let (t, f1) = best_f1_threshold(&s, &l).unwrap();
        assert!((t - 0.4).abs() < 1e-6, "{t}");
        assert!((f1 - 6.0 / 7.0).abs() < 1e-6, "{f1}");
        // separable: the cut lies halfway between the classes, F1 = 1
        let (t, f1) =
            best_f1_threshold(&[0.1, 0.35, 0.3, 0.05], &[false, true, true, false]).unwrap();
        assert!((t - 0.2).abs() < 1e-6 && f1 == 1.0, "{t} {f1}");
        // every image positive: the lowest score is the threshold
        let (t, _) = best_f1_threshold(&[0.3, 0.2], &[true, true]).unwrap();
        assert_eq!(t, 0.2);
        assert!(best_f1_threshold(&[0.3, 0.2], &[false, false]).is_none());
    }

    #[test]
    fn templates_need_one_placeholder() {
        let o = ZeroShotOptions {
            element_templates: vec!["no slot".into()],
            ..Default::default()
        };
        assert!(o.check().unwrap_err().to_string().contains("no slot"));
    }
}
