use std::path::PathBuf;

/// Errors of the evaluation stage; each names the file or field and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("bad feature matrix: {what}")]
    FeatureShape { what: String },
    #[error("{what} needs at least {need} samples, got {got}: add images to both folders")]
    TooFewSamples {
        what: String,
        need: usize,
        got: usize,
    },
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    BadImage { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    BadInput { path: PathBuf, what: String },
    #[error("{path}: tensor `{name}`: {what}")]
    Weights {
        path: PathBuf,
        name: String,
        what: String,
    },
    #[error("{path}: {what}")]
    WeightsFile { path: PathBuf, what: String },
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Synth(#[from] strata_synth::SynthError),
}
