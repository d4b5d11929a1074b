//! An element tagger running a multi-label ONNX image tagger (WD14 / DeepDanbooru style)
//! through tract, a pure-Rust ONNX runtime: nothing to install besides the model files.
//!
//! Two conventions are understood, chosen from the tag file found next to the model (or
//! forced with [`OnnxTaggerOptions::convention`]):
//!
//! * [`Convention::Wd14`] (SmilingWolf's `wd-v1-4-*-tagger` and the taggers trained like
//!   them): `selected_tags.csv` (columns `tag_id,name,category,count`); the image is padded
//!   to a square with white (the extra split evenly, the smaller half left/top), resized to
//!   the model's input size, fed as **BGR** floats in `0..=255`.
//! * [`Convention::DeepDanbooru`]: `tags.txt`, one tag a line; the image is resized to the
//!   input size (no padding), fed as **RGB** floats in `0..=1`.
//!
//! The input size and layout (NHWC or NCHW) come from the model's input shape; the batch
//! dimension is fixed to 1 before tract optimises the graph. Resizing uses Pillow's filters
//! (strata-image reproduces them exactly): box (area average) when the image's longer side
//! shrinks, Lanczos when it grows, the same choice kohya's WD14 script makes with OpenCV's
//! `INTER_AREA` / `INTER_LANCZOS4` (OpenCV's kernels differ slightly from Pillow's).
//!
//! Both conventions' published models end in a sigmoid, so their outputs are read as
//! probabilities; [`OnnxTaggerOptions::apply_sigmoid`] is for a model exported without it
//! (an output outside `[0, 1]` without that option is reported as an error).
//!
//! Tags become SRKC lexicon elements through [`Knowledge::element`] (underscores read as
//! spaces, so `swimming_pool` → `swimming pool`, `trees` → `tree`), after an optional
//! user mapping file (CSV `tag,element`; an empty element drops the tag). Tags that map to
//! nothing are ignored; [`OnnxTagger::mapped_tags`] and the provenance name say how many map.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_caption::Knowledge;
use strata_image::{resize, Filter, RgbImage};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::error::{CaptionerError, Result};
use crate::parts::{ImageTagger, Tag};

/// The WD14 users' usual threshold for general tags.
pub const DEFAULT_THRESHOLD: f32 = 0.35;

const WD14_HINT: &str = "download SmilingWolf/wd-v1-4-convnext-tagger-v2 (model.onnx and \
     selected_tags.csv) from Hugging Face into one folder and pass that folder";
const DD_HINT: &str = "a DeepDanbooru ONNX export needs its tags.txt (one tag a line, in the \
     model's output order) next to model.onnx";

/// How a tagger expects its input and lists its tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Convention {
    /// WD14 taggers: `selected_tags.csv`, white square padding, BGR, 0–255.
    Wd14,
    /// DeepDanbooru exports: `tags.txt`, plain resize, RGB, 0–1.
    #[cfg_attr(feature = "clap", value(name = "deepdanbooru"))]
    DeepDanbooru,
}

impl Convention {
    /// The tag file the convention ships with.
    pub fn tag_file_name(self) -> &'static str {
        match self {
            Convention::Wd14 => "selected_tags.csv",
            Convention::DeepDanbooru => "tags.txt",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Convention::Wd14 => "wd14",
            Convention::DeepDanbooru => "deepdanbooru",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Convention::Wd14 => WD14_HINT,
            Convention::DeepDanbooru => DD_HINT,
        }
    }
}

/// Where the channels sit in the model's 4-d input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[batch, height, width, 3]` (WD14, DeepDanbooru: Keras exports).
    Nhwc,
    /// `[batch, 3, height, width]` (PyTorch exports).
    Nchw,
}

