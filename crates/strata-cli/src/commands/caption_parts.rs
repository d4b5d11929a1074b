//! `strata caption`'s choice of parts: where the scene, the relation sentence and the
//! elements come from. Dataset importers default to the dataset's own label, sentences and
//! lexicon; `--from images` defaults to the embedded pixel captioner. Each network is loaded
//! once and recorded by name in every record's provenance.

use crate::commands::numbers;
use std::path::PathBuf;

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{bail, Context};
use candle_core::Device;
use strata_caption::Knowledge;
use strata_captioner::{
    BlipCaptioner, Candidate, ClipOptions, ClipTagger, DecodePlan, EmbeddedCaptioner, Head,
    ImageCaptioner, ImageScene, ImageTagger, OnnxTagger, OnnxTaggerOptions, SceneGuess, Tag,
};
use strata_image::RgbImage;
use strata_models::device::DeviceSpec;

/// Where the scene comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SceneFrom {
    /// The dataset's label (folder name, label file, the caption file's field).
    Label,
    /// The embedded pixel captioner's scene head.
    Embedded,
    /// CLIP zero-shot over the knowledge file's scene names (--clip).
    Clip,
    /// A linear head trained by `strata caption train-tagger` (--head).
    Head,
}

/// Where the relation sentence's candidates come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RelationFrom {
    /// Only the sentences that came with the dataset.
    Sentences,
    /// The embedded pixel captioner (sentences from predicted masks), after the dataset's
    /// own sentences.
    Embedded,
    /// BLIP image captioning (--blip), drawn with the decode plan after the dataset's own
    /// sentences.
    Blip,
}

/// Where the element tags come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ElementsFrom {
    /// Lexicon elements named in the dataset's sentences.
    Lexicon,
    /// The embedded pixel captioner's segmentation.
    Embedded,
    /// CLIP zero-shot multi-label tagging over the element vocabulary (--clip).
    Clip,
    /// An ONNX tagger: DeepDanbooru or WD14 layout (--onnx).
    Onnx,
    /// A linear head trained by `strata caption train-tagger` (--head).
    Head,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PartArgs {
    /// Scene source [default: label, or embedded for --from images].
    #[arg(long, value_enum, value_name = "PART")]
    pub scene_from: Option<SceneFrom>,
    /// Relation sentence source [default: sentences, or embedded for --from images].
    #[arg(long, value_enum, value_name = "PART")]
    pub relation_from: Option<RelationFrom>,
    /// Element source [default: lexicon, or embedded for --from images].
    #[arg(long, value_enum, value_name = "PART")]
    pub elements_from: Option<ElementsFrom>,
    /// Pixel captioner weights (safetensors written by scripts/train-captioner.sh) instead of
    /// the embedded ones.
    #[arg(long, value_name = "FILE")]
    pub captioner_weights: Option<PathBuf>,
    /// BLIP image-captioning folder in the Hugging Face layout
    /// (Salesforce/blip-image-captioning-base or -large).
    #[arg(long, value_name = "DIR")]
    pub blip: Option<PathBuf>,
    /// BLIP decode plan, drawn in order until a sentence passes the golden rule, e.g.
    /// `greedy,beam:3,nucleus:0.9:0.7` [default: the captioner's plan].
    #[arg(long, value_name = "PLAN")]
    pub decode: Option<String>,
    /// Text prompt BLIP continues, e.g. "an aerial image of" (repeatable: the plan is drawn
    /// once per prompt).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// CLIP model: a Hugging Face CLIP folder or an open_clip checkpoint (RemoteCLIP,
    /// GeoRSCLIP: .pt / .bin / .safetensors, or a folder with open_clip_config.json).
    #[arg(long, value_name = "PATH")]
    pub clip: Option<PathBuf>,
    /// Per-element thresholds for CLIP tagging (written by --calibrate).
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// ONNX tagger model (DeepDanbooru or WD14 `model.onnx`, tags beside it).
    #[arg(long, value_name = "FILE")]
    pub onnx: Option<PathBuf>,
    /// CSV `tag,element` mapping an ONNX tagger's tags to knowledge elements (for tags the
    /// lexicon does not know).
    #[arg(long, value_name = "FILE")]
    pub tag_map: Option<PathBuf>,
    /// Score an ONNX tag must reach.
    #[arg(long, value_name = "P", value_parser = numbers::unit_f32)]
    pub tag_threshold: Option<f32>,
    /// Linear tagger/scene head from `strata caption train-tagger`.
    #[arg(long, value_name = "FILE")]
    pub head: Option<PathBuf>,
    /// Device the networks run on: cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
}

