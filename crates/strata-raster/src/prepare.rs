//! The prepare job: many inputs → tiles + `manifest.jsonl`, in parallel over files and tile
//! rows. A file that fails leaves no tile behind (tiles are committed only when the whole
//! file succeeded) and is reported in [`PrepareReport::failures`]; the others are written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{RasterError, Result};
use crate::geo::GeoTransform;
use crate::plan::{self, PadMode, PlanOptions, TileSpec, Window};
use crate::source::{BandReader, RasterSpec};
use crate::stretch::{self, BandLut, BandMap, Stretch};
use crate::write::{self, TiffCompression};

/// Which files each tile gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// PNG always, plus GeoTIFF when the source is georeferenced.
    Auto,
    Png,
    GeoTiff,
    Both,
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub out: PathBuf,
    /// 1-based band indices to use as R, G, B; `None`: bands 1,2,3 (or 1,1,1 for grey).
    pub bands: Option<Vec<usize>>,
    /// `None`: [`Stretch::auto`] for the source's sample type.
    pub stretch: Option<Stretch>,
    /// Gather statistics from every pixel even for very large rasters.
    pub exact_stats: bool,
    /// Overrides the file's own nodata value.
    pub nodata: Option<f64>,
    pub plan: PlanOptions,
    pub pad: PadMode,
    pub format: OutputFormat,
    pub tiff_compression: TiffCompression,
    /// Tiles whose share of valid (non-nodata, non-padding) pixels is below this are skipped.
    pub min_valid: f64,
    /// Skip sources whose tiles the manifest already lists with the same parameters.
    pub resume: bool,
}

impl PrepareOptions {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        PrepareOptions {
            out: out.into(),
            bands: None,
            stretch: None,
            exact_stats: false,
            nodata: None,
            plan: PlanOptions {
                size: 512,
                overlap: 0,
                edge: plan::EdgeMode::Shift,
                crop: plan::CropMode::Centre,
            },
            pad: PadMode::Constant(0),
            format: OutputFormat::Auto,
            tiff_compression: TiffCompression::None,
            min_valid: 0.0,
            resume: false,
        }
    }

    /// A fingerprint of everything that changes the pixels of a tile.
    fn params(&self, bands: &[usize], stretch: Stretch) -> String {
        format!(
            "bands={bands:?};stretch={stretch:?};exact={};nodata={:?};size={};overlap={};edge={:?};crop={:?};pad={:?};min_valid={}",
            self.exact_stats, self.nodata, self.plan.size, self.plan.overlap, self.plan.edge, self.plan.crop, self.pad, self.min_valid
        )
    }
}

/// Progress reporting hooks (the CLI draws a bar with them).
pub trait Progress: Sync {
    fn add_total(&self, _tiles: u64) {}
    fn inc(&self, _tiles: u64) {}
}

/// No progress reporting.
pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone, Serialize)]
pub struct StretchRecord {
    pub method: String,
    pub bands: Vec<BandMap>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AxisOps {
    pub x: plan::AxisOp,
    pub y: plan::AxisOp,
}

/// One line of `manifest.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct TileRecord {
    /// PNG tile, relative to the output folder (absent with `--format geotiff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geotiff: Option<String>,
    pub source: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_files: Vec<String>,
    /// 1-based source bands used as R, G, B.
    pub bands: Vec<usize>,
    pub source_size: [u32; 2],
    pub row: usize,
    pub col: usize,
    /// Window in source pixels; negative offsets or a window past the edge mean padding.
    pub window: Window,
    pub operation: String,
    pub ops: AxisOps,
    pub valid_fraction: f64,
    pub stretch: StretchRecord,
    /// GDAL-order geotransform of the tile (top-left corner convention).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geotransform: Option<GeoTransform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crs: Option<String>,
    pub params: String,
}

