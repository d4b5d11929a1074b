//! The embedded default captioner: a small segmenter with a scene head, trained on procedural
//! `strata-synth` scenes and compiled into the binary (about 0.8 MB of weights), so
//! `strata caption --from images` gives a hierarchical caption without any download.
//!
//! From one image (resized to [`NET_SIZE`]² with `strata_image::resize`, bilinear) the
//! network predicts an element mask and a scene class; then
//!
//! * **scene** ([`ImageScene`]): the scene head's most probable concept, named as the
//!   knowledge file names it, or `None` below [`Thresholds::min_scene_probability`];
//! * **elements** ([`ImageTagger`]): the mask classes covering at least
//!   [`Thresholds::min_area`] of the image (more for bare land, less for cars) with a mean
//!   network confidence on their pixels of at least [`Thresholds::min_confidence`], mapped
//!   to their lexicon names and scored by that confidence;
//! * **relation sentence** ([`ImageCaptioner`]): the relation checker of `strata-synth`
//!   (plain geometry on a mask) run on the *predicted* mask for every ordered pair of
//!   present elements and the relations in [`RELATIONS`]; the triples that hold are ranked
//!   by confidence and stated with the SRKC phrases, alone or two joined by "and". Every
//!   candidate passes the golden rule (`strata_caption::analyze`); no vertical relation is
//!   ever produced.
//!
//! The three calls on the same image run the network and the checker once: the last
//! image's analysis is cached. [`evaluate_default`] measures the captioner against the
//! generator's own ground truth on held-out scenes. See `docs/caption-default.md`.

pub mod net;
pub mod segmenter;
pub mod train;

pub use segmenter::EmbeddedSegmenter;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use strata_caption::{analyze, Knowledge};
use strata_image::RgbImage;
use strata_synth::{check, Element, MaskView, Relation, SceneClass, Triple};

use crate::error::{CaptionerError, Result};
use crate::parts::{Candidate, ImageCaptioner, ImageScene, ImageTagger, SceneGuess, Tag};
pub use net::NET_SIZE;
use net::{CapNet, NetPrediction, NUM_CLASSES};

/// The weights shipped in the binary (trained by `scripts/train-captioner.sh`).
pub const DEFAULT_WEIGHTS: &[u8] = include_bytes!("../weights/embedded-captioner.safetensors");

/// When the captioner reports an element or a scene. The defaults were chosen on the
/// validation scenes (never on the test scenes), see `docs/caption-default.md`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Smallest share of the image an element must cover to be reported.
    pub min_area: f32,
    /// Bare land is the background of many scenes: reported from this share only.
    pub min_area_bare_land: f32,
    /// Cars are a few pixels each at 64 px: reported from this share.
    pub min_area_car: f32,
    /// Smallest mean network confidence over an element's pixels.
    pub min_confidence: f32,
    /// The scene is left out when the scene head's top probability is below this.
    pub min_scene_probability: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_area: 0.004,
            min_area_bare_land: 0.10,
            min_area_car: 0.0015,
            min_confidence: 0.5,
            min_scene_probability: 0.25,
        }
    }
}

impl Thresholds {
    /// Share of the image below which `e` is not reported.
    pub fn min_area(&self, e: Element) -> f32 {
        match e {
            Element::BareLand => self.min_area_bare_land,
            Element::Car => self.min_area_car,
            _ => self.min_area,
        }
    }
}

/// At most this many candidate sentences per image.
pub const MAX_CANDIDATES: usize = 6;

/// The relations tried between every ordered pair of present elements (`between` is left
/// out: it needs three elements, and the pairs already give the sentences), with the
/// weight that ranks a holding triple (specific relations before `next to`).
pub const RELATIONS: [(Relation, f32); 7] = [
    (Relation::Surrounds, 1.0),
    (Relation::Crosses, 1.0),
    (Relation::InTheMiddleOf, 1.0),
    (Relation::OnBothSidesOf, 0.95),
    (Relation::ParallelTo, 0.95),
    (Relation::Along, 0.9),
    (Relation::NextTo, 0.6),
];

/// One relation triple that holds on a mask, in lexicon names, with its ranking score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredTriple {
    /// The triple as the synth checker states it (synth element names).
    pub triple: Triple,
    pub score: f32,
}

/// Everything the captioner derives from one image.
#[derive(Debug, Clone)]
pub struct ImageAnalysis {
    /// The predicted mask, [`NET_SIZE`]² synth class ids.
    pub mask: Vec<u8>,
    /// Scene concept (knowledge name) and probability, before the threshold.
    pub scene: SceneGuess,
    /// Present elements, most confident first.
    pub tags: Vec<Tag>,
    /// Triples that hold on the predicted mask, best first.
    pub triples: Vec<ScoredTriple>,
    /// Candidate sentences, best first, each passing the golden rule.
    pub candidates: Vec<Candidate>,
}

