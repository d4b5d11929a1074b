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
    #[error("model computation failed")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Synth(#[from] strata_synth::SynthError),
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
