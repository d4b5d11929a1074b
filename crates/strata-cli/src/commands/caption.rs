//! `strata caption`: import a dataset (Karpathy / COCO caption JSON, class folders, kohya
//! captions) and turn it into a hierarchical dataset (images + `metadata.jsonl`) with the
//! SRKC golden rule and the expert corrections, every step recorded in provenance.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use strata_caption::import::{
    import_class_folders, import_coco, import_karpathy, import_kohya, read_labels, ImportReport,
};
use strata_caption::knowledge::EMBEDDED_TOML;
use strata_caption::pipeline::{
    caption_item, to_record, CaptionConfig, ExistingSentences, LabelScene, LexiconTagger,
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
}

#[derive(clap::Args)]
pub struct Args {
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
    #[arg(long, value_name = "N")]
    max_candidates: Option<usize>,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of each scene that goes to train.
    #[arg(long, default_value_t = 0.8)]
    train_fraction: f64,
    /// Print the embedded knowledge file (a starting point for --knowledge) and exit.
    #[arg(long)]
    print_knowledge: bool,
    /// Print what the SRKC finds in SENTENCE (relations, vertical relations, elements) as
    /// JSON and exit.
    #[arg(long, value_name = "SENTENCE")]
    explain: Option<String>,
}

fn load_knowledge(path: &Option<PathBuf>) -> anyhow::Result<Knowledge> {
    Ok(match path {
        Some(p) => Knowledge::from_file(p)?,
        None => Knowledge::embedded(),
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    let mut done: Vec<(PathBuf, MetadataRecord)> = Vec::new();
    let mut corrections = 0usize;
    for it in &report.items {
        let r = caption_item(
            &k,
            it,
            &mut LabelScene { knowledge: &k },
            &mut ExistingSentences,
            &mut LexiconTagger { knowledge: &k },
            &cfg,
        );
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
            "no image could be captioned; nothing was written to {}",
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