/// The embedded captioner (scene, relation sentence and elements from one network).
pub struct EmbeddedCaptioner {
    net: CapNet,
    knowledge: Knowledge,
    source: String,
    metadata: HashMap<String, String>,
    thresholds: Thresholds,
    cache: Option<(u64, ImageAnalysis)>,
}

impl EmbeddedCaptioner {
    /// The captioner with the weights compiled into the binary.
    pub fn load_default() -> Result<EmbeddedCaptioner> {
        Self::from_bytes(
            DEFAULT_WEIGHTS,
            Path::new("<embedded>"),
            "embedded-default".into(),
        )
    }

    /// A captioner with weights written by `scripts/train-captioner.sh`.
    pub fn load(path: &Path) -> Result<EmbeddedCaptioner> {
        let bytes = std::fs::read(path).map_err(|source| CaptionerError::Io {
            path: path.to_path_buf(),
            what: "reading the embedded-captioner weights".into(),
            source,
        })?;
        Self::from_bytes(&bytes, path, format!("embedded:{}", path.display()))
    }

    fn from_bytes(bytes: &[u8], path: &Path, source: String) -> Result<EmbeddedCaptioner> {
        let (net, metadata) =
            net::from_safetensors(bytes).map_err(|what| CaptionerError::Weights {
                path: PathBuf::from(path),
                what: format!("not embedded-captioner weights: {what}"),
                hint: "write the file with scripts/train-captioner.sh, or use the default weights"
                    .into(),
            })?;
        Ok(EmbeddedCaptioner {
            net,
            knowledge: Knowledge::embedded(),
            source,
            metadata,
            thresholds: Thresholds::default(),
            cache: None,
        })
    }

    /// The reporting thresholds in use.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Change the reporting thresholds (drops the cached analysis).
    pub fn set_thresholds(&mut self, th: Thresholds) {
        self.thresholds = th;
        self.cache = None;
    }

    /// The network (for the segmenter figures of [`train::evaluate`]).
    pub fn net(&self) -> &CapNet {
        &self.net
    }

    /// The weights' metadata (recipe, steps, seeds, validation figures).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The analysis of `image` (cached for the last image).
    pub fn analyze(&mut self, image: &RgbImage) -> Result<&ImageAnalysis> {
        let key = image_key(image);
        if self.cache.as_ref().map(|c| c.0) != Some(key) {
            let pred =
                self.net.predict(&[image])?.pop().ok_or_else(|| {
                    CaptionerError::Setting("the network gave no prediction".into())
                })?;
            let a = analysis(&self.knowledge, pred, &self.thresholds)?;
            self.cache = Some((key, a));
        }
        Ok(&self.cache.as_ref().expect("filled above").1)
    }

    /// Analyses of several images, run through the network in batches (no caching).
    pub fn analyze_batch(&self, images: &[&RgbImage]) -> Result<Vec<ImageAnalysis>> {
        self.net
            .predict(images)?
            .into_iter()
            .map(|p| analysis(&self.knowledge, p, &self.thresholds))
            .collect()
    }
}

fn image_key(image: &RgbImage) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    image.width.hash(&mut h);
    image.height.hash(&mut h);
    image.data.hash(&mut h);
    h.finish()
}

/// Lexicon name of a synth element (through the knowledge file's aliases), if it has one.
fn lexicon_name(k: &Knowledge, e: Element) -> Option<String> {
    k.element(e.name()).map(str::to_string)
}

