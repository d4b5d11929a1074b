//! Reading images as 8-bit RGB.
//!
//! The format comes from the file's first bytes, never its extension. Decoders:
//! - PNG: the `png` crate directly (all colour types and bit depths; palette, low-bit grey and
//!   `tRNS` expanded), because it gives 16-bit samples as they are stored;
//! - JPEG: zune-jpeg (maintained, the decoder `image` uses), in strict mode so that a
//!   truncated file is an error as in Pillow rather than a grey-filled picture; a file that
//!   fails only the strict checks (stray bytes between markers, which libjpeg accepts with a
//!   warning) is decoded again leniently;
//! - WebP, BMP: the `image` crate built with only those two codecs (image-webp and image's
//!   BMP decoder: maintained decoders; nothing else of `image` is compiled in);
//! - TIFF/GeoTIFF: strata-raster's streaming reader ([`strata_raster::source::TiffReader`]),
//!   so the tiles `strata prepare` writes and plain TIFFs (UC Merced) decode the same way.
//!   8- and 16-bit unsigned samples, 1 to 4 bands; other sample types are refused with a
//!   pointer to `strata prepare`, which stretches them.
//!
//! Conversion to RGB8: grey is replicated, alpha is dropped (not composited), CMYK JPEGs are
//! converted by zune-jpeg, and 16-bit samples are scaled with rounding,
//! `(v · 255 + 32767) / 65535` (= round(v / 257)).
//!
//! Differences from Pillow's `Image.open(p).convert("RGB")` (measured by the tests against
//! Pillow's own decode): Pillow keeps the high byte of 16-bit RGB samples (`v >> 8`), which
//! differs from the rounded scale by at most one level; and Pillow converts 16-bit greyscale
//! (mode `I;16`) to RGB by clipping to 255 rather than scaling, which turns almost every
//! 16-bit grey image white — here it is scaled like RGB. zune-jpeg differs from
//! libjpeg-turbo in its IDCT and chroma upsampling: at most 3 levels on the test fixtures
//! (4:2:0), 2 (4:4:4), 1 (greyscale, CMYK). Lossy WebP decodes exactly as libwebp there.
//!
//! The declared width × height is checked against [`Limits`] from the header, before the
//! pixel buffer is allocated.

use std::io::{Cursor, Read};
use std::path::Path;

use image::ImageDecoder;
use strata_raster::source::{BandReader, SampleType, TiffReader};

use crate::error::ImageError;
use crate::RgbImage;

type Result<T> = std::result::Result<T, ImageError>;

/// File extensions of the supported formats (lower case, no dot). Only used to list image
/// files in folders; reading always goes by the file's content.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Tiff,
    WebP,
    Bmp,
}

impl Format {
    /// The format whose signature `head` (the first 12 bytes or more) starts with.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
            Some(Format::Png)
        } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if head.starts_with(b"II*\0")
            || head.starts_with(b"MM\0*")
            || head.starts_with(b"II+\0")
            || head.starts_with(b"MM\0+")
        {
            Some(Format::Tiff)
        } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else if head.starts_with(b"BM") {
            Some(Format::Bmp)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Tiff => "TIFF",
            Format::WebP => "WebP",
            Format::Bmp => "BMP",
        }
    }
}

/// What an image may be before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest declared width × height accepted.
    pub max_pixels: u64,
}

impl Limits {
    /// 100 megapixels (300 MB as RGB8).
    pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