/// Settings of [`OnnxTagger::load`]; `Default` gives the WD14 users' defaults.
#[derive(Debug, Clone)]
pub struct OnnxTaggerOptions {
    /// Force a convention instead of detecting it from the tag file present.
    pub convention: Option<Convention>,
    /// The tag file, when it is not `selected_tags.csv` / `tags.txt` next to the model.
    /// A `.csv` file is read as WD14's CSV (a `name` column), anything else as one tag a line.
    pub tags_file: Option<PathBuf>,
    /// CSV `tag,element` mapping tags the lexicon does not know (an empty element ignores
    /// the tag). Applied before the lexicon.
    pub mapping_file: Option<PathBuf>,
    /// Score a tag must reach, in `[0, 1]`.
    pub threshold: f32,
    /// Per-tag thresholds, keyed by a tag name from the tag file or by an element name (then
    /// for every tag mapping to it); a tag's own entry wins over its element's.
    pub thresholds: BTreeMap<String, f32>,
    /// Apply a sigmoid to the outputs (for a model exported without its final sigmoid).
    pub apply_sigmoid: bool,
    /// Resize filter; `None`: box when shrinking, Lanczos when enlarging.
    pub filter: Option<Filter>,
    /// Input side for a model whose input height/width are not fixed (default: 448 for
    /// WD14, 512 for DeepDanbooru). Ignored when the model fixes them.
    pub input_size: Option<usize>,
}

impl Default for OnnxTaggerOptions {
    fn default() -> Self {
        OnnxTaggerOptions {
            convention: None,
            tags_file: None,
            mapping_file: None,
            threshold: DEFAULT_THRESHOLD,
            thresholds: BTreeMap::new(),
            apply_sigmoid: false,
            filter: None,
            input_size: None,
        }
    }
}

/// A loaded ONNX tagger with its tag → element mapping. See the module documentation.
pub struct OnnxTagger {
    model_path: PathBuf,
    tags_path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    convention: Convention,
    layout: Layout,
    width: usize,
    height: usize,
    tags: Vec<String>,
    /// Per tag: the element it maps to (index into `elements`).
    tag_element: Vec<Option<usize>>,
    tag_threshold: Vec<f32>,
    elements: Vec<String>,
    apply_sigmoid: bool,
    filter: Option<Filter>,
}

impl std::fmt::Debug for OnnxTagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxTagger")
            .field("model", &self.model_path)
            .field("tags", &self.tags_path)
            .field("convention", &self.convention)
            .field("layout", &self.layout)
            .field("input", &(self.width, self.height))
            .field("mapped_tags", &self.mapped_tags())
            .finish()
    }
}

fn weights(path: &Path, what: impl Into<String>, hint: impl Into<String>) -> CaptionerError {
    CaptionerError::Weights {
        path: path.to_path_buf(),
        what: what.into(),
        hint: hint.into(),
    }
}

fn bad_field(path: &Path, field: impl Into<String>, what: impl Into<String>) -> CaptionerError {
    CaptionerError::BadField {
        path: path.to_path_buf(),
        field: field.into(),
        what: what.into(),
    }
}

/// `model.onnx` itself, or the `.onnx` file in a folder (`model.onnx`, else the only one).
fn find_model(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(weights(
            path,
            "no such ONNX model file or folder",
            format!("pass a folder holding model.onnx and its tag file, e.g. {WD14_HINT}"),
        ));
    }
    let inside = path.join("model.onnx");
    if inside.is_file() {
        return Ok(inside);
    }
    let read = std::fs::read_dir(path).map_err(|e| CaptionerError::Io {
        path: path.to_path_buf(),
        what: "cannot list the model folder".into(),
        source: e,
    })?;
    let mut onnx: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("onnx"))
        })
        .collect();
    onnx.sort();
    match onnx.len() {
        1 => Ok(onnx.remove(0)),
        0 => Err(weights(
            path,
            "no model.onnx (nor any .onnx file) in this folder",
            WD14_HINT,
        )),
        _ => Err(weights(
            path,
            format!("{} .onnx files and none is named model.onnx", onnx.len()),
            "pass the model file itself",
        )),
    }
}

