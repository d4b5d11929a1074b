//! strata-captioner: hierarchical captions from pixels. The networks that fill
//! `strata caption`'s three plug-in points (scene, relation sentence, elements) when a
//! dataset brings no sentences of its own, or as extra candidates when it does.
//!
//! * [`parts`]: the traits each network implements ([`ImageScene`], [`ImageCaptioner`],
//!   [`ImageTagger`]) on a decoded image.
//! * [`embedded`]: the default captioner compiled into the binary (a small segmenter with a
//!   scene head trained on `strata-synth` scenes; relations from the mask).

pub mod embedded;
pub mod error;
pub mod parts;

pub use embedded::{evaluate_default, CaptionAccuracy, EmbeddedCaptioner};
pub use error::{CaptionerError, Result};
pub use parts::{Candidate, ImageCaptioner, ImageScene, ImageTagger, SceneGuess, Tag};
