//! `strata synth`: procedural aerial scenes with exact masks, relation triples and
//! hierarchical captions, written in the caption stage's dataset format; also the 44-scene
//! grid and a mask-only check of a dataset's relations.

use super::numbers;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use strata_synth::png_io::{read_mask, write_atomic};
use strata_synth::{
    check, render_grid, write_dataset_with, CaptionStyle, DatasetOptions, MaskView, SceneClass,
    Triple,
};

#[derive(clap::Args)]
pub struct Args {
    /// Number of scenes (drawn from the classes in turn).
    #[arg(long, default_value_t = 110, value_parser = numbers::int(1usize, numbers::MAX_COUNT))]
    count: usize,
    /// Image side in pixels (64..=1024).
    #[arg(long, default_value_t = 256, value_parser = numbers::int(8u32, 16_384))]
    size: u32,
    /// Seed: the same seed, count, size and classes give the same files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output dataset folder: images/, masks/, metadata.jsonl, classes.json.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["grid", "verify"])]
    out: Option<PathBuf>,
    /// Restrict to these scene classes, comma-separated [default: all 11].
    #[arg(long, value_delimiter = ',', value_name = "CLASS,...", value_parser = class_names())]
    classes: Vec<String>,
    /// What the `text` column holds: `flat` ("a remote sensing image of <scene> with a, b,
    /// c") or `free` (varied sentences naming only elements present and relations that hold;
    /// how the embedded base model's captions were made).
    #[arg(long, value_enum, default_value_t = Style::Flat)]
    caption_style: Style,
    /// Instead of a dataset, write a PNG grid: one row per class, --per-class scenes each.
    #[arg(long, value_name = "PNG", conflicts_with = "verify")]
    grid: Option<PathBuf>,
    /// Scenes per class in the grid.
    #[arg(long, default_value_t = 4, value_parser = numbers::int(1usize, numbers::MAX_COUNT))]
    per_class: usize,
    /// Put each scene's colour-coded mask beside it in the grid.
    #[arg(long)]
    grid_masks: bool,
    /// Check every relation triple of a dataset's metadata.jsonl against its mask files
    /// (geometry only) and report; exits non-zero if any does not hold.
    #[arg(long, value_name = "DIR")]
    verify: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Style {
    Flat,
    Free,
}

/// `--classes` values: the scene classes (`_`, `-` and spaces interchangeable), listed in
/// `--help` and checked by the class parser.
fn class_names() -> super::Checked {
    super::Checked {
        values: SceneClass::ALL.iter().map(|c| c.slug()).collect(),
        check: |s| SceneClass::parse(s).map(|_| ()).map_err(|e| e.to_string()),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.verify {
        return verify(dir);
    }
    if !(strata_synth::MIN_SIZE..=strata_synth::MAX_SIZE).contains(&args.size) {
        bail!(
            "--size {} is outside {}..={} pixels",
            args.size,
            strata_synth::MIN_SIZE,
            strata_synth::MAX_SIZE
        );
    }
    if let Some(path) = &args.grid {
        if args.per_class == 0 {
            bail!("--per-class must be at least 1");
        }
        let (w, h, rgb) = render_grid(args.size, args.per_class, args.seed, args.grid_masks);
        let bytes = strata_image::encode_png_rgb8(path, w as usize, h as usize, &rgb)?;
        write_atomic(path, &bytes)?;
        println!(
            "wrote {} ({w}x{h}: {} classes x {} scenes, seed {})",
            path.display(),
            SceneClass::ALL.len(),
            args.per_class,
            args.seed
        );
        return Ok(ExitCode::SUCCESS);
    }
    let out = args.out.as_ref().expect("clap requires --out");
    let classes = args
        .classes
        .iter()
        .filter(|c| !c.trim().is_empty())
        .map(|c| SceneClass::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = DatasetOptions {
        count: args.count,
        size: args.size,
        seed: args.seed,
        classes,
    };
    let bar = ProgressBar::new(args.count as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} scenes ({per_sec}, eta {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_prefix("synth");
    let style = match args.caption_style {
        Style::Flat => CaptionStyle::Flat,
        Style::Free => CaptionStyle::Free,
    };
    let report = write_dataset_with(out, &opts, style, &|| bar.inc(1))
        .with_context(|| format!("writing the synthetic dataset to {}", out.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {} scenes ({}x{} px, seed {}) to {}; metadata in {}",
        report.written,
        args.size,
        args.size,
        args.seed,
        out.display(),
        report.metadata.display()
    );
    if !report.failed.is_empty() {
        eprintln!("{} scene(s) could not be written:", report.failed.len());
        for (name, err) in &report.failed {
            eprintln!("  {name}: {err}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let records = strata_caption::read_dataset(dir)
        .with_context(|| format!("reading {}", dir.join("metadata.jsonl").display()))?;
    let (mut ok, mut bad, mut skipped) = (0usize, Vec::new(), 0usize);
    for r in &records {
        let (Some(mask), Some(rels)) = (r.extra.get("mask_file_name"), r.extra.get("relations"))
        else {
            skipped += 1;
            continue;
        };
        let Some(mask) = mask.as_str() else {
            bad.push(format!("{}: `mask_file_name` is not a string", r.file_name));
            continue;
        };
        let triples: Vec<Triple> = match serde_json::from_value(rels.clone()) {
            Ok(t) => t,
            Err(e) => {
                bad.push(format!(
                    "{}: `relations` is not a list of triples: {e}",
                    r.file_name
                ));
                continue;
            }
        };
        let (w, h, data) = match read_mask(&dir.join(mask)) {
            Ok(m) => m,
            Err(e) => {
                bad.push(format!("{:#}", anyhow::Error::new(e)));
                continue;
            }
        };
        let view = MaskView::new(w, h, &data)?;
        for t in &triples {
            match check(&view, t) {
                Ok(v) if v.holds => ok += 1,
                Ok(v) => bad.push(format!(
                    "{}: {} {} {} does not hold ({})",
                    mask, t.subject, t.relation, t.object, v.detail
                )),
                Err(e) => bad.push(format!("{mask}: {e}")),
            }
        }
    }
    println!(
        "{ok} relation(s) hold, {} problem(s), {skipped} record(s) without mask or relations",
        bad.len()
    );
    for b in &bad {
        eprintln!("  {b}");
    }
    Ok(if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