/// The elements covering at least their [`Thresholds::min_area`] of `mask`, with their
/// pixel counts, largest first.
pub fn present_elements(mask: &[u8], th: &Thresholds) -> Vec<(Element, usize)> {
    let mut counts = [0usize; NUM_CLASSES];
    for &v in mask {
        counts[(v as usize).min(NUM_CLASSES - 1)] += 1;
    }
    let total = mask.len().max(1) as f32;
    let mut out: Vec<(Element, usize)> = Element::ALL
        .iter()
        .map(|&e| (e, counts[e as usize]))
        .filter(|&(e, n)| n > 0 && n as f32 / total >= th.min_area(e))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Linear elements: what crosses, and what things lie along.
fn linear(e: Element) -> bool {
    matches!(e, Element::Road | Element::River | Element::Railway)
}

/// Ground covers: what surrounds things or holds them in its middle, never a "thing".
fn cover(e: Element) -> bool {
    matches!(
        e,
        Element::Grass | Element::Farmland | Element::Water | Element::BareLand | Element::Beach
    )
}

/// Whether a sentence `s REL o` makes sense for an aerial scene, whatever the geometry says
/// (the checker alone would accept "grass crosses the water" for a strip of grass). Bare
/// land, the background of many scenes, takes part in no relation.
pub fn plausible(rel: Relation, s: Element, o: Element) -> bool {
    use Element as E;
    if s == o || s == E::BareLand || o == E::BareLand {
        return false;
    }
    match rel {
        Relation::Crosses => linear(s) && (cover(o) || linear(o)),
        Relation::Along | Relation::OnBothSidesOf => {
            !linear(s)
                && !matches!(s, E::Grass | E::Farmland | E::Water)
                && (linear(o) || o == E::Beach)
        }
        Relation::ParallelTo => linear(s) && linear(o),
        Relation::Surrounds => {
            matches!(
                s,
                E::Tree | E::Grass | E::RunningTrack | E::Water | E::House | E::Building
            ) && !linear(o)
                && !cover(o)
        }
        Relation::InTheMiddleOf => {
            !cover(s)
                && !linear(s)
                && matches!(
                    o,
                    E::Plaza | E::Grass | E::Water | E::Farmland | E::ParkingLot | E::SportsField
                )
        }
        Relation::NextTo => !(cover(s) && cover(o)),
        Relation::Between => true,
    }
}

/// Every [`plausible`] triple of [`RELATIONS`] between ordered pairs of `elements` that the
/// checker accepts on `mask` (`on both sides of` replaces `along` for the same pair).
pub fn holding_triples(mask: &MaskView, elements: &[Element]) -> Result<Vec<(Triple, Relation)>> {
    let mut out = Vec::new();
    for &s in elements {
        for &o in elements {
            if s == o {
                continue;
            }
            let mut both_sides = false;
            for &(rel, _) in &RELATIONS {
                if (rel == Relation::Along && both_sides) || !plausible(rel, s, o) {
                    continue;
                }
                let t = Triple::new(rel, s, o);
                let holds = check(mask, &t)
                    .map_err(|e| CaptionerError::Setting(format!("relation checker: {e}")))?
                    .holds;
                if holds {
                    both_sides |= rel == Relation::OnBothSidesOf;
                    out.push((t, rel));
                }
            }
        }
    }
    Ok(out)
}

fn analysis(k: &Knowledge, pred: NetPrediction, th: &Thresholds) -> Result<ImageAnalysis> {
    let total = pred.mask.len().max(1) as f32;
    // scene
    let si = train::argmax(&pred.scene_probs);
    let scene = SceneGuess {
        scene: k.scene_name(SceneClass::ALL[si].name()),
        score: pred.scene_probs[si],
    };
    // elements with their mean confidence
    let mut conf_sum = [0f32; NUM_CLASSES];
    for (&m, &c) in pred.mask.iter().zip(&pred.confidence) {
        conf_sum[(m as usize).min(NUM_CLASSES - 1)] += c;
    }
    let conf = |e: Element, n: usize| conf_sum[e as usize] / n.max(1) as f32;
    let present: Vec<(Element, usize)> = present_elements(&pred.mask, th)
        .into_iter()
        .filter(|&(e, n)| conf(e, n) >= th.min_confidence)
        .collect();
    let mut tags: Vec<Tag> = present
        .iter()
        .filter_map(|&(e, n)| {
            lexicon_name(k, e).map(|name| Tag {
                element: name,
                score: conf(e, n),
            })
        })
        .collect();
    tags.sort_by(|a, b| b.score.total_cmp(&a.score));
    // relations on the predicted mask
    let view = MaskView::new(NET_SIZE, NET_SIZE, &pred.mask)
        .map_err(|e| CaptionerError::Setting(format!("predicted mask: {e}")))?;
    let elements: Vec<Element> = present
        .iter()
        .map(|p| p.0)
        .filter(|&e| lexicon_name(k, e).is_some())
        .collect();
    let info: HashMap<Element, (f32, f32)> = present
        .iter()
        .map(|&(e, n)| (e, (conf(e, n), n as f32 / total)))
        .collect();
    let mut triples: Vec<ScoredTriple> = holding_triples(&view, &elements)?
        .into_iter()
        .map(|(t, rel)| {
            let (s, o) = t.parse().map(|p| (p.1, p.2)).expect("built from elements");
            let w = RELATIONS.iter().find(|r| r.0 == rel).map_or(0.5, |r| r.1);
            let (cs, as_) = info[&s];
            let (co, ao) = info[&o];
            let size = (as_.min(ao) / 0.02).min(1.0).sqrt();
            ScoredTriple {
                triple: t,
                score: w * cs.min(co) * (0.5 + 0.5 * size),
            }
        })
        .collect();
    triples.sort_by(|a, b| b.score.total_cmp(&a.score));
    let candidates = candidates(k, &triples);
    Ok(ImageAnalysis {
        mask: pred.mask,
        scene,
        tags,
        triples,
        candidates,
    })
}

fn clause(t: &Triple, phrasing: usize) -> String {
    let s = strata_synth::words::sentence_with(t, phrasing);
    let s = s.trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => format!("{}{}", f.to_lowercase(), c.as_str()),
        None => String::new(),
    }
}