#[derive(Debug, Clone)]
pub struct FileFailure {
    pub path: PathBuf,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct PrepareReport {
    pub records: Vec<TileRecord>,
    pub failures: Vec<FileFailure>,
    /// Tiles skipped by `min_valid`.
    pub skipped_tiles: usize,
    /// Sources skipped by `resume` because the manifest already has them.
    pub resumed_sources: Vec<PathBuf>,
}

/// What one source produced: its records, or `None` when `--resume` skipped it.
type SourceResult = std::result::Result<Option<Vec<TileRecord>>, RasterError>;

/// Check (and create) the output folder.
pub fn ensure_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(RasterError::Options(format!(
            "--out {}: is a file, not a folder; choose a folder path (it is created if missing)",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| RasterError::io(out, e))
}

/// Run the prepare job over `inputs`. Errors only for problems with the whole job (options,
/// output folder, manifest); per-file problems go to the report.
pub fn prepare(
    inputs: &[RasterSpec],
    opts: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<PrepareReport> {
    ensure_out_dir(&opts.out)?;
    plan::plan(opts.plan.size * 2, opts.plan.size * 2, &opts.plan)?; // validate options early
    let manifest_path = opts.out.join("manifest.jsonl");
    let existing = read_existing_manifest(&manifest_path)?;
    let stems = unique_stems(inputs);

    let results: Vec<(usize, SourceResult, usize)> = inputs
        .par_iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut skipped = 0;
            let r = prepare_one(spec, &stems[i], opts, &existing, progress, &mut skipped);
            (i, r, skipped)
        })
        .collect();

    let mut report = PrepareReport::default();
    let mut done_sources = HashSet::new();
    for (i, r, skipped) in results {
        report.skipped_tiles += skipped;
        match r {
            Ok(Some(records)) => {
                done_sources.insert(source_key(&inputs[i]));
                report.records.extend(records);
            }
            Ok(None) => report.resumed_sources.push(inputs[i].display_path()),
            Err(e) => report.failures.push(FileFailure {
                path: inputs[i].display_path(),
                error: crate::error::chain(&e),
            }),
        }
    }
    // a run that produced nothing (every source failed) leaves no manifest behind
    if !(report.records.is_empty() && existing.is_empty() && !report.failures.is_empty()) {
        write_manifest(&manifest_path, &existing, &done_sources, &report.records)?;
    }
    Ok(report)
}

fn source_key(spec: &RasterSpec) -> String {
    spec.display_path().to_string_lossy().into_owned()
}

/// File stems for tile names, made unique in input order (`name`, `name-2`, ...).
fn unique_stems(inputs: &[RasterSpec]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    inputs
        .iter()
        .map(|s| {
            let stem = s
                .display_path()
                .file_stem()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_else(|| "raster".into());
            let n = seen.entry(stem.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                stem
            } else {
                format!("{stem}-{n}")
            }
        })
        .collect()
}

struct ExistingLine {
    raw: String,
    source: Option<String>,
    params: Option<String>,
    files: Vec<String>,
}

fn read_existing_manifest(path: &Path) -> Result<Vec<ExistingLine>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RasterError::io(path, e)),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Option<serde_json::Value> = serde_json::from_str(l).ok();
            let get = |k: &str| {
                v.as_ref()
                    .and_then(|v| v.get(k))
                    .and_then(|x| x.as_str())
                    .map(String::from)
            };
            let files = ["tile", "geotiff"].iter().filter_map(|k| get(k)).collect();
            ExistingLine {
                raw: l.to_string(),
                source: get("source"),
                params: get("params"),
                files,
            }
        })
        .collect())
}

fn write_manifest(
    path: &Path,
    existing: &[ExistingLine],
    replaced: &HashSet<String>,
    records: &[TileRecord],
) -> Result<()> {
    strata_io::atomic::write_with(path, |f| {
        for line in existing {
            if line.source.as_ref().is_some_and(|s| replaced.contains(s)) {
                continue;
            }
            writeln!(f, "{}", line.raw)?;
        }
        for r in records {
            let s = serde_json::to_string(r).expect("manifest records serialise");
            writeln!(f, "{s}")?;
        }
        Ok(())
    })
    .map_err(|e| RasterError::io(path, e))
}

fn resolve_bands(reader: &dyn BandReader, requested: &Option<Vec<usize>>) -> Result<Vec<usize>> {
    let info = reader.info();
    match requested {
        Some(b) => {
            if b.len() != 3 && b.len() != 1 {
                return Err(RasterError::Options(format!(
                    "--bands takes 3 band numbers (R,G,B) or 1 (grey), got {}",
                    b.len()
                )));
            }
            let mut out = Vec::new();
            for &x in b {
                if x == 0 || x > info.bands {
                    return Err(RasterError::BandOutOfRange {
                        path: info.path.clone(),
                        band: x,
                        count: info.bands,
                    });
                }
                out.push(x - 1);
            }
            if out.len() == 1 {
                out = vec![out[0]; 3];
            }
            Ok(out)
        }
        None if info.bands >= 3 => Ok(vec![0, 1, 2]),
        None => Ok(vec![0, 0, 0]),
    }
}