    fn check(&self, path: &Path, format: Format, width: u64, height: u64) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(ImageError::ZeroSize {
                path: path.to_path_buf(),
                format: format.name(),
                width,
                height,
            });
        }
        let pixels = width.saturating_mul(height);
        if pixels > self.max_pixels {
            return Err(ImageError::TooLarge {
                path: path.to_path_buf(),
                format: format.name(),
                width,
                height,
                pixels,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// The process-wide limit [`Limits::default`] returns; 0 = not set (use
/// [`Limits::DEFAULT_MAX_PIXELS`]). The command line sets it once from `--max-pixels`, so
/// every reader a command reaches (datasets, eval folders, init images, captioner inputs)
/// applies the user's choice without each call site passing it down.
static PROCESS_MAX_PIXELS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Limits {
    /// Sets the limit every later [`Limits::default`] returns, for the whole process.
    pub fn set_process_default(max_pixels: u64) {
        PROCESS_MAX_PIXELS.store(max_pixels, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for Limits {
    fn default() -> Self {
        let set = PROCESS_MAX_PIXELS.load(std::sync::atomic::Ordering::Relaxed);
        Limits {
            max_pixels: if set == 0 {
                Self::DEFAULT_MAX_PIXELS
            } else {
                set
            },
        }
    }
}

/// Reads any supported image file as RGB8, with the default [`Limits`].
pub fn read_rgb8(path: &Path) -> Result<RgbImage> {
    read_rgb8_with_limits(path, &Limits::default())
}

/// Reads any supported image file as RGB8.
pub fn read_rgb8_with_limits(path: &Path, limits: &Limits) -> Result<RgbImage> {
    let io = |what: &'static str| {
        move |source| ImageError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    let meta = std::fs::metadata(path).map_err(io("open the image"))?;
    if meta.is_dir() {
        return Err(ImageError::IsDir {
            path: path.to_path_buf(),
        });
    }
    let mut head = [0u8; 16];
    let n = {
        let mut f = std::fs::File::open(path).map_err(io("open the image"))?;
        read_head(&mut f, &mut head).map_err(io("read the image"))?
    };
    let format = sniff_or_err(path, &head[..n])?;
    match format {
        Format::Tiff => decode_tiff_file(path, limits),
        _ => {
            let bytes = std::fs::read(path).map_err(io("read the image"))?;
            decode_known(path, &bytes, format, limits)
        }
    }
}

/// Decodes an image held in memory; `name` names it in errors. A TIFF goes through a
/// temporary file (the raster reader reads files).
pub fn decode_rgb8(name: &Path, bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    let format = sniff_or_err(name, &bytes[..bytes.len().min(16)])?;
    if format != Format::Tiff {
        return decode_known(name, bytes, format, limits);
    }
    let io = |source| ImageError::Io {
        path: name.to_path_buf(),
        what: "stage the TIFF in a temporary file",
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".strata-image-")
        .suffix(".tif")
        .tempfile()
        .map_err(io)?;
    std::io::Write::write_all(tmp.as_file_mut(), bytes).map_err(io)?;
    decode_tiff_file(tmp.path(), limits).map_err(|e| {
        // name the caller's file, not the temporary one
        let tmp_name = tmp.path().display().to_string();
        let msg = crate::error_chain(&e).replace(&tmp_name, &name.display().to_string());
        let msg = msg
            .strip_prefix(&format!("{}: ", name.display()))
            .map(str::to_string)
            .unwrap_or(msg);
        match e {
            ImageError::TooLarge { .. } | ImageError::ZeroSize { .. } => {
                relabel_size_error(e, name)
            }
            _ => ImageError::Invalid {
                path: name.to_path_buf(),
                what: msg,
            },
        }
    })
}

fn relabel_size_error(e: ImageError, name: &Path) -> ImageError {
    match e {
        ImageError::TooLarge {
            format,
            width,
            height,
            pixels,
            max_pixels,
            ..
        } => ImageError::TooLarge {
            path: name.to_path_buf(),
            format,
            width,
            height,
            pixels,
            max_pixels,
        },
        ImageError::ZeroSize {
            format,
            width,
            height,
            ..
        } => ImageError::ZeroSize {
            path: name.to_path_buf(),
            format,
            width,
            height,
        },
        other => other,
    }
}

fn read_head(r: &mut impl Read, head: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn sniff_or_err(path: &Path, head: &[u8]) -> Result<Format> {
    if head.is_empty() {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
        });
    }
    Format::sniff(head).ok_or_else(|| ImageError::UnknownFormat {
        path: path.to_path_buf(),
        magic: head
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
    })
}

fn decode_known(path: &Path, bytes: &[u8], format: Format, limits: &Limits) -> Result<RgbImage> {
    match format {
        Format::Png => decode_png(path, bytes, limits),
        Format::Jpeg => decode_jpeg(path, bytes, limits),
        Format::WebP => {
            let dec = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
                .map_err(|e| image_err(path, format, e))?;
            decode_with(path, format, dec, limits)
        }
        Format::Bmp => {
            let dec = image::codecs::bmp::BmpDecoder::new(Cursor::new(bytes))
                .map_err(|e| image_err(path, format, e))?;
            decode_with(path, format, dec, limits)
        }
        Format::Tiff => unreachable!("TIFF is read from a file"),
    }
}

/// A 16-bit sample scaled to 8 bits with rounding: `(v · 255 + 32767) / 65535`.
#[inline]
pub fn scale16(v: u16) -> u8 {
    ((v as u32 * 255 + 32767) / 65535) as u8
}

/// Interleaved 8-bit samples with `ch` channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) to RGB.
fn to_rgb(width: usize, height: usize, ch: usize, px: &[u8]) -> RgbImage {
    let n = width * height;
    let data = match ch {
        3 => px[..n * 3].to_vec(),
        1 | 2 => {
            let mut d = Vec::with_capacity(n * 3);
            for p in px.chunks_exact(ch).take(n) {
                d.extend_from_slice(&[p[0], p[0], p[0]]);
            }
            d
        }
        _ => {
            let mut d = Vec::with_capacity(n * 3);
            for p in px.chunks_exact(ch).take(n) {
                d.extend_from_slice(&p[..3]);
            }
            d
        }
    };
    RgbImage {
        width,
        height,
        data,
    }
}

fn decode_png(path: &Path, bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    let corrupt = |e: png::DecodingError| {
        let what = match e {
            png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                "unexpected end of file".to_string()
            }
            e => format!("invalid PNG ({e})"),
        };
        ImageError::Corrupt {
            path: path.to_path_buf(),
            format: "PNG",
            what,
        }
    };
    let mut dec =
        png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: usize::MAX });
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(corrupt)?;
    let (w, h) = (reader.info().width, reader.info().height);
    limits.check(path, Format::Png, w as u64, h as u64)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    buf.truncate(frame.buffer_size());
    let ch = frame.color_type.samples();
    let (w, h) = (frame.width as usize, frame.height as usize);
    if frame.bit_depth == png::BitDepth::Sixteen {
        let px: Vec<u8> = buf
            .chunks_exact(2)
            .map(|c| scale16(u16::from_be_bytes([c[0], c[1]])))
            .collect();
        Ok(to_rgb(w, h, ch, &px))
    } else {
        Ok(to_rgb(w, h, ch, &buf))
    }
}

/// One JPEG decoding attempt: `(width, height, components, samples)`, or the decoder's error.
type JpegAttempt =
    std::result::Result<(usize, usize, usize, Vec<u8>), zune_jpeg::errors::DecodeErrors>;

fn decode_jpeg(path: &Path, bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let corrupt = |e: zune_jpeg::errors::DecodeErrors| ImageError::Corrupt {
        path: path.to_path_buf(),
        format: "JPEG",
        what: format!("invalid JPEG ({e})"),
    };
    let decode = |strict: bool| -> Result<JpegAttempt> {
        let opts = DecoderOptions::default()
            .set_strict_mode(strict)
            .set_max_width(usize::MAX)
            .set_max_height(usize::MAX);
        let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
        if let Err(e) = dec.decode_headers() {
            return Ok(Err(e));
        }
        let (w, h) = dec.dimensions().unwrap_or((0, 0));
        limits.check(path, Format::Jpeg, w as u64, h as u64)?;
        let grey = matches!(
            dec.input_colorspace(),
            Some(ColorSpace::Luma | ColorSpace::LumaA)
        );
        let out = if grey {
            ColorSpace::Luma
        } else {
            ColorSpace::RGB
        };
        dec.set_options(dec.options().jpeg_set_out_colorspace(out));
        Ok(dec.decode().map(|px| (w, h, if grey { 1 } else { 3 }, px)))
    };
    // A file cut short keeps a valid header and part of its scan: lenient decoders fill the
    // rest with grey. The end-of-image marker after the last scan tells (entropy-coded data
    // never holds FF D9, so this cannot be fooled by the scan itself).
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    if let Some(at) = last_scan {
        if !bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(ImageError::Corrupt {
                path: path.to_path_buf(),
                format: "JPEG",
                what: "the JPEG data ends early (no end-of-image marker after the last scan): the file is truncated; re-export or re-download it".into(),
            });
        }
    }
    let (w, h, ch, px) = match decode(true)? {
        Ok(v) => v,
        // truncated: refuse (Pillow does too); any other strict-mode complaint: lenient retry
        Err(e)
            if matches!(e, zune_jpeg::errors::DecodeErrors::ExhaustedData)
                || e.to_string().contains("Premature end") =>
        {
            return Err(ImageError::Corrupt {
                path: path.to_path_buf(),
                format: "JPEG",
                what: format!("the JPEG data ends early ({e})"),
            })
        }
        Err(_) => decode(false)?.map_err(corrupt)?,
    };
    if px.len() < w * h * ch {
        return Err(ImageError::Corrupt {
            path: path.to_path_buf(),
            format: "JPEG",
            what: format!("decoded {} bytes for {w}×{h}", px.len()),
        });
    }
    Ok(to_rgb(w, h, ch, &px))
}

fn image_err(path: &Path, format: Format, e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(u) => ImageError::Unsupported {
            path: path.to_path_buf(),
            what: format!("unsupported {} feature ({u})", format.name()),
            hint: "convert it to PNG first (e.g. `gdal_translate -of PNG IN OUT.png`)".into(),
        },
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Corrupt {
                path: path.to_path_buf(),
                format: format.name(),
                what: "unexpected end of file".into(),
            }
        }
        e => ImageError::Corrupt {
            path: path.to_path_buf(),
            format: format.name(),
            what: format!("invalid {} ({e})", format.name()),
        },
    }
}

