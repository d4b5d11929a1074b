//! Errors of the training crate: each names the file or option at fault and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    #[error("invalid option {field}: {what}")]
    Config { field: String, what: String },
    #[error("{what} failed")]
    Candle {
        what: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: {what}")]
    Dataset { path: PathBuf, what: String },
    #[error(transparent)]
    Model(#[from] strata_models::pipeline::ModelLoadError),
    /// The run folder is locked by another process (or cannot be locked).
    #[error(transparent)]
    Locked(#[from] strata_io::lock::LockError),
    #[error(
        "the loss became {value} at step {step}; training stopped. The last good checkpoint is {checkpoint}; \
lower the learning rate (--lr) or enable warm-up (--warmup-steps), then resume with --resume"
    )]
    NonFinite {
        step: u64,
        value: f32,
        checkpoint: String,
    },
    /// Reading or writing an image (the message names the file).
    #[error(transparent)]
    Image(#[from] strata_image::ImageError),
    /// Writing or reading a model file (safetensors output, a LoRA file).
    #[error(transparent)]
    File(#[from] strata_models::ModelError),
    /// Writing the record of how the run was trained (fusion schedule, caption mode).
    #[error(transparent)]
    Fusion(#[from] strata_models::fusion::FusionError),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// Wraps a candle error with what was being done.
pub(crate) fn ce(what: impl Into<String>) -> impl FnOnce(candle_core::Error) -> TrainError {
    let what = what.into();
    move |source| TrainError::Candle { what, source }
}

/// `error: cause: cause…` in one line: an error's message followed by each `source()`, for
/// lists of per-file problems (the message itself never repeats its cause).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
