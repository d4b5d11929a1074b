//! `strata caption`: import a dataset (Karpathy / COCO caption JSON, class folders, kohya
//! captions) and turn it into a hierarchical dataset (images + `metadata.jsonl`) with the
//! SRKC golden rule and the expert corrections, every step recorded in provenance.

use super::numbers;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use strata_caption::error::CaptionError;
use strata_caption::import::SourceItem;
use strata_caption::import::{
    import_class_folders, import_coco, import_images, import_karpathy, import_kohya, read_labels,
    ImportReport,
};
use strata_caption::knowledge::EMBEDDED_TOML;
use strata_caption::pipeline::{
    caption_item, to_record, CaptionConfig, CaptionedItem, ExistingSentences, LabelScene,
    LexiconTagger,
};
use strata_caption::{
    analyze, assign_splits, write_dataset, DatasetStats, Fallback, Knowledge, MetadataRecord,
    StatsField,
};

/// Where the images and their sentences come from.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Source {
    /// Karpathy-style caption JSON (RSICD, UCM-captions, Sydney-captions): INPUT is the JSON.
    Karpathy,
    /// COCO-style caption JSON: INPUT is the JSON.
    Coco,
    /// Class-per-folder dataset: INPUT/<scene>/<image>; scene = folder name.
    Folders,
    /// kohya-style: images with same-name .txt captions under INPUT.
    Kohya,
    /// Plain tiles (e.g. `strata prepare` output): every image under INPUT, captioned from
    /// pixels (the embedded pixel captioner unless other parts are chosen).
    Images,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    tool: Option<Tool>,
    /// Input format.
    #[arg(long, value_enum, required_unless_present_any = ["print_knowledge", "explain"])]
    from: Option<Source>,
    /// The caption JSON (karpathy, coco) or the dataset folder (folders, kohya).
    #[arg(required_unless_present_any = ["print_knowledge", "explain"])]
    input: Option<PathBuf>,
    /// Folder the JSON's file names are relative to [default: the JSON's folder].
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Scene labels for images whose file names carry none (UCM-captions, Sydney-captions):
    /// a text file with one `file_name,scene` pair a line.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Output dataset folder (images + metadata.jsonl); built aside and renamed into place.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["print_knowledge", "explain"])]
    out: Option<PathBuf>,
    /// Replace --out if it exists (only once the new dataset is complete).
    #[arg(long)]
    force: bool,
    /// Spatial relation knowledge file (TOML) instead of the embedded default.
    #[arg(long, value_name = "FILE")]
    knowledge: Option<PathBuf>,
    /// What to do when no candidate sentence passes the golden rule.
    #[arg(long, value_enum, default_value_t = Fallback::StripVertical)]
    fallback: Fallback,
    /// Draw at most this many candidate sentences per image [default: all].
    #[arg(long, value_name = "N", value_parser = numbers::int(1usize, 100_000))]
    max_candidates: Option<usize>,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of each scene that goes to train.
    #[arg(long, default_value_t = 0.8, value_parser = numbers::unit)]
    train_fraction: f64,
    /// Print the embedded knowledge file (a starting point for --knowledge) and exit.
    #[arg(long)]
    print_knowledge: bool,
    #[command(flatten)]
    parts: super::caption_parts::PartArgs,
    /// Print what the SRKC finds in SENTENCE (relations, vertical relations, elements) as
    /// JSON and exit.
    #[arg(long, value_name = "SENTENCE")]
    explain: Option<String>,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
}

/// Tools for the pixel parts.
#[derive(clap::Subcommand)]
enum Tool {
    /// Train a linear element + scene head on frozen CLIP image embeddings of a labelled
    /// dataset (metadata.jsonl with scene and elements), for --elements-from head /
    /// --scene-from head.
    TrainTagger(TrainTaggerArgs),
    /// Choose per-element CLIP thresholds that maximise F1 on a labelled dataset, for
    /// --thresholds.
    Calibrate(CalibrateArgs),
}

