//! Reading rasters: GeoTIFF (stripped or tiled, chunky or planar, none/LZW/Deflate/PackBits,
//! 8–64-bit integer and float samples, any band count), PNG and JPEG, and stacks of separate
//! single-band files. Reads are by row range, decoding only the strips or tiles that cover it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tiff::decoder::{ChunkType, Decoder, DecodingResult, Limits};
use tiff::tags::{
    CompressionMethod, PhotometricInterpretation, PlanarConfiguration, SampleFormat, Tag,
};

use crate::error::{RasterError, Result, CONVERT_HINT};
use crate::geo::{self, GeoRef};

/// The numeric type of the samples as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleType {
    U8,
    U16,
    U32,
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl SampleType {
    /// True for data that does not already fit 0..=255.
    pub fn is_wide(self) -> bool {
        !matches!(self, SampleType::U8)
    }
}

/// What is known about a raster before its pixels are read.
#[derive(Debug, Clone)]
pub struct RasterInfo {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub bands: usize,
    pub sample_type: SampleType,
    pub nodata: Option<f64>,
    pub georef: Option<GeoRef>,
}

/// A raster opened for reading rows. One reader per thread; open more with [`RasterSpec::open`].
pub trait BandReader: Send {
    fn info(&self) -> &RasterInfo;
    /// Rows `[y0, y0 + h)`, full width, of the given 0-based bands, one `f32` plane per band.
    fn read_rows(&mut self, y0: u32, h: u32, bands: &[usize]) -> Result<Vec<Vec<f32>>>;
    /// Another reader of the same raster, for another thread (cheap: files are re-opened,
    /// decoded in-memory images are shared).
    fn try_clone(&self) -> Result<Box<dyn BandReader>>;
}

/// How to open a raster: one file, or one band from each of several files.
#[derive(Debug, Clone)]
pub enum RasterSpec {
    File(PathBuf),
    Stack(Vec<PathBuf>),
}

impl RasterSpec {
    /// A path that names this raster in messages and the manifest.
    pub fn display_path(&self) -> PathBuf {
        match self {
            RasterSpec::File(p) => p.clone(),
            RasterSpec::Stack(ps) => ps.first().cloned().unwrap_or_default(),
        }
    }

    pub fn open(&self) -> Result<Box<dyn BandReader>> {
        match self {
            RasterSpec::File(p) => open_file(p),
            RasterSpec::Stack(ps) => Ok(Box::new(StackReader::open(ps)?)),
        }
    }
}

enum Format {
    Tiff,
    Png,
    Jpeg,
}

fn sniff(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| RasterError::io(path, e))?;
    if meta.is_dir() {
        return Err(RasterError::Invalid {
            path: path.into(),
            what: "is a folder, not a raster file".into(),
        });
    }
    if meta.len() == 0 {
        return Err(RasterError::Empty { path: path.into() });
    }
    let mut head = [0u8; 8];
    let mut f = File::open(path).map_err(|e| RasterError::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| RasterError::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"II*\0")
        || head.starts_with(b"MM\0*")
        || head.starts_with(b"II+\0")
        || head.starts_with(b"MM\0+")
    {
        Ok(Format::Tiff)
    } else if head.starts_with(&[0x89, b'P', b'N', b'G']) {
        Ok(Format::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else if head.starts_with(&[0, 0, 0, 0x0C, b'j', b'P'])
        || head.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
    {
        Err(RasterError::unsupported(
            path,
            "JPEG 2000 is not supported yet (Sentinel-2 bands)",
            "convert it first, e.g. `gdal_translate IN.jp2 OUT.tif`",
        ))
    } else {
        let magic = head
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        Err(RasterError::UnknownFormat {
            path: path.into(),
            magic,
        })
    }
}

/// Open any supported single file.
pub fn open_file(path: &Path) -> Result<Box<dyn BandReader>> {
    match sniff(path)? {
        Format::Tiff => Ok(Box::new(TiffReader::open(path)?)),
        Format::Png => Ok(Box::new(MemReader::from_png(path)?)),
        Format::Jpeg => Ok(Box::new(MemReader::from_jpeg(path)?)),
    }
}

/// Streaming GeoTIFF reader.
pub struct TiffReader {
    info: RasterInfo,
    dec: Decoder<BufReader<File>>,
    chunk_w: u32,
    chunk_h: u32,
    chunks_across: u32,
    chunks_per_plane: u32,
    planar: bool,
}

/// Default largest raster accepted, in pixels: 10 gigapixels (a 100 000² mosaic). Rasters
/// stream, so this is far above the image limit; it stops a header that declares an absurd
/// size (a 200 000² file of a few bytes) before tiles are planned over it.
pub const DEFAULT_MAX_RASTER_PIXELS: u64 = 10_000_000_000;

static MAX_RASTER_PIXELS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_RASTER_PIXELS);