fn decode_with<D: ImageDecoder>(
    path: &Path,
    format: Format,
    dec: D,
    limits: &Limits,
) -> Result<RgbImage> {
    let (w, h) = dec.dimensions();
    limits.check(path, format, w as u64, h as u64)?;
    let ct = dec.color_type();
    let mut buf = vec![0u8; dec.total_bytes() as usize];
    dec.read_image(&mut buf)
        .map_err(|e| image_err(path, format, e))?;
    let (w, h) = (w as usize, h as usize);
    use image::ColorType as C;
    let (ch, sixteen) = match ct {
        C::L8 => (1, false),
        C::La8 => (2, false),
        C::Rgb8 => (3, false),
        C::Rgba8 => (4, false),
        C::L16 => (1, true),
        C::La16 => (2, true),
        C::Rgb16 => (3, true),
        C::Rgba16 => (4, true),
        other => {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                what: format!("{} with {other:?} samples", format.name()),
                hint: "convert it to an 8-bit PNG first".into(),
            })
        }
    };
    if sixteen {
        let px: Vec<u8> = buf
            .chunks_exact(2)
            .map(|c| scale16(u16::from_ne_bytes([c[0], c[1]])))
            .collect();
        Ok(to_rgb(w, h, ch, &px))
    } else {
        Ok(to_rgb(w, h, ch, &buf))
    }
}

