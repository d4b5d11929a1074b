//! Errors of reading and writing images. Every message names the file and says what to do;
//! a cause (an I/O error) is kept as the `source`, not repeated in the message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: the file is empty (0 bytes); re-export the image or remove it")]
    Empty { path: PathBuf },
    #[error("{path}: is a folder, not an image file")]
    IsDir { path: PathBuf },
    #[error("{path}: not a PNG/JPEG/TIFF/WebP/BMP image (it starts with bytes {magic}); convert it to one of these formats or remove it")]
    UnknownFormat { path: PathBuf, magic: String },
    #[error("{path}: the {format} image is {width}×{height} ({pixels} pixels), over the limit of {max_pixels} pixels; downscale it first (e.g. `gdal_translate -outsize 50% 50% IN OUT`) or raise the limit with --max-pixels")]
    TooLarge {
        path: PathBuf,
        format: &'static str,
        width: u64,
        height: u64,
        pixels: u64,
        max_pixels: u64,
    },
    #[error("{path}: the {format} image is {width}×{height}; an image needs at least one pixel: re-export it")]
    ZeroSize {
        path: PathBuf,
        format: &'static str,
        width: u64,
        height: u64,
    },
    #[error("{path}: {what}; the {format} file is damaged or incomplete (truncated?): re-export or re-download it")]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        what: String,
    },
    #[error("{path}: {what}; {hint}")]
    Unsupported {
        path: PathBuf,
        what: String,
        hint: String,
    },
    /// A TIFF the raster reader refused (its message names the file and what to do).
    #[error(transparent)]
    Raster(#[from] strata_raster::RasterError),
    #[error("{path}: PNG encoding failed: {what}")]
    Encode { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

impl ImageError {
    /// The file the error is about.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ImageError::Io { path, .. }
            | ImageError::Empty { path }
            | ImageError::IsDir { path }
            | ImageError::UnknownFormat { path, .. }
            | ImageError::TooLarge { path, .. }
            | ImageError::ZeroSize { path, .. }
            | ImageError::Corrupt { path, .. }
            | ImageError::Unsupported { path, .. }
            | ImageError::Encode { path, .. }
            | ImageError::Invalid { path, .. } => Some(path),
            ImageError::Raster(_) => None,
        }
    }
}
