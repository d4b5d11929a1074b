//! strata-eval: the paper's metrics, relation fidelity and the comparison report.
//!
//! - [`fid`]: Fréchet distance and KID on any feature matrices (f64, symmetric
//!   eigendecomposition through faer), checked against scipy / numpy fixtures.
//! - [`seg`]: the [`seg::Segmenter`] trait (masks, scenes, pooled features) and strata's
//!   small SegNet (tiny U-Net trained on procedural scenes); the segmenter's masks feed
//!   [`fidelity`] (relation fidelity through the synth relation checker) and its pooled
//!   features give the "strata-synthetic FID" (not comparable to standard FID). The
//!   embedded captioner's network implements the trait in strata-captioner.
//! - [`per_image`]: every per-image value of a run, for paired comparisons and bootstrap
//!   intervals.
//! - [`metrics`]: every metric behind one trait ([`metrics::MetricImpl`]), with the shared
//!   [`metrics::EvalContext`] (images decoded once, segmenter predictions, captions).
//! - [`run`] / [`report`]: `strata eval` — the evaluation loop; metrics.json, the
//!   paper-shaped table, report.html (written with `strata-report`).

pub mod backbone;
pub mod clipscore;
pub mod error;
pub mod fid;
pub mod fidelity;
pub mod gshps;
pub mod images;
pub mod inception;
pub mod linalg;
pub mod lpips;
pub mod metrics;
pub mod per_image;
pub mod pieapp;
pub mod pool;
pub mod report;
pub mod run;
pub mod seg;
pub mod stats;
pub mod weights;

pub use error::EvalError;
pub use fid::{frechet_distance, frechet_distance_features, kid, kid_with_subsets, Features, Kid};
pub use per_image::ImageValues;
pub use run::{evaluate, EvalOptions, EvalReport, GeneratedSet, Metric, WeightPaths};
