//! strata-synth: procedural top-down (aerial) scenes with exact ground truth.
//!
//! Every scene is drawn from a small layout program per scene concept (the 11 AAAAD classes)
//! into an RGB image and a per-pixel element mask at the same time, and the spatial relations
//! the layout program built on purpose are recorded as triples and stated in a relation
//! sentence with SRKC phrases. [`check`] decides from a mask alone (geometry, never the
//! generator's memory) whether a relation triple holds; it is the ground truth for the
//! relation-fidelity metric.
//!
//! ```no_run
//! use strata_synth::{generate, SceneClass, check};
//! let scene = generate(SceneClass::Park, 256, 7);
//! for t in &scene.triples {
//!     assert!(check(&scene.mask_view(), t).unwrap().holds);
//! }
//! ```

mod canvas;
pub mod check;
pub mod dataset;
mod error;
pub mod free;
pub mod grid;
mod noise;
pub mod png_io;
mod scenes;
mod types;
pub mod words;

pub use check::{check, negative, MaskView, Verdict};
pub use dataset::{write_dataset, write_dataset_with, CaptionStyle, DatasetOptions, DatasetReport};
pub use error::SynthError;
pub use grid::render_grid;
pub use scenes::{generate, Scene};
pub use types::{Element, Relation, SceneClass, Triple};

/// Smallest and largest supported image side in pixels.
pub const MIN_SIZE: u32 = 64;
pub const MAX_SIZE: u32 = 1024;
