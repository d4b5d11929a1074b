//! strata-captioner: hierarchical captions from pixels. The networks that fill
//! `strata caption`'s three plug-in points (scene, relation sentence, elements) when a
//! dataset brings no sentences of its own, or as extra candidates when it does.
//!
//! * [`parts`]: the traits each network implements ([`ImageScene`], [`ImageCaptioner`],
//!   [`ImageTagger`]) on a decoded image.
//! * [`blip`]: the relation captioner, BLIP image captioning (transformers layout) with a
//!   decode plan of greedy, beam and nucleus draws.

pub mod blip;
pub mod error;
pub mod parts;

pub use blip::{BlipCaptioner, DecodePlan};
pub use error::{CaptionerError, Result};
pub use parts::{Candidate, ImageCaptioner, ImageScene, ImageTagger, SceneGuess, Tag};
