//! `strata prepare`: raw rasters → RGB 8-bit tiles + manifest.jsonl (paper section 3.1.1).

use super::numbers::{self, End};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use strata_raster::plan::{CropMode, EdgeMode, PadMode, PlanOptions};
use strata_raster::prepare::{OutputFormat, Progress};
use strata_raster::source::RasterSpec;
use strata_raster::stretch::Stretch;
use strata_raster::write::TiffCompression;
use strata_raster::PrepareOptions;

#[derive(clap::Args)]
#[command(
    after_help = "Eq. 1, per axis of length L: L ≥ 2S → slicing, S < L < 2S → cropping, L ≤ S → padding.\n\
Examples:\n  strata prepare scene.tif --bands 4,3,2 --out tiles\n  \
strata prepare --bands-from B4.tif,B3.tif,B2.tif --size 256 --out tiles"
)]
pub struct Args {
    /// Raster files: GeoTIFF (.tif/.tiff), PNG, JPEG. Each is prepared on its own.
    inputs: Vec<PathBuf>,
    /// Combine separate single-band files (comma-separated, in R,G,B order) into one raster.
    /// May be given several times, once per scene.
    #[arg(long, value_name = "R,G,B")]
    bands_from: Vec<String>,
    /// Output folder (created if missing).
    #[arg(long, short)]
    out: PathBuf,
    /// Tile size S in pixels.
    #[arg(long, default_value_t = 512, value_parser = numbers::int(1u32, 65_536))]
    size: u32,
    /// Source bands for R,G,B, 1-based (e.g. 4,3,2 for Landsat/Sentinel true colour), or a
    /// single band for grey [default: 1,2,3, or 1 for single-band files].
    #[arg(long, value_delimiter = ',', value_parser = numbers::int(1usize, 65_535))]
    bands: Option<Vec<usize>>,
    /// Bit-depth stretch to 8 bits. auto: percentile for data wider than 8 bits, none for 8-bit.
    #[arg(long, value_enum, default_value_t = StretchArg::Auto)]
    stretch: StretchArg,
    /// Low and high percentile for --stretch percentile.
    #[arg(long, value_delimiter = ',', default_value = "2,98", value_parser = numbers::float(End::Closed(0.0), End::Closed(100.0)))]
    percentiles: Vec<f64>,
    /// Use every pixel for the stretch statistics (default: at most 16 Mpx, sampled by row blocks).
    #[arg(long)]
    exact_stats: bool,
    /// Nodata value (overrides the file's GDAL_NODATA tag). Nodata pixels are left out of the
    /// statistics and written as 0.
    #[arg(long, value_parser = numbers::finite)]
    nodata: Option<f64>,
    /// Overlap between neighbouring tiles when slicing, in pixels.
    #[arg(long, default_value_t = 0, value_parser = numbers::int(0u32, 65_535))]
    overlap: u32,
    /// Leftover strip at the right/bottom edge when slicing.
    #[arg(long, value_enum, default_value_t = EdgeArg::Shift)]
    edge: EdgeArg,
    /// Where to crop when S < side < 2S.
    #[arg(long, value_enum, default_value_t = CropArg::Centre)]
    crop: CropArg,
    /// Seed for --crop random (combined with nothing else: the same seed gives the same crops).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How to pad when side ≤ S (the image is centred).
    #[arg(long, value_enum, default_value_t = PadArg::Constant)]
    pad: PadArg,
    /// Fill value for --pad constant.
    #[arg(long, default_value_t = 0)]
    pad_value: u8,
    /// Output files per tile. auto: PNG, plus GeoTIFF when the source is georeferenced.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// GeoTIFF tile compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    tiff_compression: CompressionArg,
    /// Skip tiles with less than this share of valid (non-nodata, non-padded) pixels.
    #[arg(long, default_value_t = 0.0, value_parser = numbers::unit)]
    min_valid: f64,
    /// Skip sources that manifest.jsonl already lists with the same parameters (resume).
    #[arg(long)]
    resume: bool,
    /// Worker threads [default: all cores].
    #[arg(long, short = 'j', value_parser = numbers::int(1usize, 1_024))]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Largest raster accepted, in pixels (width × height, from the header) [default:
    /// 10 000 000 000; rasters are read strip by strip, so this only stops absurd headers].
    #[arg(long, value_name = "N", value_parser = numbers::int(1u64, u64::MAX))]
    pub max_pixels: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum StretchArg {
    Auto,
    Percentile,
    Minmax,
    None,
}
#[derive(Clone, Copy, ValueEnum)]
enum EdgeArg {
    Shift,
    Pad,
    Drop,
}
#[derive(Clone, Copy, ValueEnum)]
enum CropArg {
    Centre,
    Random,
}
#[derive(Clone, Copy, ValueEnum)]
enum PadArg {
    Constant,
    Reflect,
}
#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    Png,
    Geotiff,
    Both,
}
#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Lzw,
    Deflate,
}