/// Sets the raster size limit for the whole process (`strata prepare --max-pixels`).
pub fn set_max_raster_pixels(n: u64) {
    MAX_RASTER_PIXELS.store(n, std::sync::atomic::Ordering::Relaxed);
}

fn check_raster_size(path: &Path, width: u32, height: u32) -> Result<()> {
    let pixels = width as u64 * height as u64;
    let max = MAX_RASTER_PIXELS.load(std::sync::atomic::Ordering::Relaxed);
    if pixels > max {
        return Err(RasterError::Unsupported {
            path: path.into(),
            what: format!(
                "the raster is {width}×{height} ({pixels} pixels), over the limit of {max} pixels"
            ),
            hint: "if the raster really is that large, raise the limit with --max-pixels".into(),
        });
    }
    Ok(())
}

impl TiffReader {
    pub fn open(path: &Path) -> Result<Self> {
        let tiff_err = |e| RasterError::from_tiff(path, e);
        let f = File::open(path).map_err(|e| RasterError::io(path, e))?;
        let mut dec = Decoder::new(BufReader::new(f))
            .map_err(tiff_err)?
            .with_limits(tiff_limits());
        let (width, height) = dec.dimensions().map_err(tiff_err)?;
        check_raster_size(path, width, height)?;
        let bands = dec
            .find_tag_unsigned::<u16>(Tag::SamplesPerPixel)
            .map_err(tiff_err)?
            .unwrap_or(1) as usize;
        let bits = dec
            .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
            .map_err(tiff_err)?
            .unwrap_or_else(|| vec![1]);
        if bits.is_empty() {
            return Err(RasterError::Corrupt {
                path: path.into(),
                what: "the BitsPerSample tag holds no value".into(),
            });
        }
        if bits.iter().any(|&b| b != bits[0]) {
            return Err(RasterError::Unsupported {
                path: path.into(),
                what: format!("mixed bits per sample {bits:?}"),
                hint: CONVERT_HINT.into(),
            });
        }
        let fmts = dec
            .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
            .map_err(tiff_err)?
            .unwrap_or_else(|| vec![1]);
        if fmts.iter().any(|&f| f != fmts[0]) {
            return Err(RasterError::Unsupported {
                path: path.into(),
                what: format!("mixed sample formats {fmts:?}"), hint: "convert it to a real type first, e.g. `gdal_translate -ot Float32 IN.tif OUT.tif` (complex SAR data: compute the amplitude first)".into() });
        }
        let fmt = fmts.first().copied().unwrap_or(1);
        let sample_type = match (SampleFormat::from_u16(fmt), bits[0]) {
            (Some(SampleFormat::Uint), 8) => SampleType::U8,
            (Some(SampleFormat::Uint), 16) => SampleType::U16,
            (Some(SampleFormat::Uint), 32) => SampleType::U32,
            (Some(SampleFormat::Int), 8) => SampleType::I8,
            (Some(SampleFormat::Int), 16) => SampleType::I16,
            (Some(SampleFormat::Int), 32) => SampleType::I32,
            (Some(SampleFormat::IEEEFP), 32) => SampleType::F32,
            (Some(SampleFormat::IEEEFP), 64) => SampleType::F64,
            (f, b) => {
                let name = match f {
                    Some(SampleFormat::Uint) => "unsigned integer",
                    Some(SampleFormat::Int) => "signed integer",
                    Some(SampleFormat::IEEEFP) => "floating point",
                    _ => "complex or undefined",
                };
                return Err(RasterError::unsupported(
                    path,
                    format!("sample format {name} with {b} bits per sample (SampleFormat={fmt}); supported: uint8/16/32, int8/16/32, float32/64"),
                    "convert it to a real type first, e.g. `gdal_translate -ot Float32 IN.tif OUT.tif` (for complex SAR data, compute the amplitude first)",
                ));
            }
        };
        let compression = dec
            .find_tag_unsigned::<u16>(Tag::Compression)
            .map_err(tiff_err)?
            .unwrap_or(1);
        match CompressionMethod::from_u16(compression) {
            Some(
                CompressionMethod::None
                | CompressionMethod::LZW
                | CompressionMethod::Deflate
                | CompressionMethod::OldDeflate
                | CompressionMethod::PackBits,
            ) => {}
            _ => {
                return Err(RasterError::Unsupported {
                    path: path.into(),
                    what: format!(
                    "compression {} (code {compression}); supported: none, LZW, Deflate, PackBits",
                    compression_name(compression)
                ),
                    hint: CONVERT_HINT.into(),
                })
            }
        }
        let photometric = dec
            .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
            .map_err(tiff_err)?;
        if photometric.and_then(PhotometricInterpretation::from_u16)
            == Some(PhotometricInterpretation::RGBPalette)
        {
            return Err(RasterError::Unsupported {
                path: path.into(),
                what: "palette (colour-mapped) images".into(),
                hint: "expand the palette first, e.g. `gdal_translate -expand rgb IN.tif OUT.tif`"
                    .into(),
            });
        }
        let planar = dec
            .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
            .map_err(tiff_err)?
            .unwrap_or(1)
            == PlanarConfiguration::Planar as u16;
        let (chunk_w, chunk_h) = dec.chunk_dimensions();
        if chunk_w == 0 || chunk_h == 0 {
            return Err(RasterError::Corrupt {
                path: path.into(),
                what: "zero-sized strips or tiles".into(),
            });
        }
        let chunks_across = match dec.get_chunk_type() {
            ChunkType::Strip => 1,
            ChunkType::Tile => width.div_ceil(chunk_w),
        };
        let chunks_per_plane = chunks_across
            .checked_mul(height.div_ceil(chunk_h))
            .filter(|&n| n as u64 * bands.max(1) as u64 <= u32::MAX as u64)
            .ok_or_else(|| RasterError::Corrupt {
                path: path.into(),
                what: format!(
                    "{width}×{height} pixels in {chunk_w}×{chunk_h} strips or tiles, {bands} bands: more chunks than a TIFF can index"
                ),
            })?;

        let f64s = |dec: &mut Decoder<_>, t: u16| -> Result<Option<Vec<f64>>> {
            match dec
                .find_tag(Tag::from_u16_exhaustive(t))
                .map_err(tiff_err)?
            {
                Some(v) => Ok(Some(v.into_f64_vec().map_err(tiff_err)?)),
                None => Ok(None),
            }
        };
        let scale = f64s(&mut dec, geo::TAG_MODEL_PIXEL_SCALE)?;
        let tiepoints = f64s(&mut dec, geo::TAG_MODEL_TIEPOINT)?;
        let matrix = f64s(&mut dec, geo::TAG_MODEL_TRANSFORMATION)?;
        let doubles = f64s(&mut dec, geo::TAG_GEO_DOUBLE_PARAMS)?;
        let keys = dec
            .find_tag_unsigned_vec::<u16>(Tag::from_u16_exhaustive(geo::TAG_GEO_KEY_DIRECTORY))
            .map_err(tiff_err)?;
        let ascii = match dec
            .find_tag(Tag::from_u16_exhaustive(geo::TAG_GEO_ASCII_PARAMS))
            .map_err(tiff_err)?
        {
            Some(v) => Some(v.into_string().map_err(tiff_err)?),
            None => None,
        };
        let nodata = match dec
            .find_tag(Tag::from_u16_exhaustive(geo::TAG_GDAL_NODATA))
            .map_err(tiff_err)?
        {
            Some(v) => {
                let s = v.into_string().map_err(tiff_err)?;
                let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
                Some(s.parse::<f64>().map_err(|_| RasterError::Corrupt {
                    path: path.into(),
                    what: format!("GDAL_NODATA tag holds {s:?}, not a number"),
                })?)
            }
            None => None,
        };
        let georef = geo::georef_from_tags(scale, tiepoints, matrix, keys, doubles, ascii);
        let info = RasterInfo {
            path: path.into(),
            width,
            height,
            bands,
            sample_type,
            nodata,
            georef,
        };
        Ok(TiffReader {
            info,
            dec,
            chunk_w,
            chunk_h,
            chunks_across,
            chunks_per_plane,
            planar,
        })
    }
}

