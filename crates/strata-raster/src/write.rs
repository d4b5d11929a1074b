//! Writing tiles: PNG (RGB 8-bit) and GeoTIFF (RGB 8-bit with the source's georeferencing),
//! always to a temporary name first; [`commit`] renames into place.
//!
//! Tiles are staged rather than written with `strata_io::atomic::write`: a source's tiles
//! are committed together only once every tile of it has been written, so a source that
//! fails half-way leaves no tile behind ([`discard`] removes the staged ones). Single files
//! (the manifest) go through `strata_io::atomic`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tiff::encoder::{colortype, compression::DeflateLevel, Compression, TiffEncoder};
use tiff::tags::Tag;

use crate::error::{RasterError, Result};
use crate::geo::{self, GeoRef, TransformTags};

/// GeoTIFF tile compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TiffCompression {
    None,
    Lzw,
    Deflate,
}

/// The temporary name a file is written under before [`commit`].
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.part"))
}

/// Rename a finished temporary file into place.
pub fn commit(path: &Path) -> Result<()> {
    std::fs::rename(temp_path(path), path).map_err(|e| RasterError::io(path, e))
}

/// Remove a temporary file left by a failed job (missing is fine).
pub fn discard(path: &Path) {
    let _ = std::fs::remove_file(temp_path(path));
}

/// Write an RGB PNG to the temporary name of `path`.
pub fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let f = File::create(&tmp).map_err(|e| RasterError::io(&tmp, e))?;
    let mut enc = png::Encoder::new(BufWriter::new(f), width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let err = |e: png::EncodingError| RasterError::Invalid {
        path: tmp.clone(),
        what: format!("PNG encoding failed: {e}"),
    };
    let mut w = enc.write_header().map_err(err)?;
    w.write_image_data(rgb).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(())
}

/// Write an RGB GeoTIFF to the temporary name of `path`; `georef` with the tile's window
/// offset (col, row) in the source gives the tile's transform.
pub fn write_geotiff(
    path: &Path,
    width: u32,
    height: u32,
    rgb: &[u8],
    georef: Option<(&GeoRef, f64, f64)>,
    comp: TiffCompression,
) -> Result<()> {
    let tmp = temp_path(path);
    let f = File::create(&tmp).map_err(|e| RasterError::io(&tmp, e))?;
    let mut w = BufWriter::new(f);
    let terr = |e: tiff::TiffError| RasterError::Invalid {
        path: tmp.clone(),
        what: format!("TIFF encoding failed: {e}"),
    };
    {
        let c = match comp {
            TiffCompression::None => Compression::Uncompressed,
            TiffCompression::Lzw => Compression::Lzw,
            TiffCompression::Deflate => Compression::Deflate(DeflateLevel::Fast),
        };
        let mut enc = TiffEncoder::new(&mut w).map_err(terr)?.with_compression(c);
        let mut img = enc
            .new_image::<colortype::RGB8>(width, height)
            .map_err(terr)?;
        if let Some((g, col, row)) = georef {
            write_geo_tags(img.encoder(), g, col, row).map_err(terr)?;
        }
        img.write_data(rgb).map_err(terr)?;
    }
    w.flush().map_err(|e| RasterError::io(&tmp, e))?;
    Ok(())
}

fn write_geo_tags<W: std::io::Write + std::io::Seek, K: tiff::encoder::TiffKind>(
    dir: &mut tiff::encoder::DirectoryEncoder<W, K>,
    g: &GeoRef,
    col: f64,
    row: f64,
) -> tiff::TiffResult<()> {
    match g.tile_tags(col, row) {
        TransformTags::ScaleTiepoint { scale, tiepoint } => {
            dir.write_tag(
                Tag::from_u16_exhaustive(geo::TAG_MODEL_PIXEL_SCALE),
                &scale[..],
            )?;
            dir.write_tag(
                Tag::from_u16_exhaustive(geo::TAG_MODEL_TIEPOINT),
                &tiepoint[..],
            )?;
        }
        TransformTags::Matrix(m) => dir.write_tag(
            Tag::from_u16_exhaustive(geo::TAG_MODEL_TRANSFORMATION),
            &m[..],
        )?,
    }
    if !g.key_directory.is_empty() {
        dir.write_tag(
            Tag::from_u16_exhaustive(geo::TAG_GEO_KEY_DIRECTORY),
            &g.key_directory[..],
        )?;
    }
    if let Some(d) = &g.double_params {
        dir.write_tag(Tag::from_u16_exhaustive(geo::TAG_GEO_DOUBLE_PARAMS), &d[..])?;
    }
    if let Some(a) = &g.ascii_params {
        dir.write_tag(
            Tag::from_u16_exhaustive(geo::TAG_GEO_ASCII_PARAMS),
            a.trim_end_matches('\0'),
        )?;
    }
    Ok(())
}
