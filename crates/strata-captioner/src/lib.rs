//! strata-captioner: hierarchical captions from pixels. The networks that fill
//! `strata caption`'s three plug-in points (scene, relation sentence, elements) when a
//! dataset brings no sentences of its own, or as extra candidates when it does.
//!
//! * [`parts`]: the traits each network implements ([`ImageScene`], [`ImageCaptioner`],
//!   [`ImageTagger`]) on a decoded image.
//! * [`on_image`]: [`caption_image`] runs them through strata-caption's pipeline (golden
//!   rule, corrections, provenance with every drawn candidate).
//! * [`embedded`]: the default, shipped in the binary: a segmenter with a scene head trained
//!   on synthetic scenes; masks → elements, the relation checker → sentences
//!   ([`EmbeddedCaptioner`], accuracy on held-out scenes by [`evaluate_default`]).
//! * [`blip`]: the relation captioner, BLIP image captioning (transformers layout) with a
//!   decode plan of greedy, beam and nucleus draws.
//! * [`open_clip`]: CLIP checkpoints in transformers' and open_clip's layouts (RemoteCLIP,
//!   GeoRSCLIP, open_clip hub folders) behind one [`ClipModel`].
//! * [`clip_tagger`]: zero-shot element tags and scene with prompt ensembles over the
//!   knowledge file, per-element thresholds calibrated for F1 ([`ClipTagger`]).
//! * [`linear_head`]: element / scene heads trained on frozen CLIP embeddings ([`Head`]).
//! * `onnx_tagger` (feature `onnx`, on by default): an [`ImageTagger`] running a WD14 or
//!   DeepDanbooru ONNX tagger through tract, tags mapped to lexicon elements.

pub mod blip;
pub mod clip_tagger;
pub mod embedded;
pub mod error;
pub mod linear_head;
pub mod on_image;
#[cfg(feature = "onnx")]
pub mod onnx_tagger;
pub mod open_clip;
pub mod parts;

pub use blip::{BlipCaptioner, DecodePlan};
pub use clip_tagger::{ClipTagger, ZeroShotOptions};
pub use embedded::{evaluate_default, CaptionAccuracy, EmbeddedCaptioner};
pub use error::{CaptionerError, Result};
pub use linear_head::{train_head, Head, HeadOptions, TrainReport};
pub use on_image::{caption_image, PartScores, Parts};
#[cfg(feature = "onnx")]
pub use onnx_tagger::{Convention, Layout, OnnxTagger, OnnxTaggerOptions};
pub use open_clip::{ClipModel, ClipOptions};
pub use parts::{Candidate, ImageCaptioner, ImageScene, ImageTagger, SceneGuess, Tag};