/// The parts chosen for one run (`None`: the dataset's own label / sentences / lexicon).
#[derive(Default)]
pub struct Built {
    pub scene: Option<Box<dyn ImageScene>>,
    pub captioner: Option<Box<dyn ImageCaptioner>>,
    pub tagger: Option<Box<dyn ImageTagger>>,
}

impl Built {
    /// Whether any part looks at pixels (the images are then decoded).
    pub fn any(&self) -> bool {
        self.scene.is_some() || self.captioner.is_some() || self.tagger.is_some()
    }

    /// The parts as `caption_image` takes them.
    pub fn as_parts(&mut self) -> strata_captioner::Parts<'_> {
        strata_captioner::Parts {
            scene: self.scene.as_mut().map(|p| &mut **p as _),
            captioner: self.captioner.as_mut().map(|p| &mut **p as _),
            tagger: self.tagger.as_mut().map(|p| &mut **p as _),
        }
    }

    /// The parts' names, as the provenance records them.
    pub fn names(&self) -> serde_json::Value {
        serde_json::json!({
            "scene": self.scene.as_ref().map(|p| p.name()),
            "relation": self.captioner.as_ref().map(|p| p.name()),
            "elements": self.tagger.as_ref().map(|p| p.name()),
        })
    }
}

fn need(opt: &Option<PathBuf>, flag: &str, part: &str) -> anyhow::Result<PathBuf> {
    match opt {
        Some(p) => Ok(p.clone()),
        None => bail!("{part} needs {flag}"),
    }
}

/// One loaded network serving as scene part and tagger (the calls on one image come one
/// after the other, never at once).
struct Shared<T>(Rc<RefCell<T>>);

impl<T> Shared<T> {
    fn new(t: T) -> Self {
        Shared(Rc::new(RefCell::new(t)))
    }
}