#[derive(clap::Args)]
struct TrainTaggerArgs {
    /// CLIP model: a Hugging Face CLIP folder or an open_clip checkpoint.
    #[arg(long, value_name = "PATH")]
    clip: PathBuf,
    /// Labelled dataset folder (images + metadata.jsonl with scene and elements).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Head file to write (safetensors).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Full-batch AdamW steps.
    #[arg(long, default_value_t = 300, value_parser = numbers::int(1usize, numbers::MAX_COUNT))]
    steps: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-2, value_parser = numbers::positive)]
    lr: f64,
    /// Probability from which an element is tagged.
    #[arg(long, default_value_t = 0.5, value_parser = numbers::unit_f32)]
    element_threshold: f32,
    /// Knowledge file (TOML) instead of the embedded default.
    #[arg(long, value_name = "FILE")]
    knowledge: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: strata_models::device::DeviceSpec,
}

#[derive(clap::Args)]
struct CalibrateArgs {
    /// CLIP model: a Hugging Face CLIP folder or an open_clip checkpoint.
    #[arg(long, value_name = "PATH")]
    clip: PathBuf,
    /// Labelled dataset folder (images + metadata.jsonl with elements).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Threshold file to write (JSON).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Knowledge file (TOML) instead of the embedded default.
    #[arg(long, value_name = "FILE")]
    knowledge: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: strata_models::device::DeviceSpec,
}

fn print_skipped(skipped: &[(String, String)]) {
    if !skipped.is_empty() {
        eprintln!("{} image(s) were skipped:", skipped.len());
        for (f, why) in skipped {
            eprintln!("  {f}: {why}");
        }
    }
}