/// Largest decoded strip or tile, and largest decoded PNG or JPEG (bytes): 13 000 × 13 000
/// RGB. GeoTIFFs are read a row block at a time, so only a file with huge strips comes near
/// it; a PNG or JPEG is decoded whole.
pub const MAX_CHUNK_BYTES: usize = 512 << 20;

/// Refuses an image whose header declares more than [`MAX_CHUNK_BYTES`] of decoded samples,
/// before anything is allocated for it.
fn check_decoded_size(path: &Path, what: &str, width: u64, height: u64, bytes: u64) -> Result<()> {
    if bytes > MAX_CHUNK_BYTES as u64 {
        return Err(RasterError::Unsupported {
            path: path.into(),
            what: format!(
                "its {what} header declares {width}×{height} pixels ({} MiB decoded), more than the reader accepts ({} MiB): the file is damaged or too large to decode whole",
                bytes >> 20,
                MAX_CHUNK_BYTES >> 20
            ),
            hint: "if the image is intact, convert it to a tiled GeoTIFF first, e.g. `gdal_translate -co TILED=YES -co COMPRESS=DEFLATE IN OUT.tif`".into(),
        });
    }
    Ok(())
}
/// Largest tag value (bytes): strip / tile offsets of a 500 000 × 500 000 raster in 256 × 256
/// tiles need 30 MiB; GeoTIFF keys and tie points far less.
pub const MAX_TAG_BYTES: usize = 64 << 20;