fn sample_type_name(t: SampleType) -> &'static str {
    match t {
        SampleType::U8 => "uint8",
        SampleType::U16 => "uint16",
        SampleType::U32 => "uint32",
        SampleType::I8 => "int8",
        SampleType::I16 => "int16",
        SampleType::I32 => "int32",
        SampleType::F32 => "float32",
        SampleType::F64 => "float64",
    }
}

/// Rows decoded per block (the raster reader returns f32 planes; blocks keep them small).
const TIFF_BLOCK_ROWS: u32 = 256;

fn decode_tiff_file(path: &Path, limits: &Limits) -> Result<RgbImage> {
    let mut reader = TiffReader::open(path)?;
    let info = reader.info().clone();
    limits.check(path, Format::Tiff, info.width as u64, info.height as u64)?;
    let bands: Vec<usize> = match info.bands {
        1 | 2 => vec![0],
        3 | 4 => vec![0, 1, 2],
        n => {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                what: format!("a TIFF with {n} bands (1 to 4 are read as grey, grey+alpha, RGB or RGBA)"),
                hint: "choose three bands with `strata prepare --bands`, or `gdal_translate -b 1 -b 2 -b 3 IN.tif OUT.tif`".into(),
            })
        }
    };
    let conv: fn(f32) -> u8 = match info.sample_type {
        SampleType::U8 => |v| v as u8,
        SampleType::U16 => |v| scale16(v as u16),
        other => {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "{} TIFF samples (8- and 16-bit unsigned are read)",
                    sample_type_name(other)
                ),
                hint: "`strata prepare` stretches such rasters to 8-bit RGB tiles; or convert with `gdal_translate -ot Byte -scale IN.tif OUT.tif`".into(),
            })
        }
    };
    let (w, h) = (info.width as usize, info.height as usize);
    let mut data = vec![0u8; w * h * 3];
    let mut y0 = 0u32;
    while y0 < info.height {
        let rows = TIFF_BLOCK_ROWS.min(info.height - y0);
        let planes = reader.read_rows(y0, rows, &bands)?;
        let base = y0 as usize * w * 3;
        for i in 0..rows as usize * w {
            for c in 0..3 {
                let plane = &planes[if bands.len() == 1 { 0 } else { c }];
                data[base + i * 3 + c] = conv(plane[i]);
            }
        }
        y0 += rows;
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale16_rounds_like_the_formula() {
        assert_eq!(scale16(0), 0);
        assert_eq!(scale16(65535), 255);
        assert_eq!(scale16(128), 0);
        assert_eq!(scale16(129), 1); // 129 / 257 = 0.502
        assert_eq!(scale16(257 * 100), 100);
        // never more than one level from the high byte
        for v in 0..=u16::MAX {
            assert!((scale16(v) as i32 - (v >> 8) as i32).abs() <= 1);
        }
    }

    #[test]
    fn sniffing_goes_by_content() {
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(Format::sniff(b"II*\0"), Some(Format::Tiff));
        assert_eq!(Format::sniff(b"GIF89a"), None);
    }

    #[test]
    fn extensions_any_case() {
        assert!(has_image_extension(Path::new("a/B.JPG")));
        assert!(has_image_extension(Path::new("x.tiff")));
        assert!(!has_image_extension(Path::new("x.png.tmp")));
        assert!(!has_image_extension(Path::new("noext")));
    }
}