/// A part loaded because the choices need it.
fn loaded<T>(p: &Option<Shared<T>>) -> Shared<T> {
    p.clone().expect("loaded for the choices that use it")
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: ImageScene> ImageScene for Shared<T> {
    fn name(&self) -> String {
        self.0.borrow().name()
    }
    fn classify(&mut self, image: &RgbImage) -> strata_captioner::Result<Option<SceneGuess>> {
        self.0.borrow_mut().classify(image)
    }
}

impl<T: ImageTagger> ImageTagger for Shared<T> {
    fn name(&self) -> String {
        self.0.borrow().name()
    }
    fn tag(&mut self, image: &RgbImage) -> strata_captioner::Result<Vec<Tag>> {
        self.0.borrow_mut().tag(image)
    }
}

fn clip(a: &PartArgs, k: &Knowledge, device: &Device) -> anyhow::Result<ClipTagger> {
    let path = need(
        &a.clip,
        "--clip PATH (a CLIP folder or open_clip checkpoint)",
        "CLIP tagging",
    )?;
    eprintln!(
        "loading CLIP from {} and embedding the prompts…",
        path.display()
    );
    let mut t = ClipTagger::load(&path, device, k)?;
    if let Some(th) = &a.thresholds {
        t.load_thresholds(th)?;
    }
    Ok(t)
}

fn head(a: &PartArgs, device: &Device) -> anyhow::Result<Head> {
    let path = need(
        &a.head,
        "--head FILE (from `strata caption train-tagger`)",
        "a trained head",
    )?;
    Ok(Head::open(
        &path,
        a.clip.as_deref(),
        device,
        &ClipOptions::default(),
    )?)
}

/// Loads the chosen parts. `pixels_default` is true for `--from images`.
pub fn build(a: &PartArgs, k: &Knowledge, pixels_default: bool) -> anyhow::Result<Built> {
    let scene = a.scene_from.unwrap_or(if pixels_default {
        SceneFrom::Embedded
    } else {
        SceneFrom::Label
    });
    let relation = a.relation_from.unwrap_or(if pixels_default {
        RelationFrom::Embedded
    } else {
        RelationFrom::Sentences
    });
    let elements = a.elements_from.unwrap_or(if pixels_default {
        ElementsFrom::Embedded
    } else {
        ElementsFrom::Lexicon
    });
    let device = a.device.open().context("opening --device")?;
    // A network that gives both the scene and the elements is loaded once.
    let clip_part = if scene == SceneFrom::Clip || elements == ElementsFrom::Clip {
        Some(Shared::new(clip(a, k, &device)?))
    } else {
        None
    };
    let head_part = if scene == SceneFrom::Head || elements == ElementsFrom::Head {
        Some(Shared::new(head(a, &device)?))
    } else {
        None
    };
    let embedded_part = if scene == SceneFrom::Embedded
        || relation == RelationFrom::Embedded
        || elements == ElementsFrom::Embedded
    {
        Some(Shared::new(embedded(a)?))
    } else {
        None
    };
    let b = Built {
        scene: match scene {
            SceneFrom::Label => None,
            SceneFrom::Embedded => Some(Box::new(loaded(&embedded_part)) as Box<dyn ImageScene>),
            SceneFrom::Clip => Some(Box::new(loaded(&clip_part)) as _),
            SceneFrom::Head => Some(Box::new(loaded(&head_part)) as _),
        },
        captioner: match relation {
            RelationFrom::Sentences => None,
            RelationFrom::Embedded => {
                Some(Box::new(loaded(&embedded_part)) as Box<dyn ImageCaptioner>)
            }
            RelationFrom::Blip => Some(Box::new(blip(a, &device)?) as _),
        },
        tagger: match elements {
            ElementsFrom::Lexicon => None,
            ElementsFrom::Embedded => {
                Some(Box::new(loaded(&embedded_part)) as Box<dyn ImageTagger>)
            }
            ElementsFrom::Clip => Some(Box::new(loaded(&clip_part)) as _),
            ElementsFrom::Onnx => Some(Box::new(onnx(a, k)?) as _),
            ElementsFrom::Head => Some(Box::new(loaded(&head_part)) as _),
        },
    };
    if a.blip.is_some() && relation != RelationFrom::Blip {
        bail!("--blip is given but the relation comes from {relation:?}: add --relation-from blip");
    }
    if a.onnx.is_some() && elements != ElementsFrom::Onnx {
        bail!("--onnx is given but the elements come from {elements:?}: add --elements-from onnx");
    }
    Ok(b)
}

/// The embedded captioner's candidates are a handful of sentences from one network pass,
/// drawn at once so the network can be shared with the scene and element parts.
impl ImageCaptioner for Shared<EmbeddedCaptioner> {
    fn name(&self) -> String {
        ImageCaptioner::name(&*self.0.borrow())
    }
    fn candidates<'a>(
        &'a mut self,
        image: &'a RgbImage,
        seed: u64,
    ) -> strata_captioner::Result<Box<dyn Iterator<Item = strata_captioner::Result<Candidate>> + 'a>>
    {
        let drawn: Vec<_> = self.0.borrow_mut().candidates(image, seed)?.collect();
        Ok(Box::new(drawn.into_iter()))
    }
}

fn embedded(a: &PartArgs) -> anyhow::Result<EmbeddedCaptioner> {
    Ok(match &a.captioner_weights {
        Some(p) => EmbeddedCaptioner::load(p)?,
        None => EmbeddedCaptioner::load_default()?,
    })
}
fn blip(a: &PartArgs, device: &Device) -> anyhow::Result<BlipCaptioner> {
    let path = need(
        &a.blip,
        "--blip DIR (a BLIP image-captioning folder such as Salesforce/blip-image-captioning-base)",
        "BLIP sentences",
    )?;
    let mut b = BlipCaptioner::load(&path, device)?;
    if let Some(plan) = &a.decode {
        b.set_plan(DecodePlan::parse(plan).context("--decode")?);
    }
    if !a.prompt.is_empty() {
        b.set_prompts(a.prompt.iter().cloned().map(Some).collect());
    }
    Ok(b)
}

fn onnx(a: &PartArgs, k: &Knowledge) -> anyhow::Result<OnnxTagger> {
    let path = need(
        &a.onnx,
        "--onnx FILE (a WD14 or DeepDanbooru model.onnx with its tag file beside it)",
        "ONNX tagging",
    )?;
    let mut opts = OnnxTaggerOptions {
        mapping_file: a.tag_map.clone(),
        ..Default::default()
    };
    if let Some(t) = a.tag_threshold {
        opts.threshold = t;
    }
    Ok(OnnxTagger::load(&path, k, &opts)?)
}