fn train_tagger(a: TrainTaggerArgs) -> anyhow::Result<ExitCode> {
    let k = load_knowledge(&a.knowledge)?;
    let device = a.device.open()?;
    let clip = strata_captioner::ClipModel::load(
        &a.clip,
        &device,
        &strata_captioner::ClipOptions::default(),
    )?;
    let opts = strata_captioner::HeadOptions {
        steps: a.steps,
        lr: a.lr,
        element_threshold: a.element_threshold,
        ..Default::default()
    };
    let (mut head, report) = strata_captioner::train_head(clip, &a.data, &k, &opts)?;
    head.save(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} ({} images, loss {:.4} → {:.4})",
        a.out.display(),
        report.images,
        report.initial_loss,
        report.final_loss
    );
    if !report.elements_without_examples.is_empty() {
        println!(
            "elements without a positive example (never tagged): {}",
            report.elements_without_examples.join(", ")
        );
    }
    print_skipped(&report.skipped);
    Ok(if report.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn calibrate(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let k = load_knowledge(&a.knowledge)?;
    let device = a.device.open()?;
    let mut tagger = strata_captioner::ClipTagger::load(&a.clip, &device, &k)?;
    let report = tagger.calibrate(&a.data, &k)?;
    tagger
        .save_thresholds(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} ({} images; {} elements calibrated, {} without a positive example keep the default)",
        a.out.display(),
        report.images,
        report.calibrated.len(),
        report.uncalibrated.len()
    );
    print_skipped(&report.skipped);
    Ok(if report.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn load_knowledge(path: &Option<PathBuf>) -> anyhow::Result<Knowledge> {
    Ok(match path {
        Some(p) => Knowledge::from_file(p)?,
        None => Knowledge::embedded(),
    })
}

/// A seed per image from the run's seed and the image's name, so a tile's draws do not
/// depend on which other tiles are in the folder (FNV-1a, stable across platforms).
fn image_seed(seed: u64, file_name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in file_name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Decodes the image once and runs the chosen parts on it.
fn caption_from_pixels(
    k: &Knowledge,
    it: &SourceItem,
    parts: &mut super::caption_parts::Built,
    seed: u64,
    cfg: &CaptionConfig,
) -> Result<CaptionedItem, CaptionError> {
    let image = strata_image::read_rgb8(&it.image)
        .map_err(|e| CaptionError::Other(strata_image::error_chain(&e)))?;
    let (c, _scores) = strata_captioner::caption_image(
        k,
        it,
        &image,
        image_seed(seed, &it.file_name),
        parts.as_parts(),
        cfg,
    )?;
    Ok(c)
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    args.image_limit.apply();
    match args.tool.take() {
        Some(Tool::TrainTagger(a)) => return train_tagger(a),
        Some(Tool::Calibrate(a)) => return calibrate(a),
        None => {}
    }
    if args.print_knowledge {
        print!("{EMBEDDED_TOML}");
        return Ok(ExitCode::SUCCESS);
    }
    let k = load_knowledge(&args.knowledge)?;
    if let Some(s) = &args.explain {
        let a = analyze(&k, s);
        println!("{}", serde_json::to_string_pretty(&a)?);
        println!("passes golden rule: {}", a.passes_golden_rule());
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(from), Some(input), Some(out)) = (args.from, args.input.clone(), args.out.clone())
    else {
        bail!("--from, INPUT and --out are required");
    };
    if !(0.0..=1.0).contains(&args.train_fraction) {
        bail!("--train-fraction must be between 0 and 1");
    }
    let images = args.images.clone().unwrap_or_else(|| match input.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    });
    let mut report: ImportReport = match from {
        Source::Karpathy => import_karpathy(&input, &images)?,
        Source::Coco => import_coco(&input, &images)?,
        Source::Folders => import_class_folders(&input)?,
        Source::Kohya => import_kohya(&input)?,
        Source::Images => import_images(&input)?,
    };
    if let Some(l) = &args.labels {
        let map = read_labels(l)?;
        let n = report.apply_labels(&map);
        eprintln!(
            "{n} of {} images labelled from {}",
            report.items.len(),
            l.display()
        );
    }
    let mut problems: Vec<(String, String)> = report
        .problems
        .iter()
        .map(|p| (p.item.clone(), strata_caption::error::chain(&p.error)))
        .collect();

    let cfg = CaptionConfig {
        fallback: args.fallback,
        max_candidates: args.max_candidates,
    };
    let bar = ProgressBar::new(report.items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("captioning {bar:40} {pos}/{len} {elapsed_precise}")
            .expect("valid template"),
    );
    let mut parts = super::caption_parts::build(&args.parts, &k, matches!(from, Source::Images))?;
    let mut done: Vec<(PathBuf, MetadataRecord)> = Vec::new();
    let mut corrections = 0usize;
    for it in &report.items {
        let r = if parts.any() {
            caption_from_pixels(&k, it, &mut parts, args.seed, &cfg)
        } else {
            caption_item(
                &k,
                it,
                &mut LabelScene { knowledge: &k },
                &mut ExistingSentences,
                &mut LexiconTagger { knowledge: &k },
                &cfg,
            )
        };
        match r {
            Ok(c) => {
                corrections += c.provenance.corrections.len();
                done.push((it.image.clone(), to_record(it, &c)));
            }
            Err(e) => problems.push((it.file_name.clone(), strata_caption::error::chain(&e))),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if done.is_empty() {
        for (item, msg) in &problems {
            eprintln!("  {item}: {msg}");
        }
        bail!(
            "none of the {} images could be captioned (first: {}); nothing was written to {}",
            problems.len(),
            problems
                .first()
                .map(|(item, msg)| format!("{item}: {msg}"))
                .unwrap_or_default(),
            out.display()
        );
    }
    let mut records: Vec<MetadataRecord> = done.iter().map(|(_, r)| r.clone()).collect();
    let (train, test) = assign_splits(&mut records, args.seed, args.train_fraction);
    let items: Vec<(PathBuf, MetadataRecord)> =
        done.into_iter().map(|(p, _)| p).zip(records).collect();
    write_dataset(&out, &items, args.force)
        .with_context(|| format!("writing the dataset to {}", out.display()))?;

    let records: Vec<MetadataRecord> = items.into_iter().map(|(_, r)| r).collect();
    let stats = DatasetStats::compute(&k, &records, StatsField::Hierarchical);
    println!(
        "wrote {} ({} images: {train} train, {test} test; {corrections} corrections logged in provenance)",
        out.join(strata_caption::METADATA_FILE).display(),
        records.len()
    );
    println!("{}", stats.summary());
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} item(s) were left out:", problems.len());
    for (item, msg) in &problems {
        eprintln!("  {item}: {msg}");
    }
    Ok(ExitCode::from(2))
}