/// The tag file and the convention: from the options, else from the files present.
fn find_tags(model: &Path, options: &OnnxTaggerOptions) -> Result<(PathBuf, Convention)> {
    let dir = model.parent().unwrap_or(Path::new("."));
    if let Some(t) = &options.tags_file {
        if !t.is_file() {
            return Err(weights(
                t,
                "tag file not found",
                "pass the tag file that came with the model (selected_tags.csv or tags.txt)",
            ));
        }
        let conv = options.convention.unwrap_or(if is_csv(t) {
            Convention::Wd14
        } else {
            Convention::DeepDanbooru
        });
        return Ok((t.clone(), conv));
    }
    let candidates: Vec<Convention> = match options.convention {
        Some(c) => vec![c],
        None => vec![Convention::Wd14, Convention::DeepDanbooru],
    };
    for c in &candidates {
        let p = dir.join(c.tag_file_name());
        if p.is_file() {
            return Ok((p, *c));
        }
    }
    let (what, hint) = match options.convention {
        Some(c) => (
            format!("no {} next to the model", c.tag_file_name()),
            c.hint().to_string(),
        ),
        None => (
            "no tag file next to the model (selected_tags.csv for a WD14 tagger, tags.txt for \
             DeepDanbooru)"
                .to_string(),
            WD14_HINT.to_string(),
        ),
    };
    Err(weights(model, what, hint))
}

fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv"))
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| CaptionerError::Io {
        path: path.to_path_buf(),
        what: format!("cannot read the {what}"),
        source: e,
    })
}

/// Tag names in output order: a CSV with a `name` column, or one tag a line.
fn read_tags(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path, "tag file")?;
    if !is_csv(path) {
        let tags: Vec<String> = text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if tags.is_empty() {
            return Err(bad_field(path, "tags", "no tags in the file"));
        }
        return Ok(tags);
    }
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers = rd
        .headers()
        .map_err(|e| bad_field(path, "header", e.to_string()))?
        .clone();
    let col = headers.iter().position(|h| h.trim() == "name").ok_or_else(|| {
        bad_field(
            path,
            "header",
            format!(
                "no `name` column (found {}); a WD14 selected_tags.csv has tag_id,name,category,count",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        )
    })?;
    let mut tags = Vec::new();
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| bad_field(path, format!("row {}", i + 2), e.to_string()))?;
        let name = rec.get(col).map(str::trim).unwrap_or("");
        if name.is_empty() {
            return Err(bad_field(
                path,
                format!("row {} name", i + 2),
                "empty tag name",
            ));
        }
        tags.push(name.to_string());
    }
    if tags.is_empty() {
        return Err(bad_field(path, "tags", "no tag rows after the header"));
    }
    Ok(tags)
}

/// The user mapping file: tag → element (canonical name), or `None` to drop the tag.
fn read_mapping(path: &Path, knowledge: &Knowledge) -> Result<HashMap<String, Option<String>>> {
    if !path.is_file() {
        return Err(weights(
            path,
            "mapping file not found",
            "write a CSV with the header `tag,element`, one tag a row",
        ));
    }
    let text = read_text(path, "mapping file")?;
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers = rd
        .headers()
        .map_err(|e| bad_field(path, "header", e.to_string()))?
        .clone();
    let h: Vec<&str> = headers.iter().map(str::trim).collect();
    if h.len() != 2 || h[0] != "tag" || h[1] != "element" {
        return Err(bad_field(
            path,
            "header",
            format!("expected `tag,element`, found `{}`", h.join(",")),
        ));
    }
    let mut map = HashMap::new();
    for (i, rec) in rd.records().enumerate() {
        let row = i + 2;
        let rec = rec.map_err(|e| bad_field(path, format!("row {row}"), e.to_string()))?;
        let tag = rec.get(0).unwrap_or("").trim();
        let element = rec.get(1).unwrap_or("").trim();
        if tag.is_empty() {
            return Err(bad_field(path, format!("row {row} tag"), "empty tag"));
        }
        let target = if element.is_empty() {
            None
        } else {
            let canon = knowledge.element(element).ok_or_else(|| {
                bad_field(
                    path,
                    format!("row {row} element"),
                    format!(
                        "`{element}` is not an element of the lexicon (use a lexicon name or \
                         alias, or leave it empty to ignore the tag)"
                    ),
                )
            })?;
            Some(canon.to_string())
        };
        if map.insert(tag.to_string(), target).is_some() {
            return Err(bad_field(
                path,
                format!("row {row} tag"),
                format!("`{tag}` is mapped twice"),
            ));
        }
    }
    Ok(map)
}

/// The lexicon element a tag names: the tag with `_` read as spaces, as a lexicon name,
/// alias or plural.
pub fn tag_element<'k>(knowledge: &'k Knowledge, tag: &str) -> Option<&'k str> {
    let phrase = tag.replace('_', " ");
    knowledge.element(phrase.trim())
}