fn sentence(clauses: &[String]) -> String {
    let body = clauses.join(" and ");
    let mut c = body.chars();
    match c.next() {
        Some(f) => format!("{}{}.", f.to_uppercase(), c.as_str()),
        None => body,
    }
}

/// Candidate sentences from ranked triples: the best two joined, the best alone, the best
/// with the third, the second alone, the best in another phrasing, the third alone —
/// deduplicated, each checked against the golden rule.
fn candidates(k: &Knowledge, triples: &[ScoredTriple]) -> Vec<Candidate> {
    // the best triple of each element pair, so two clauses never repeat a pair
    let mut picked: Vec<&ScoredTriple> = Vec::new();
    for t in triples {
        let pair = |x: &Triple| {
            let mut p = [x.subject.clone(), x.object.clone()];
            p.sort();
            p
        };
        if !picked.iter().any(|p| pair(&p.triple) == pair(&t.triple)) {
            picked.push(t);
        }
        if picked.len() == 3 {
            break;
        }
    }
    let mut plan: Vec<(Vec<(usize, usize)>, String)> = Vec::new();
    if picked.len() >= 2 {
        plan.push((vec![(0, 0), (1, 0)], "relations 1+2".into()));
    }
    if !picked.is_empty() {
        plan.push((vec![(0, 0)], "relation 1".into()));
    }
    if picked.len() >= 3 {
        plan.push((vec![(0, 0), (2, 0)], "relations 1+3".into()));
    }
    if picked.len() >= 2 {
        plan.push((vec![(1, 0)], "relation 2".into()));
    }
    if !picked.is_empty() {
        plan.push((vec![(0, 1)], "relation 1, phrasing 2".into()));
    }
    if picked.len() >= 3 {
        plan.push((vec![(2, 0)], "relation 3".into()));
    }
    let mut out: Vec<Candidate> = Vec::new();
    for (parts, label) in plan {
        let clauses: Vec<String> = parts
            .iter()
            .map(|&(i, ph)| clause(&picked[i].triple, ph))
            .collect();
        let text = sentence(&clauses);
        if out.iter().any(|c| c.text == text) || !analyze(k, &text).passes_golden_rule() {
            continue;
        }
        let score = parts
            .iter()
            .map(|&(i, _)| picked[i].score)
            .fold(f32::INFINITY, f32::min);
        out.push(Candidate {
            text,
            decoding: format!("mask relations: {label} (score {score:.2})"),
        });
        if out.len() == MAX_CANDIDATES {
            break;
        }
    }
    out
}

impl ImageScene for EmbeddedCaptioner {
    fn name(&self) -> String {
        self.source.clone()
    }

    fn classify(&mut self, image: &RgbImage) -> Result<Option<SceneGuess>> {
        let min = self.thresholds.min_scene_probability;
        let s = &self.analyze(image)?.scene;
        Ok((s.score >= min).then(|| s.clone()))
    }
}

impl ImageCaptioner for EmbeddedCaptioner {
    fn name(&self) -> String {
        self.source.clone()
    }

    /// Deterministic: the candidates come from the mask, so `seed` is not used.
    fn candidates<'a>(
        &'a mut self,
        image: &'a RgbImage,
        _seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Candidate>> + 'a>> {
        let c = self.analyze(image)?.candidates.clone();
        Ok(Box::new(c.into_iter().map(Ok)))
    }
}

impl ImageTagger for EmbeddedCaptioner {
    fn name(&self) -> String {
        self.source.clone()
    }

    fn tag(&mut self, image: &RgbImage) -> Result<Vec<Tag>> {
        Ok(self.analyze(image)?.tags.clone())
    }
}

