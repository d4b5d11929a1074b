//! Atomic file writes and mask reading. PNG encoding (deterministic: fixed compression and
//! filter, no timestamps) is `strata_image::encode_png_rgb8` / `encode_png_grey8`.

use std::path::Path;

use crate::error::SynthError;

/// Write bytes to `path` through a temporary file in the same folder, then rename
/// ([`strata_io::atomic::write`], which also creates missing folders).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    strata_io::atomic::write(path, bytes).map_err(|source| SynthError::Io {
        path: path.to_path_buf(),
        what: "writing",
        source,
    })
}

/// Read a class-id mask PNG (8-bit greyscale): `(width, height, ids)`.
pub fn read_mask(path: &Path) -> Result<(usize, usize, Vec<u8>), SynthError> {
    let bad = |what: String| SynthError::BadMask {
        path: path.to_path_buf(),
        what,
    };
    let file = std::fs::File::open(path).map_err(|source| SynthError::Io {
        path: path.to_path_buf(),
        what: "opening the mask",
        source,
    })?;
    let dec = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = dec.read_info().map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
        return Err(bad(format!(
            "{:?} {:?}, expected 8-bit greyscale",
            info.color_type, info.bit_depth
        )));
    }
    buf.truncate(info.buffer_size());
    Ok((info.width as usize, info.height as usize, buf))
}