/// The input tensor for `image`, flattened in the model's layout (batch 1), after the
/// convention's preprocessing (see the module documentation). `filter: None` picks box when
/// the longer side shrinks, Lanczos otherwise.
pub fn preprocess(
    image: &RgbImage,
    convention: Convention,
    layout: Layout,
    width: usize,
    height: usize,
    filter: Option<Filter>,
) -> Vec<f32> {
    let target = width.max(height);
    let pick = |longer: usize| {
        filter.unwrap_or(if longer > target {
            Filter::Box
        } else {
            Filter::Lanczos
        })
    };
    let (resized, bgr, scale) = match convention {
        Convention::Wd14 => {
            let sq = pad_to_white_square(image);
            let f = pick(sq.width);
            (resize(&sq, width, height, f), true, 1.0f32)
        }
        Convention::DeepDanbooru => {
            let f = pick(image.width.max(image.height));
            (resize(image, width, height, f), false, 255.0f32)
        }
    };
    let px = &resized.data;
    let mut out = vec![0f32; width * height * 3];
    for y in 0..height {
        for x in 0..width {
            let i = (y * width + x) * 3;
            for c in 0..3 {
                let src = if bgr { 2 - c } else { c };
                let v = px[i + src] as f32 / scale;
                let o = match layout {
                    Layout::Nhwc => i + c,
                    Layout::Nchw => (c * height + y) * width + x,
                };
                out[o] = v;
            }
        }
    }
    out
}

