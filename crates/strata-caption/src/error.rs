//! Errors of the caption stage. Every message names the file (or input), the place in it
//! and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong in `strata-caption`.
#[derive(Debug, thiserror::Error)]
pub enum CaptionError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the file is not valid UTF-8 (first bad byte at offset {offset}, line {line}); re-save it as UTF-8")]
    NotUtf8 {
        path: PathBuf,
        offset: usize,
        line: usize,
    },
    #[error("knowledge file {source_name}: {message}")]
    Knowledge {
        source_name: String,
        message: String,
    },
    #[error("{path}: line {line}: {message}")]
    BadRecord {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: line {line}: malformed JSON: {message}")]
    JsonLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: malformed JSON at line {line}, column {column}: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: duplicate file_name {file_name:?} (lines {first_line} and {second_line}); every image may appear once")]
    DuplicateFileName {
        path: PathBuf,
        file_name: String,
        first_line: usize,
        second_line: usize,
    },
    #[error("image {image} (listed in {listed_in}) does not exist; fix the path or pass the right --images folder")]
    MissingImage { image: PathBuf, listed_in: PathBuf },
    #[error("no candidate sentence holds an SRKC relation without a vertical relation ({examined} examined) and the fallback is `skip`")]
    NoGoldenCandidate { examined: usize },
    #[error("{0}")]
    Other(String),
}

/// Result alias of this crate.
pub type Result<T, E = CaptionError> = std::result::Result<T, E>;

/// Checks `bytes` are UTF-8 and returns the text, or a [`CaptionError::NotUtf8`] naming
/// the first bad byte and its line.
pub fn utf8_text(path: &std::path::Path, bytes: Vec<u8>) -> Result<String> {
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let line = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
            Err(CaptionError::NotUtf8 {
                path: path.to_path_buf(),
                offset,
                line,
            })
        }
    }
}

/// Reads a whole file as UTF-8 text with clear errors.
pub fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| CaptionError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    utf8_text(path, bytes)
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