fn prepare_one(
    spec: &RasterSpec,
    stem: &str,
    opts: &PrepareOptions,
    existing: &[ExistingLine],
    progress: &dyn Progress,
    skipped: &mut usize,
) -> Result<Option<Vec<TileRecord>>> {
    let mut reader = spec.open()?;
    let info = reader.info().clone();
    let bands = resolve_bands(reader.as_ref(), &opts.bands)?;
    let stretch = opts
        .stretch
        .unwrap_or_else(|| Stretch::auto(info.sample_type));
    let params = opts.params(&bands, stretch);
    let key = source_key(spec);
    if opts.resume {
        let mine: Vec<&ExistingLine> = existing
            .iter()
            .filter(|l| l.source.as_deref() == Some(key.as_str()))
            .collect();
        if !mine.is_empty()
            && mine.iter().all(|l| {
                l.params.as_deref() == Some(params.as_str())
                    && l.files.iter().all(|f| opts.out.join(f).is_file())
            })
        {
            return Ok(None);
        }
    }
    let nodata = opts.nodata.or(info.nodata);
    let maps = stretch::band_maps(reader.as_mut(), &bands, stretch, nodata, opts.exact_stats)?;
    let luts: Option<Vec<BandLut>> = maps
        .iter()
        .map(|m| BandLut::new(*m, info.sample_type))
        .collect();
    let tile_plan = plan::plan(info.width, info.height, &opts.plan)?;
    progress.add_total(tile_plan.tiles.len() as u64);

    let georef = info.georef.clone();
    let want_png = matches!(
        opts.format,
        OutputFormat::Auto | OutputFormat::Png | OutputFormat::Both
    );
    let want_tif = match opts.format {
        OutputFormat::Auto => georef.is_some(),
        OutputFormat::GeoTiff | OutputFormat::Both => true,
        OutputFormat::Png => false,
    };
    let method = match stretch {
        Stretch::Percentile(a, b) => format!("percentile {a}-{b}"),
        Stretch::MinMax => "minmax".into(),
        Stretch::None => "none".into(),
    };
    let crs = georef.as_ref().and_then(|g| g.crs());
    let source_files = match spec {
        RasterSpec::Stack(ps) => ps
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        RasterSpec::File(_) => Vec::new(),
    };

    // Group tiles by grid row: they share the source rows they need.
    let mut rows: Vec<Vec<&TileSpec>> = Vec::new();
    for t in &tile_plan.tiles {
        if rows.len() <= t.row {
            rows.push(Vec::new());
        }
        rows[t.row].push(t);
    }
    let written: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let proto = std::sync::Mutex::new(reader);
    let size = opts.plan.size;
    let work = |row: &Vec<&TileSpec>| -> Result<Vec<Option<TileRecord>>> {
        // A clone of the reader opened above: PNG/JPEG pixels are decoded once, not per row.
        let mut r = proto.lock().unwrap().try_clone()?;
        let y = row[0].window.y;
        let ymap: Vec<Option<usize>> = (0..size as i64)
            .map(|j| plan::source_index(y + j, info.height as i64, opts.pad))
            .collect();
        let (lo, hi) = match (ymap.iter().flatten().min(), ymap.iter().flatten().max()) {
            (Some(&a), Some(&b)) => (a, b),
            _ => (0, 0),
        };
        let planes = r.read_rows(lo as u32, (hi - lo + 1) as u32, &bands)?;
        let mut out = Vec::new();
        for t in row {
            let (rgb, valid) = render(
                &planes,
                info.width as usize,
                lo,
                &ymap,
                t.window.x,
                &maps,
                luts.as_deref(),
                nodata,
                opts.pad,
                size,
            );
            progress.inc(1);
            let valid_fraction = valid as f64 / (size as f64 * size as f64);
            if valid_fraction < opts.min_valid {
                out.push(None);
                continue;
            }
            let base = format!("{stem}_{:03}_{:03}", t.row, t.col);
            let png_name = want_png.then(|| format!("{base}.png"));
            let tif_name = want_tif.then(|| format!("{base}.tif"));
            if let Some(n) = &png_name {
                let p = opts.out.join(n);
                written.lock().unwrap().push(p.clone());
                write::write_png(&p, size, size, &rgb)?;
            }
            if let Some(n) = &tif_name {
                let p = opts.out.join(n);
                written.lock().unwrap().push(p.clone());
                let g = georef
                    .as_ref()
                    .map(|g| (g, t.window.x as f64, t.window.y as f64));
                write::write_geotiff(&p, size, size, &rgb, g, opts.tiff_compression)?;
            }
            out.push(Some(TileRecord {
                tile: png_name,
                geotiff: tif_name,
                source: key.clone(),
                source_files: source_files.clone(),
                bands: bands.iter().map(|b| b + 1).collect(),
                source_size: [info.width, info.height],
                row: t.row,
                col: t.col,
                window: t.window,
                operation: tile_plan.operation(),
                ops: AxisOps {
                    x: tile_plan.op_x,
                    y: tile_plan.op_y,
                },
                valid_fraction,
                stretch: StretchRecord {
                    method: method.clone(),
                    bands: maps.clone(),
                },
                geotransform: georef.as_ref().map(|g| {
                    g.gdal_transform()
                        .shifted(t.window.x as f64, t.window.y as f64)
                }),
                crs: crs.clone(),
                params: params.clone(),
            }));
        }
        Ok(out)
    };
    let results: Vec<Result<Vec<Option<TileRecord>>>> = rows.par_iter().map(work).collect();
    let written = written.into_inner().unwrap();
    let mut records = Vec::new();
    for r in results {
        match r {
            Ok(v) => {
                *skipped += v.iter().filter(|x| x.is_none()).count();
                records.extend(v.into_iter().flatten());
            }
            Err(e) => {
                written.iter().for_each(|p| write::discard(p));
                return Err(e);
            }
        }
    }
    for p in &written {
        if let Err(e) = write::commit(p) {
            written.iter().for_each(|p| write::discard(p));
            return Err(e);
        }
    }
    Ok(Some(records))
}

