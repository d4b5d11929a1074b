//! strata-captioner: hierarchical captions from pixels. The networks that fill
//! `strata caption`'s three plug-in points (scene, relation sentence, elements) when a
//! dataset brings no sentences of its own, or as extra candidates when it does.
//!
//! * [`parts`]: the traits each network implements ([`ImageScene`], [`ImageCaptioner`],
//!   [`ImageTagger`]) on a decoded image.
//! * [`onnx_tagger`] (feature `onnx`, on by default): an [`ImageTagger`] running a WD14 or
//!   DeepDanbooru ONNX tagger through tract, tags mapped to lexicon elements.

pub mod error;
#[cfg(feature = "onnx")]
pub mod onnx_tagger;
pub mod parts;

pub use error::{CaptionerError, Result};
#[cfg(feature = "onnx")]
pub use onnx_tagger::{Convention, Layout, OnnxTagger, OnnxTaggerOptions};
pub use parts::{Candidate, ImageCaptioner, ImageScene, ImageTagger, SceneGuess, Tag};