/// The decoder's memory limits: a tag or a chunk that declares more than these is refused
/// before anything is allocated for it.
fn tiff_limits() -> Limits {
    let mut l = Limits::default();
    l.decoding_buffer_size = MAX_CHUNK_BYTES;
    l.intermediate_buffer_size = MAX_CHUNK_BYTES;
    l.ifd_value_size = MAX_TAG_BYTES;
    l
}

fn compression_name(code: u16) -> &'static str {
    match code {
        2 => "CCITT RLE",
        3 => "CCITT Group 3",
        4 => "CCITT Group 4",
        6 | 7 => "JPEG",
        34712 => "JPEG 2000",
        34887 => "LERC",
        50000 => "ZSTD",
        50001 => "WebP",
        _ => "unknown",
    }
}

fn check_bands(info: &RasterInfo, bands: &[usize]) -> Result<()> {
    for &b in bands {
        if b >= info.bands {
            return Err(RasterError::BandOutOfRange {
                path: info.path.clone(),
                band: b + 1,
                count: info.bands,
            });
        }
    }
    Ok(())
}

/// Where one decoded strip or tile goes in the full-width output planes of a row range.
struct ChunkPlacement {
    /// Valid width and height of the chunk's data.
    dw: usize,
    dh: usize,
    /// Samples per pixel in the chunk (1 for planar data).
    spp: usize,
    /// Image position of the chunk's top-left pixel.
    x0: usize,
    y0: usize,
    /// Image rows wanted, `[start, end)`.
    rows: (usize, usize),
    /// Image (and output row) width.
    width: usize,
    /// Planar data: the output plane this chunk fills.
    slot: Option<usize>,
}

