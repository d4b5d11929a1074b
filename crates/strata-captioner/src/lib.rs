//! strata-captioner: hierarchical captions from pixels. The networks that fill
//! `strata caption`'s three plug-in points (scene, relation sentence, elements) when a
//! dataset brings no sentences of its own, or as extra candidates when it does.
//!
//! * [`parts`]: the traits each network implements ([`ImageScene`], [`ImageCaptioner`],
//!   [`ImageTagger`]) on a decoded image.
//! * [`on_image`]: [`caption_image`] runs them through strata-caption's pipeline (golden
//!   rule, corrections, provenance with every drawn candidate).

pub mod error;
pub mod on_image;
pub mod parts;

pub use error::{CaptionerError, Result};
pub use on_image::{caption_image, PartScores, Parts};
pub use parts::{Candidate, ImageCaptioner, ImageScene, ImageTagger, SceneGuess, Tag};
