//! Errors of the prepare stage. Every message names the file and says what to do.

use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, RasterError>;

#[derive(Debug, thiserror::Error)]
pub enum RasterError {
    #[error("{path}: cannot read or write the file")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the file is empty (0 bytes); re-download or re-export it")]
    Empty { path: PathBuf },
    #[error("{path}: not a TIFF, PNG or JPEG file (starts with bytes {magic}); check the file or its extension")]
    UnknownFormat { path: PathBuf, magic: String },
    #[error("{path}: {what}; the file is damaged or incomplete (truncated?): re-download or re-export it")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path}: {what}; {hint}")]
    Unsupported {
        path: PathBuf,
        what: String,
        hint: String,
    },
    #[error("{path}: band {band} requested but the raster has {count} band(s); use --bands with 1-based indices from 1 to {count}")]
    BandOutOfRange {
        path: PathBuf,
        band: usize,
        count: usize,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{0}")]
    Options(String),
}

/// Advice for TIFF features strata does not read.
pub const CONVERT_HINT: &str =
    "convert it first, e.g. `gdal_translate -co COMPRESS=DEFLATE IN.tif OUT.tif`";

impl RasterError {
    pub fn unsupported(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        RasterError::Unsupported {
            path: path.into(),
            what: what.into(),
            hint: hint.into(),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RasterError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Map a `tiff` crate error to one of ours, attributing it to `path`.
    pub fn from_tiff(path: &Path, e: tiff::TiffError) -> Self {
        use tiff::TiffError as T;
        let path = path.to_path_buf();
        match e {
            T::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                RasterError::Corrupt {
                    path,
                    what: "unexpected end of file".into(),
                }
            }
            T::IoError(io) => RasterError::Io { path, source: io },
            T::FormatError(f) => RasterError::Corrupt {
                path,
                what: format!("invalid TIFF ({f})"),
            },
            T::UnsupportedError(u) => RasterError::Unsupported {
                path,
                what: format!("unsupported TIFF feature ({u})"),
                hint: CONVERT_HINT.into(),
            },
            T::LimitsExceeded => RasterError::Unsupported {
                path,
                what: format!(
                    "a strip, tile or tag declares more data than the reader accepts ({} MiB per strip or tile, {} MiB per tag): the file is damaged or stores huge strips",
                    crate::source::MAX_CHUNK_BYTES >> 20,
                    crate::source::MAX_TAG_BYTES >> 20
                ),
                hint: "if the file is intact, re-tile it first, e.g. `gdal_translate -co TILED=YES -co COMPRESS=DEFLATE IN.tif OUT.tif`".into(),
            },
            other => RasterError::Corrupt {
                path,
                what: other.to_string(),
            },
        }
    }
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