struct Bar(ProgressBar);
impl Progress for Bar {
    fn add_total(&self, n: u64) {
        self.0.inc_length(n);
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(n) = a.max_pixels {
        strata_raster::source::set_max_raster_pixels(n);
    }
    let mut specs: Vec<RasterSpec> = a.inputs.iter().cloned().map(RasterSpec::File).collect();
    for list in &a.bands_from {
        specs.push(RasterSpec::Stack(
            list.split(',').map(PathBuf::from).collect(),
        ));
    }
    if specs.is_empty() {
        bail!("no input rasters: give files (strata prepare A.tif B.png --out DIR) or --bands-from R.tif,G.tif,B.tif");
    }
    let stretch = match a.stretch {
        StretchArg::Auto => None,
        StretchArg::Percentile => {
            if a.percentiles.len() != 2
                || !(0.0..=100.0).contains(&a.percentiles[0])
                || a.percentiles[0] >= a.percentiles[1]
                || a.percentiles[1] > 100.0
            {
                bail!(
                    "--percentiles takes LOW,HIGH with 0 ≤ LOW < HIGH ≤ 100, got {:?}",
                    a.percentiles
                );
            }
            Some(Stretch::Percentile(a.percentiles[0], a.percentiles[1]))
        }
        StretchArg::Minmax => Some(Stretch::MinMax),
        StretchArg::None => Some(Stretch::None),
    };
    if !(0.0..=1.0).contains(&a.min_valid) {
        bail!(
            "--min-valid is a share between 0 and 1, got {}",
            a.min_valid
        );
    }
    let mut opts = PrepareOptions::new(&a.out);
    opts.bands = a.bands;
    opts.stretch = stretch;
    opts.exact_stats = a.exact_stats;
    opts.nodata = a.nodata;
    opts.plan = PlanOptions {
        size: a.size,
        overlap: a.overlap,
        edge: match a.edge {
            EdgeArg::Shift => EdgeMode::Shift,
            EdgeArg::Pad => EdgeMode::Pad,
            EdgeArg::Drop => EdgeMode::Drop,
        },
        crop: match a.crop {
            CropArg::Centre => CropMode::Centre,
            CropArg::Random => CropMode::Random(a.seed),
        },
    };
    opts.pad = match a.pad {
        PadArg::Constant => PadMode::Constant(a.pad_value),
        PadArg::Reflect => PadMode::Reflect,
    };
    opts.format = match a.format {
        FormatArg::Auto => OutputFormat::Auto,
        FormatArg::Png => OutputFormat::Png,
        FormatArg::Geotiff => OutputFormat::GeoTiff,
        FormatArg::Both => OutputFormat::Both,
    };
    opts.tiff_compression = match a.tiff_compression {
        CompressionArg::None => TiffCompression::None,
        CompressionArg::Lzw => TiffCompression::Lzw,
        CompressionArg::Deflate => TiffCompression::Deflate,
    };
    opts.min_valid = a.min_valid;
    opts.resume = a.resume;

    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} prepare [{bar:40}] {pos}/{len} tiles {per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let progress = Bar(bar.clone());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    let report = pool.install(|| strata_raster::prepare(&specs, &opts, &progress))?;
    bar.finish_and_clear();

    let n_sources = specs.len() - report.failures.len() - report.resumed_sources.len();
    eprintln!(
        "prepared {} tile(s) from {} source(s) into {}{}{}",
        report.records.len(),
        n_sources,
        a.out.display(),
        if report.skipped_tiles > 0 {
            format!(
                "; {} tile(s) below --min-valid skipped",
                report.skipped_tiles
            )
        } else {
            String::new()
        },
        if report.resumed_sources.is_empty() {
            String::new()
        } else {
            format!(
                "; {} source(s) already done (--resume)",
                report.resumed_sources.len()
            )
        },
    );
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} file(s) failed (nothing was written for them):",
        report.failures.len()
    );
    for f in &report.failures {
        eprintln!("error: {}", f.error);
    }
    Ok(ExitCode::FAILURE)
}
