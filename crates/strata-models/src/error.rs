//! Errors of the model files strata writes and reads outside the loaders (safetensors
//! output, LoRA files, random model creation): each names the file or option at fault and
//! what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {what}: {source}")]
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
    #[error("{what}: {source}")]
    Candle {
        what: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: {what}")]
    Lora { path: PathBuf, what: String },
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// Wraps a candle error with what was being done.
pub(crate) fn ce(what: impl Into<String>) -> impl FnOnce(candle_core::Error) -> ModelError {
    let what = what.into();
    move |source| ModelError::Candle { what, source }
}

/// Wraps an I/O error with the path and what was being done.
pub(crate) fn io(
    path: &std::path::Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |source| ModelError::Io { path, what, source }
}