/// The captioner's agreement with the generator's ground truth on held-out scenes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaptionAccuracy {
    /// Share of scenes whose scene head picks the generated scene concept.
    pub scene_accuracy: f64,
    /// Over all scenes: predicted elements that the generator lists / all predicted.
    pub element_precision: f64,
    /// Generator-listed elements that are predicted / all listed.
    pub element_recall: f64,
    pub element_f1: f64,
    /// Triples holding on the predicted mask (among the reported elements) that also hold on
    /// the true mask (among the generator's elements), both by [`holding_triples`] / all
    /// predicted.
    pub triple_precision: f64,
    /// Triples holding on the true mask that are also predicted / all true.
    pub triple_recall: f64,
    pub images: usize,
}

/// [`evaluate`] with the compiled-in weights.
pub fn evaluate_default(count: usize, seed: u64) -> Result<CaptionAccuracy> {
    evaluate(&EmbeddedCaptioner::load_default()?, count, seed)
}

/// Caption accuracy on `count` generated 64-px scenes: scene `i` has class `i mod 11` and
/// seed `strata_synth::dataset::scene_seed(seed, i)`. The truth is the generator's element
/// list (lexicon names) and the triples [`holding_triples`] finds on the true mask among
/// the elements of that list.
pub fn evaluate(captioner: &EmbeddedCaptioner, count: usize, seed: u64) -> Result<CaptionAccuracy> {
    let th = captioner.thresholds;
    Ok(evaluate_thresholds(captioner, count, seed, &[th])?.remove(0))
}

/// [`evaluate`] for several threshold settings at once (the network and the truth run once).
pub fn evaluate_thresholds(
    captioner: &EmbeddedCaptioner,
    count: usize,
    seed: u64,
    settings: &[Thresholds],
) -> Result<Vec<CaptionAccuracy>> {
    let k = &captioner.knowledge;
    let held = train::samples(count, seed);
    let imgs: Vec<&RgbImage> = held.iter().map(|h| &h.rgb).collect();
    let preds = captioner.net.predict(&imgs)?;
    let mut truths = Vec::with_capacity(held.len());
    for sample in &held {
        let view = MaskView::new(NET_SIZE, NET_SIZE, &sample.mask)
            .map_err(|e| CaptionerError::Setting(format!("true mask: {e}")))?;
        let true_elements: Vec<Element> = sample
            .elements
            .iter()
            .filter_map(|n| Element::from_name(n))
            .filter(|&e| lexicon_name(k, e).is_some())
            .collect();
        let names: Vec<String> = true_elements
            .iter()
            .filter_map(|&e| lexicon_name(k, e))
            .collect();
        let triples: Vec<Triple> = holding_triples(&view, &true_elements)?
            .into_iter()
            .map(|t| t.0)
            .collect();
        truths.push((names, triples));
    }
    let mut out = Vec::with_capacity(settings.len());
    for th in settings {
        let mut scene_ok = 0usize;
        let (mut etp, mut efp, mut efn) = (0usize, 0usize, 0usize);
        let (mut ttp, mut tfp, mut tfn) = (0usize, 0usize, 0usize);
        for ((sample, pred), (truth, true_triples)) in held.iter().zip(&preds).zip(&truths) {
            let a = analysis(k, pred.clone(), th)?;
            if a.scene.scene == k.scene_name(sample.scene.name()) {
                scene_ok += 1;
            }
            let pred_el: Vec<&String> = a.tags.iter().map(|t| &t.element).collect();
            etp += pred_el.iter().filter(|p| truth.contains(p)).count();
            efp += pred_el.iter().filter(|p| !truth.contains(p)).count();
            efn += truth.iter().filter(|t| !pred_el.contains(t)).count();
            let pred_triples: Vec<&Triple> = a.triples.iter().map(|t| &t.triple).collect();
            ttp += pred_triples
                .iter()
                .filter(|t| true_triples.contains(t))
                .count();
            tfp += pred_triples
                .iter()
                .filter(|t| !true_triples.contains(t))
                .count();
            tfn += true_triples
                .iter()
                .filter(|t| !pred_triples.contains(t))
                .count();
        }
        let ratio = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        let p = ratio(etp, etp + efp);
        let r = ratio(etp, etp + efn);
        out.push(CaptionAccuracy {
            scene_accuracy: ratio(scene_ok, held.len()),
            element_precision: p,
            element_recall: r,
            element_f1: 2.0 * p * r / (p + r),
            triple_precision: ratio(ttp, ttp + tfp),
            triple_recall: ratio(ttp, ttp + tfn),
            images: held.len(),
        });
    }
    Ok(out)
}
