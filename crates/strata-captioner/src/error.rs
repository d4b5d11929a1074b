use std::path::PathBuf;

/// Errors of the pixel captioners; each names the file (or part) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptionerError {
    /// A weights folder or file is missing or is not what the part expects.
    #[error("{}: {what}; {hint}", path.display())]
    Weights {
        path: PathBuf,
        /// What was expected and what was found.
        what: String,
        /// Where a user gets the right file.
        hint: String,
    },
    /// A file could be read but one of its fields is wrong.
    #[error("{}: {field}: {what}", path.display())]
    BadField {
        path: PathBuf,
        field: String,
        what: String,
    },
    #[error("{}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] strata_image::ImageError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A setting out of range (names the option and its range).
    #[error("{0}")]
    Setting(String),
}

pub type Result<T, E = CaptionerError> = std::result::Result<T, E>;