impl ChunkPlacement {
    /// Copy the chunk's rows inside `rows` into `out` (one plane per band, interleaved
    /// chunks split into `bands`), converting each sample with `conv`. False when the
    /// chunk holds fewer samples than its dimensions say.
    fn scatter<T: Copy>(
        &self,
        data: &[T],
        conv: impl Fn(T) -> f32,
        bands: &[usize],
        out: &mut [Vec<f32>],
    ) -> bool {
        let row_len = self.dw * self.spp;
        if data.len() < row_len * self.dh {
            return false;
        }
        let (start, end) = self.rows;
        for r in 0..self.dh {
            let y = self.y0 + r;
            if y < start || y >= end {
                continue;
            }
            let orow = (y - start) * self.width + self.x0;
            let src = &data[r * row_len..(r + 1) * row_len];
            match self.slot {
                Some(slot) => {
                    let dst = &mut out[slot][orow..orow + self.dw];
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = conv(v);
                    }
                }
                None => {
                    for (o, &b) in bands.iter().enumerate() {
                        let dst = &mut out[o][orow..orow + self.dw];
                        for (d, px) in dst.iter_mut().zip(src.chunks_exact(self.spp)) {
                            *d = conv(px[b]);
                        }
                    }
                }
            }
        }
        true
    }
}

impl BandReader for TiffReader {
    fn info(&self) -> &RasterInfo {
        &self.info
    }

    fn try_clone(&self) -> Result<Box<dyn BandReader>> {
        Ok(Box::new(TiffReader::open(&self.info.path)?))
    }