/// Render one S×S RGB tile from full-width source rows starting at source row `row0`.
/// Returns the pixels and the count of valid pixels.
#[allow(clippy::too_many_arguments)]
fn render(
    planes: &[Vec<f32>],
    width: usize,
    row0: usize,
    ymap: &[Option<usize>],
    x: i64,
    maps: &[BandMap],
    luts: Option<&[BandLut]>,
    nodata: Option<f64>,
    pad: PadMode,
    size: u32,
) -> (Vec<u8>, usize) {
    let s = size as usize;
    let fill = match pad {
        PadMode::Constant(v) => v,
        PadMode::Reflect => 0,
    };
    let nodata = nodata.map(|v| v as f32);
    let xmap: Vec<Option<usize>> = (0..s as i64)
        .map(|i| plan::source_index(x + i, width as i64, pad))
        .collect();
    let mut rgb = vec![fill; s * s * 3];
    let mut valid = 0;
    for (j, sy) in ymap.iter().enumerate() {
        let Some(sy) = sy else { continue };
        let base = (sy - row0) * width;
        let out_row = &mut rgb[j * s * 3..(j + 1) * s * 3];
        for (i, sx) in xmap.iter().enumerate() {
            let Some(sx) = sx else { continue };
            let (r, g, b) = (
                planes[0][base + sx],
                planes[1][base + sx],
                planes[2][base + sx],
            );
            let px = &mut out_row[i * 3..i * 3 + 3];
            if stretch::is_valid(r, nodata)
                && stretch::is_valid(g, nodata)
                && stretch::is_valid(b, nodata)
            {
                if let Some(l) = luts {
                    px[0] = l[0].apply(r);
                    px[1] = l[1].apply(g);
                    px[2] = l[2].apply(b);
                } else {
                    px[0] = maps[0].apply(r);
                    px[1] = maps[1].apply(g);
                    px[2] = maps[2].apply(b);
                }
                valid += 1;
            } else {
                px.fill(0);
            }
        }
    }
    (rgb, valid)
}