/// Pads to a square with white, the extra split with the smaller half left / on top.
fn pad_to_white_square(image: &RgbImage) -> RgbImage {
    let (w, h) = (image.width, image.height);
    let side = w.max(h);
    if w == h {
        return image.clone();
    }
    let (left, top) = ((side - w) / 2, (side - h) / 2);
    let mut data = vec![255u8; side * side * 3];
    for y in 0..h {
        let src = &image.data[y * w * 3..(y + 1) * w * 3];
        let o = ((y + top) * side + left) * 3;
        data[o..o + w * 3].copy_from_slice(src);
    }
    RgbImage::new(side, side, data).expect("buffer sized for the square")
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl OnnxTagger {
    /// Loads `model_path` (a `.onnx` file or a folder holding `model.onnx`), its tag file and
    /// the tag → element mapping. Fails with a message naming the file and what to do when
    /// the model or tag file is missing, the model's input is not a 4-d image, or the tag
    /// count differs from the model's output width.
    pub fn load(
        model_path: &Path,
        knowledge: &Knowledge,
        options: &OnnxTaggerOptions,
    ) -> Result<Self> {
        check_threshold("threshold", options.threshold)?;
        for (k, v) in &options.thresholds {
            check_threshold(&format!("threshold for `{k}`"), *v)?;
        }
        let model_file = find_model(model_path)?;
        let (tags_path, convention) = find_tags(&model_file, options)?;
        let tags = read_tags(&tags_path)?;

        let model = tract_onnx::onnx()
            .model_for_path(&model_file)
            .map_err(|e| {
                weights(
                    &model_file,
                    format!("tract cannot read this ONNX model: {e:#}"),
                    convention.hint(),
                )
            })?;
        if model.inputs.len() != 1 {
            return Err(weights(
                &model_file,
                format!(
                    "the model has {} inputs; a tagger takes one image",
                    model.inputs.len()
                ),
                convention.hint(),
            ));
        }
        let fact = model.input_fact(0).map_err(|e| {
            weights(
                &model_file,
                format!("no input description: {e:#}"),
                convention.hint(),
            )
        })?;
        let dims: Vec<Option<usize>> = fact
            .shape
            .dims()
            .map(|d| match d.concretize() {
                Some(TDim::Val(v)) => usize::try_from(v).ok(),
                _ => None,
            })
            .collect();
        let shape_text = dims
            .iter()
            .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        if dims.len() != 4 || fact.shape.is_open() {
            return Err(weights(
                &model_file,
                format!(
                    "input shape [{shape_text}] has rank {}; an image tagger takes a rank-4 \
                     batch of images, [batch, height, width, 3] or [batch, 3, height, width]",
                    dims.len()
                ),
                convention.hint(),
            ));
        }
        let (layout, h, w) = if dims[3] == Some(3) {
            (Layout::Nhwc, dims[1], dims[2])
        } else if dims[1] == Some(3) {
            (Layout::Nchw, dims[2], dims[3])
        } else {
            return Err(weights(
                &model_file,
                format!(
                    "input shape [{shape_text}] has no channel axis of size 3 (last for NHWC, \
                     second for NCHW)"
                ),
                convention.hint(),
            ));
        };
        let fallback = options.input_size.unwrap_or(match convention {
            Convention::Wd14 => 448,
            Convention::DeepDanbooru => 512,
        });
        let (height, width) = (h.unwrap_or(fallback), w.unwrap_or(fallback));
        if width == 0 || height == 0 {
            return Err(CaptionerError::Setting(
                "input size: must be at least 1 pixel".into(),
            ));
        }
        let shape: [usize; 4] = match layout {
            Layout::Nhwc => [1, height, width, 3],
            Layout::Nchw => [1, 3, height, width],
        };
        let tract_err = |stage: &str, e: TractError| {
            weights(
                &model_file,
                format!("tract cannot {stage} this model: {e:#}"),
                "check that the model is a plain image tagger export (opset 11 or later); see \
                 docs/caption-onnx.md for what tract runs",
            )
        };
        let typed = model
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(|e| tract_err("set the input of", e))?
            .into_optimized()
            .map_err(|e| tract_err("optimise", e))?;
        let out_fact = typed
            .output_fact(0)
            .map_err(|e| tract_err("type the output of", e))?;
        let out_width = out_fact
            .shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>())
            .ok_or_else(|| {
                weights(
                    &model_file,
                    format!(
                        "the output shape {:?} is not fixed for one image",
                        out_fact.shape
                    ),
                    convention.hint(),
                )
            })?;
        if out_width != tags.len() {
            return Err(weights(
                &tags_path,
                format!(
                    "{} tags, but the model {} has {} outputs",
                    tags.len(),
                    model_file.display(),
                    out_width
                ),
                "use the tag file that was published with this model (same folder, same \
                 version)",
            ));
        }
        let plan = typed.into_runnable().map_err(|e| tract_err("plan", e))?;

        // Tag → element.
        let mapping = match &options.mapping_file {
            Some(p) => read_mapping(p, knowledge)?,
            None => HashMap::new(),
        };
        let mut elements: Vec<String> = Vec::new();
        let mut element_ix: HashMap<String, usize> = HashMap::new();
        let mut tag_element_ix = Vec::with_capacity(tags.len());
        for t in &tags {
            let el: Option<String> = match mapping.get(t) {
                Some(target) => target.clone(),
                None => tag_element(knowledge, t).map(str::to_string),
            };
            tag_element_ix.push(el.map(|e| {
                *element_ix.entry(e.clone()).or_insert_with(|| {
                    elements.push(e);
                    elements.len() - 1
                })
            }));
        }

        // Thresholds: the tag's own, else its element's, else the global one.
        let tag_set: HashMap<&str, usize> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        for k in options.thresholds.keys() {
            if !tag_set.contains_key(k.as_str()) && knowledge.element(k).is_none() {
                return Err(CaptionerError::Setting(format!(
                    "threshold for `{k}`: neither a tag of {} nor a lexicon element",
                    tags_path.display()
                )));
            }
        }
        let by_element: HashMap<String, f32> = options
            .thresholds
            .iter()
            .filter(|(k, _)| !tag_set.contains_key(k.as_str()))
            .filter_map(|(k, v)| knowledge.element(k).map(|e| (e.to_string(), *v)))
            .collect();
        let tag_threshold = tags
            .iter()
            .zip(&tag_element_ix)
            .map(|(t, e)| {
                options
                    .thresholds
                    .get(t)
                    .copied()
                    .or_else(|| e.and_then(|e| by_element.get(&elements[e]).copied()))
                    .unwrap_or(options.threshold)
            })
            .collect();

        Ok(OnnxTagger {
            model_path: model_file,
            tags_path,
            plan,
            convention,
            layout,
            width,
            height,
            tags,
            tag_element: tag_element_ix,
            tag_threshold,
            elements,
            apply_sigmoid: options.apply_sigmoid,
            filter: options.filter,
        })
    }

    pub fn convention(&self) -> Convention {
        self.convention
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The model's input `(width, height)`.
    pub fn input_size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The model file that was loaded.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The tag file that was read.
    pub fn tags_path(&self) -> &Path {
        &self.tags_path
    }

    /// All tags, in the model's output order.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// How many tags map to a lexicon element (the others are ignored).
    pub fn mapped_tags(&self) -> usize {
        self.tag_element.iter().filter(|e| e.is_some()).count()
    }

    /// The element the `i`-th tag maps to.
    pub fn element_of(&self, i: usize) -> Option<&str> {
        self.tag_element
            .get(i)
            .copied()
            .flatten()
            .map(|e| self.elements[e].as_str())
    }

    /// The threshold applied to the `i`-th tag.
    pub fn threshold_of(&self, i: usize) -> Option<f32> {
        self.tag_threshold.get(i).copied()
    }

    /// The input tensor this tagger feeds for `image` (flattened, model layout).
    pub fn input_tensor(&self, image: &RgbImage) -> Vec<f32> {
        preprocess(
            image,
            self.convention,
            self.layout,
            self.width,
            self.height,
            self.filter,
        )
    }

    /// One score per tag, in tag order (probabilities; the sigmoid applied first when the
    /// options ask for it).
    pub fn scores(&mut self, image: &RgbImage) -> Result<Vec<f32>> {
        let data = self.input_tensor(image);
        let shape: [usize; 4] = match self.layout {
            Layout::Nhwc => [1, self.height, self.width, 3],
            Layout::Nchw => [1, 3, self.height, self.width],
        };
        let run_err = |e: TractError| {
            weights(
                &self.model_path,
                format!("running the model failed: {e:#}"),
                "check that the model is a plain image tagger export; see docs/caption-onnx.md",
            )
        };
        let input = Tensor::from_shape(&shape, &data).map_err(run_err)?;
        let out = self.plan.run(tvec!(input.into_tvalue())).map_err(run_err)?;
        let out = out[0].cast_to::<f32>().map_err(run_err)?;
        let mut scores = out
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
            .map_err(run_err)?;
        if self.apply_sigmoid {
            scores.iter_mut().for_each(|s| *s = sigmoid(*s));
        } else if let Some((i, v)) = scores
            .iter()
            .enumerate()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(weights(
                &self.model_path,
                format!(
                    "output {i} (tag `{}`) is {v}, not a probability in [0, 1]",
                    self.tags[i]
                ),
                "this model ends without a sigmoid: load it with the apply-sigmoid option",
            ));
        }
        Ok(scores)
    }

    /// The mapped elements whose tag scores reach their thresholds, most confident first
    /// (the highest score when several tags map to one element; ties by name).
    pub fn tags_from_scores(&self, scores: &[f32]) -> Vec<Tag> {
        let mut best: Vec<Option<f32>> = vec![None; self.elements.len()];
        for (i, &s) in scores.iter().enumerate().take(self.tags.len()) {
            let Some(e) = self.tag_element[i] else {
                continue;
            };
            if s >= self.tag_threshold[i] && best[e].is_none_or(|b| s > b) {
                best[e] = Some(s);
            }
        }
        let mut out: Vec<Tag> = best
            .into_iter()
            .enumerate()
            .filter_map(|(e, s)| {
                s.map(|score| Tag {
                    element: self.elements[e].clone(),
                    score,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.element.cmp(&b.element))
        });
        out
    }
}

fn check_threshold(what: &str, v: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(CaptionerError::Setting(format!(
            "{what}: {v} is outside [0, 1]"
        )));
    }
    Ok(())
}

impl ImageTagger for OnnxTagger {
    fn name(&self) -> String {
        format!(
            "onnx:{} ({}; {} of {} tags map to elements)",
            self.model_path.display(),
            self.convention.name(),
            self.mapped_tags(),
            self.tags.len()
        )
    }

    fn tag(&mut self, image: &RgbImage) -> Result<Vec<Tag>> {
        let scores = self.scores(image)?;
        Ok(self.tags_from_scores(&scores))
    }
}