    fn read_rows(&mut self, y0: u32, h: u32, bands: &[usize]) -> Result<Vec<Vec<f32>>> {
        check_bands(&self.info, bands)?;
        let w = self.info.width as usize;
        let y1 = y0.saturating_add(h).min(self.info.height);
        let mut out = vec![vec![0f32; w * h as usize]; bands.len()];
        let path = self.info.path.clone();
        let nb = self.info.bands;
        for cy in y0 / self.chunk_h..y1.div_ceil(self.chunk_h) {
            for cx in 0..self.chunks_across {
                let planes: Vec<(usize, usize)> = if self.planar {
                    bands.iter().enumerate().map(|(i, &b)| (i, b)).collect()
                } else {
                    vec![(usize::MAX, 0)]
                };
                for (slot, plane) in planes {
                    let idx = plane as u32 * self.chunks_per_plane + cy * self.chunks_across + cx;
                    // read first: it fails on a chunk the file lacks, where the dimensions
                    // call would panic
                    let chunk = self
                        .dec
                        .read_chunk(idx)
                        .map_err(|e| RasterError::from_tiff(&path, e))?;
                    let (dw, dh) = self.dec.chunk_data_dimensions(idx);
                    let spp = if self.planar { 1 } else { nb };
                    let g = ChunkPlacement {
                        dw: dw as usize,
                        dh: dh as usize,
                        spp,
                        x0: (cx * self.chunk_w) as usize,
                        y0: (cy * self.chunk_h) as usize,
                        rows: (y0 as usize, y1 as usize),
                        width: w,
                        slot: self.planar.then_some(slot),
                    };
                    // Convert and de-interleave straight from the decoded samples.
                    let complete = match chunk {
                        DecodingResult::U8(v) => g.scatter(&v, f32::from, bands, &mut out),
                        DecodingResult::U16(v) => g.scatter(&v, f32::from, bands, &mut out),
                        DecodingResult::U32(v) => g.scatter(&v, |x| x as f32, bands, &mut out),
                        DecodingResult::U64(v) => g.scatter(&v, |x| x as f32, bands, &mut out),
                        DecodingResult::I8(v) => g.scatter(&v, f32::from, bands, &mut out),
                        DecodingResult::I16(v) => g.scatter(&v, f32::from, bands, &mut out),
                        DecodingResult::I32(v) => g.scatter(&v, |x| x as f32, bands, &mut out),
                        DecodingResult::I64(v) => g.scatter(&v, |x| x as f32, bands, &mut out),
                        DecodingResult::F16(v) => g.scatter(&v, f32::from, bands, &mut out),
                        DecodingResult::F32(v) => g.scatter(&v, |x| x, bands, &mut out),
                        DecodingResult::F64(v) => g.scatter(&v, |x| x as f32, bands, &mut out),
                    };
                    if !complete {
                        return Err(RasterError::Corrupt {
                            path: path.clone(),
                            what: format!("chunk {idx} decoded to too few samples"),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A raster decoded whole into memory (PNG and JPEG; they carry no tiling to stream by).
pub struct MemReader {
    info: RasterInfo,
    /// Interleaved samples.
    data: Arc<Vec<u16>>,
}

impl MemReader {
    pub fn from_png(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| RasterError::io(path, e))?;
        let mut dec = png::Decoder::new(BufReader::new(f));
        dec.set_transformations(png::Transformations::EXPAND);
        let corrupt = |e: png::DecodingError| match e {
            png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                RasterError::Corrupt {
                    path: path.into(),
                    what: "unexpected end of PNG file".into(),
                }
            }
            e => RasterError::Corrupt {
                path: path.into(),
                what: format!("invalid PNG ({e})"),
            },
        };
        let mut reader = dec.read_info().map_err(corrupt)?;
        let (w, h) = reader.info().size();
        let size = reader.output_buffer_size();
        check_decoded_size(path, "PNG", w as u64, h as u64, size as u64)?;
        let mut buf = vec![0u8; size];
        let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
        let bands = frame.color_type.samples();
        let data: Vec<u16> = match frame.bit_depth {
            png::BitDepth::Sixteen => buf[..frame.buffer_size()]
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect(),
            _ => buf[..frame.buffer_size()]
                .iter()
                .map(|&b| b as u16)
                .collect(),
        };
        let sample_type = if frame.bit_depth == png::BitDepth::Sixteen {
            SampleType::U16
        } else {
            SampleType::U8
        };
        let info = RasterInfo {
            path: path.into(),
            width: frame.width,
            height: frame.height,
            bands,
            sample_type,
            nodata: None,
            georef: None,
        };
        Ok(MemReader {
            info,
            data: Arc::new(data),
        })
    }

    pub fn from_jpeg(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| RasterError::io(path, e))?;
        let mut dec = jpeg_decoder::Decoder::new(BufReader::new(f));
        let invalid = |e| RasterError::Corrupt {
            path: path.into(),
            what: format!("invalid JPEG ({e})"),
        };
        dec.read_info().map_err(invalid)?;
        if let Some(m) = dec.info() {
            let (w, h) = (m.width as u64, m.height as u64);
            let px = m.pixel_format.pixel_bytes() as u64;
            check_decoded_size(path, "JPEG", w, h, w * h * px)?;
        }
        dec.set_max_decoding_buffer_size(MAX_CHUNK_BYTES);
        let pixels = dec.decode().map_err(invalid)?;
        let meta = dec.info().ok_or_else(|| RasterError::Corrupt {
            path: path.into(),
            what: "JPEG without a frame header".into(),
        })?;
        let (bands, data): (usize, Vec<u16>) = match meta.pixel_format {
            jpeg_decoder::PixelFormat::L8 => (1, pixels.into_iter().map(u16::from).collect()),
            jpeg_decoder::PixelFormat::L16 => (
                1,
                pixels
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect(),
            ),
            jpeg_decoder::PixelFormat::RGB24 => (3, pixels.into_iter().map(u16::from).collect()),
            jpeg_decoder::PixelFormat::CMYK32 => {
                return Err(RasterError::Unsupported {
                    path: path.into(),
                    what: "CMYK JPEG".into(),
                    hint: "convert it to RGB first".into(),
                })
            }
        };
        let sample_type = if meta.pixel_format == jpeg_decoder::PixelFormat::L16 {
            SampleType::U16
        } else {
            SampleType::U8
        };
        let info = RasterInfo {
            path: path.into(),
            width: meta.width as u32,
            height: meta.height as u32,
            bands,
            sample_type,
            nodata: None,
            georef: None,
        };
        Ok(MemReader {
            info,
            data: Arc::new(data),
        })
    }
}

impl BandReader for MemReader {
    fn info(&self) -> &RasterInfo {
        &self.info
    }

    fn try_clone(&self) -> Result<Box<dyn BandReader>> {
        Ok(Box::new(MemReader {
            info: self.info.clone(),
            data: Arc::clone(&self.data),
        }))
    }

    fn read_rows(&mut self, y0: u32, h: u32, bands: &[usize]) -> Result<Vec<Vec<f32>>> {
        check_bands(&self.info, bands)?;
        let (w, nb) = (self.info.width as usize, self.info.bands);
        let y1 = y0.saturating_add(h).min(self.info.height) as usize;
        let mut out = vec![vec![0f32; w * h as usize]; bands.len()];
        for y in y0 as usize..y1 {
            let row = &self.data[y * w * nb..(y + 1) * w * nb];
            for (o, &b) in bands.iter().enumerate() {
                let dst = &mut out[o][(y - y0 as usize) * w..(y - y0 as usize + 1) * w];
                for (x, d) in dst.iter_mut().enumerate() {
                    *d = row[x * nb + b] as f32;
                }
            }
        }
        Ok(out)
    }
}

/// One band from each of several single-band files of the same size (e.g. Landsat B4, B3, B2).
pub struct StackReader {
    info: RasterInfo,
    parts: Vec<Box<dyn BandReader>>,
}

impl StackReader {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let first = paths
            .first()
            .ok_or_else(|| RasterError::Options("--bands-from needs at least one file".into()))?;
        let mut parts = Vec::new();
        for p in paths {
            parts.push(open_file(p)?);
        }
        let i0 = parts[0].info().clone();
        for part in &parts[1..] {
            let i = part.info();
            if (i.width, i.height) != (i0.width, i0.height) {
                return Err(RasterError::Invalid {
                    path: i.path.clone(),
                    what: format!(
                        "is {}×{} but {} is {}×{}; --bands-from needs files of the same size (resample first)",
                        i.width, i.height, first.display(), i0.width, i0.height
                    ),
                });
            }
            if let (Some(a), Some(b)) = (&i.georef, &i0.georef) {
                if a.raw != b.raw {
                    return Err(RasterError::Invalid {
                        path: i.path.clone(),
                        what: format!("has a different geotransform from {}; --bands-from needs aligned files", first.display()),
                    });
                }
            }
        }
        let sample_type =
            parts
                .iter()
                .map(|p| p.info().sample_type)
                .fold(
                    i0.sample_type,
                    |a, b| if a == SampleType::U8 { b } else { a },
                );
        let info = RasterInfo {
            path: first.clone(),
            bands: parts.len(),
            sample_type,
            ..i0
        };
        Ok(StackReader { info, parts })
    }
}

impl BandReader for StackReader {
    fn info(&self) -> &RasterInfo {
        &self.info
    }

    fn try_clone(&self) -> Result<Box<dyn BandReader>> {
        let parts = self
            .parts
            .iter()
            .map(|p| p.try_clone())
            .collect::<Result<_>>()?;
        Ok(Box::new(StackReader {
            info: self.info.clone(),
            parts,
        }))
    }

    fn read_rows(&mut self, y0: u32, h: u32, bands: &[usize]) -> Result<Vec<Vec<f32>>> {
        check_bands(&self.info, bands)?;
        let mut out = Vec::with_capacity(bands.len());
        for &b in bands {
            out.push(
                self.parts[b]
                    .read_rows(y0, h, &[0])?
                    .pop()
                    .unwrap_or_default(),
            );
        }
        Ok(out)
    }
}
