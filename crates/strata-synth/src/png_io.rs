//! Deterministic PNG encoding (fixed compression and filter, no timestamps) and mask reading.

use std::path::Path;

use crate::error::SynthError;

fn encode(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    data: &[u8],
) -> Result<Vec<u8>, SynthError> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        enc.set_filter(png::FilterType::Sub);
        enc.set_adaptive_filter(png::AdaptiveFilterType::NonAdaptive);
        let mut wr = enc.write_header().map_err(|source| SynthError::Png {
            path: path.to_path_buf(),
            source,
        })?;
        wr.write_image_data(data)
            .map_err(|source| SynthError::Png {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(out)
}

/// RGB8 PNG bytes (`path` only names the file in errors).
pub fn encode_rgb(path: &Path, w: u32, h: u32, rgb: &[u8]) -> Result<Vec<u8>, SynthError> {
    encode(path, w, h, png::ColorType::Rgb, rgb)
}

/// Grey8 PNG bytes: one class id per pixel.
pub fn encode_mask(path: &Path, w: u32, h: u32, mask: &[u8]) -> Result<Vec<u8>, SynthError> {
    encode(path, w, h, png::ColorType::Grayscale, mask)
}

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
