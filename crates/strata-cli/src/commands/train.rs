//! `strata train`: fine-tune the SD-1.5-layout model on a hierarchical-caption dataset with
//! LoRA, DreamBooth, textual inversion or a full UNet fine-tune. Every option can also come
//! from a TOML file (`--config`); the command line wins. `--resume RUN_DIR` continues a run
//! from its latest checkpoint with the configuration it was started with.

use super::numbers;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use strata_models::fusion::FusionMode;
use strata_train::config::MixedPrecision;
use strata_train::optim::LrSchedule;
use strata_train::{Captions, FusionKind, Method, TrainConfig, TrainError};

/// Where a run's adapters go (`--lora-targets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoraTarget {
    /// `to_q`, `to_k`, `to_v`, `to_out.0` of every UNet attention (the paper's choice).
    Attention,
    /// The transformer blocks' `proj_in`/`proj_out`.
    Proj,
    /// The feed-forward layers of the transformer blocks.
    Ff,
}

impl LoraTarget {
    fn name(self) -> &'static str {
        match self {
            Self::Attention => "attention",
            Self::Proj => "proj",
            Self::Ff => "ff",
        }
    }
}

#[derive(clap::Args)]
#[command(
    after_help = "Values given on the command line win over --config, which wins over \
the defaults shown. A kohya dataset TOML given as --data sets --resolution and --batch-size \
unless they are given on the command line. kohya training configs work as --config \
(learning_rate, network_dim, ...; see docs/train.md).\n\
Examples:\n  strata train --model base --data ds --out runs/lora --max-steps 200\n  \
strata train --config kohya.toml --data dataset.toml --out runs/k"
)]
pub struct Args {
    /// TOML file with any of the options below (snake_case keys, e.g. `batch_size = 10`; kohya
    /// key names such as `learning_rate` and `network_dim` are accepted too).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Continue the run in this folder from its latest checkpoint, with the configuration it
    /// was started with.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// What to train [default: lora].
    #[arg(long, value_parser = super::from_str_enum::<Method>())]
    method: Option<Method>,
    /// Base model: a diffusers folder or an SD-1.5 .safetensors file (required).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Training data (required): a dataset folder (metadata.jsonl + images; only the train
    /// split is used) or a kohya dataset TOML (images with sidecar caption files).
    #[arg(long, value_name = "DIR|FILE.toml")]
    data: Option<PathBuf>,
    /// Run folder: config, log, checkpoints, output (required).
    #[arg(long, value_name = "RUN_DIR")]
    out: Option<PathBuf>,
    /// Tokenizer (BPE file or vocab.json/merges.txt folder) [default: the model's tokenizer/].
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Which caption conditions the model [default: hierarchical].
    #[arg(long, value_parser = super::from_str_enum::<Captions>())]
    captions: Option<Captions>,
    /// How the segment weights w(t) are computed (hierarchical captions) [default: fixed].
    #[arg(long, value_parser = super::from_str_enum::<FusionKind>())]
    fusion: Option<FusionKind>,
    /// How the fused segments reach the UNet [default: concat].
    #[arg(long, value_parser = super::from_str_enum::<FusionMode>())]
    fusion_mode: Option<FusionMode>,
    /// Fixed fusion schedule (also the learned one's starting point): where the scene,
    /// relation and elements curves peak, in s = t/(T−1) with 1 = start of denoising; three
    /// values in [0, 1] [default: 1,0.5,0].
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "S,S,S", value_parser = numbers::unit)]
    fusion_centers: Option<Vec<f64>>,
    /// Fixed fusion schedule: width σ of each curve in units of s; three values > 0
    /// [default: 0.3,0.3,0.3].
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "W,W,W", value_parser = numbers::positive)]
    fusion_widths: Option<Vec<f64>>,
    /// Fixed fusion schedule: added to every curve before normalising, ≥ 0 [default: 0.05].
    #[arg(long, value_name = "F", value_parser = numbers::non_negative)]
    fusion_floor: Option<f64>,
    /// Image side in pixels; images are resized and centre-cropped to it [default: a kohya
    /// dataset TOML's or --config's `resolution`, else the model's side: `vae/config.json`
    /// sample_size, else `unet/config.json` sample_size × the VAE's down-sampling, else 512;
    /// 64 for the embedded base model].
    #[arg(long, value_name = "PX", value_parser = numbers::int(8usize, numbers::MAX_SIDE))]
    resolution: Option<usize>,
    /// Images per micro-batch [default: 10].
    #[arg(long, value_name = "N", value_parser = numbers::int(1usize, 4_096))]
    batch_size: Option<usize>,
    /// Passes over the training images [default: 10].
    #[arg(long, value_name = "N", value_parser = numbers::int(1usize, numbers::MAX_COUNT))]
    epochs: Option<usize>,
    /// Stop after this many optimiser steps, overriding --epochs [default: unset].
    #[arg(long, value_name = "N", value_parser = numbers::int(1u64, 1_000_000_000))]
    max_steps: Option<u64>,
    /// Micro-batches summed per optimiser step [default: 1].
    #[arg(long, value_name = "N", value_parser = numbers::int(1usize, 4_096))]
    gradient_accumulation: Option<usize>,
    /// AdamW learning rate [default: 1e-4].
    #[arg(long, value_name = "LR", value_parser = numbers::positive)]
    lr: Option<f64>,
    /// Learning-rate schedule after the warm-up [default: cosine].
    #[arg(long, value_enum)]
    lr_schedule: Option<LrSchedule>,
    /// Linear learning-rate warm-up from 0 over this many steps [default: 0].
    #[arg(long, value_name = "N", value_parser = numbers::int(0u64, 1_000_000_000))]
    warmup_steps: Option<u64>,
    /// AdamW decoupled weight decay [default: 0.01].
    #[arg(long, value_name = "W", value_parser = numbers::non_negative)]
    weight_decay: Option<f64>,
    /// Probability that an image's caption (all segments) is emptied, for classifier-free
    /// guidance [default: 0.1].
    #[arg(long, value_name = "P", value_parser = numbers::unit)]
    caption_dropout: Option<f64>,
    /// min-SNR-γ loss weighting (5 is usual) [default: off].
    #[arg(long, value_name = "GAMMA", value_parser = numbers::positive)]
    min_snr_gamma: Option<f64>,
    /// Seed of the shuffling, noise, timesteps, dropout and new weights [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// LoRA rank r [default: 4].
    #[arg(long, value_name = "R", value_parser = numbers::int(1usize, 4_096))]
    lora_rank: Option<usize>,
    /// LoRA alpha; the update is scaled by alpha / rank [default: 4].
    #[arg(long, value_name = "ALPHA", value_parser = numbers::positive)]
    lora_alpha: Option<f64>,
    /// Which projections get adapters, comma-separated [default: attention].
    #[arg(long, value_enum, value_delimiter = ',')]
    lora_targets: Option<Vec<LoraTarget>>,
    /// LoRA: also train adapters on the text encoder's attention and MLP projections (saved
    /// as `lora_te_…` in the same file; text encodings are then computed at every step).
    #[arg(long)]
    lora_text_encoder: bool,
    /// Learning rate of the text-encoder adapters (same schedule as --lr) [default: --lr].
    #[arg(long, value_name = "LR", value_parser = numbers::positive)]
    text_encoder_lr: Option<f64>,
    /// Write a checkpoint every N optimiser steps, and always at the end [default: 500].
    #[arg(long, value_name = "N", value_parser = numbers::int(1u64, 1_000_000_000))]
    checkpoint_every: Option<u64>,
    /// Checkpoints kept, the oldest removed first [default: 2].
    #[arg(long, value_name = "N", value_parser = numbers::int(1usize, 1_000_000))]
    keep_checkpoints: Option<usize>,
    /// Write validation images every N steps, 0 = never [default: 0].
    #[arg(long, value_name = "N", value_parser = numbers::int(0u64, 1_000_000_000))]
    validation_every: Option<u64>,
    /// Validation prompt ("scene | relation | elements" for hierarchical runs); repeatable
    /// [default: none].
    #[arg(long = "validation-prompt", value_name = "PROMPT")]
    validation_prompts: Vec<String>,
    /// DreamBooth class images for prior preservation: a dataset folder (required with
    /// --method dreambooth).
    #[arg(long, value_name = "DIR")]
    class_data: Option<PathBuf>,
    /// DreamBooth: weight of the class-image (prior) loss [default: 1].
    #[arg(long, value_name = "W", value_parser = numbers::non_negative)]
    prior_loss_weight: Option<f64>,
    /// Textual inversion: the new token [default: <strata>].
    #[arg(long, value_name = "TOKEN")]
    placeholder_token: Option<String>,
    /// Textual inversion: embedding vectors of the new token [default: 1].
    #[arg(long, value_name = "N", value_parser = numbers::int(1usize, 75))]
    num_vectors: Option<usize>,
    /// Textual inversion: the existing word its vectors start from [default: aerial].
    #[arg(long, value_name = "WORD")]
    initializer_token: Option<String>,
    /// Frozen weights and activations in half precision, trainable weights and optimiser
    /// moments in f32 [default: no].
    #[arg(long, value_parser = super::from_str_enum::<MixedPrecision>())]
    mixed_precision: Option<MixedPrecision>,
    /// Where the run trains: cpu, cuda (the first GPU) or cuda:N [default: cpu]. A resumed
    /// run may continue on another device.
    #[arg(long, value_name = "DEVICE")]
    device: Option<strata_models::device::DeviceSpec>,
    /// Keep the training images' latents on disk, one file per image, and reuse them in later
    /// runs (kohya: cache_latents); entries are keyed by the VAE weights, the size and the
    /// image file, so a change makes new ones.
    #[arg(long)]
    cache_latents: bool,
    /// Folder of the latent cache [default: .strata-latent-cache/ in the dataset folder, or
    /// beside a kohya dataset TOML].
    #[arg(long, value_name = "DIR")]
    latent_cache_dir: Option<PathBuf>,
    /// Aspect-ratio bucketing (kohya: enable_bucket): each image trains at the bucket of area
    /// at most resolution² nearest its aspect ratio, resized to fill and centre-cropped; each
    /// batch holds one bucket.
    #[arg(long)]
    bucket: bool,
    /// Smallest bucket side in pixels [default: resolution / 2].
    #[arg(long, value_name = "PX", value_parser = numbers::int(8usize, numbers::MAX_SIDE))]
    min_bucket_reso: Option<usize>,
    /// Largest bucket side in pixels [default: resolution × 2].
    #[arg(long, value_name = "PX", value_parser = numbers::int(8usize, numbers::MAX_SIDE))]
    max_bucket_reso: Option<usize>,
    /// Bucket sides are multiples of this [default: 64 × resolution / 512, rounded up to a
    /// multiple of the model's down-sampling].
    #[arg(long, value_name = "PX", value_parser = numbers::int(1usize, numbers::MAX_SIDE))]
    bucket_reso_steps: Option<usize>,
    /// Start even when the memory estimate exceeds the available memory (the estimate is
    /// still printed).
    #[arg(long)]
    force: bool,
    /// No progress bar or status lines.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
}

fn build_config(a: &Args) -> anyhow::Result<TrainConfig> {
    let mut config_resolution = false;
    let mut c = match &a.config {
        Some(p) => {
            let s =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            config_resolution = strata_train::config::toml_sets(&s, "resolution");
            TrainConfig::from_toml_str(&s, p)?
        }
        None => TrainConfig::default(),
    };
    macro_rules! set {
        ($f:ident) => {
            if let Some(v) = &a.$f {
                c.$f = v.clone().into();
            }
        };
    }
    set!(method);
    set!(captions);
    set!(fusion);
    set!(fusion_mode);
    for (flag, given, field) in [
        ("--fusion-centers", &a.fusion_centers, &mut c.fusion_centers),
        ("--fusion-widths", &a.fusion_widths, &mut c.fusion_widths),
    ] {
        if let Some(v) = given {
            *field = <[f64; 3]>::try_from(v.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "{flag}: give three comma-separated values (scene,relation,elements), got {}",
                    v.len()
                )
            })?;
        }
    }
    set!(fusion_floor);
    set!(mixed_precision);
    set!(device);
    set!(lr_schedule);
    set!(model);
    set!(data);
    set!(out);
    if a.tokenizer.is_some() {
        c.tokenizer = a.tokenizer.clone();
    }
    // Resolution: the command line, else a kohya dataset TOML, else --config, else the
    // model's own side (as `strata generate` takes it).
    if !config_resolution && !c.model.as_os_str().is_empty() {
        c.resolution = super::model_side(&c.model);
    }
    // A kohya dataset TOML carries its own resolution and batch size (in kohya they win over
    // the training config); the command line still wins over both.
    if strata_train::data::kohya::is_dataset_toml(&c.data) {
        let k = strata_train::data::kohya::read_dataset_config(&c.data)?;
        if let Some(r) = k.resolution {
            c.resolution = r;
        }
        if let Some(b) = k.batch_size {
            c.batch_size = b;
        }
    }
    set!(resolution);
    set!(batch_size);
    set!(epochs);
    if a.max_steps.is_some() {
        c.max_steps = a.max_steps;
    }
    set!(gradient_accumulation);
    set!(lr);
    set!(warmup_steps);
    set!(weight_decay);
    set!(caption_dropout);
    if a.min_snr_gamma.is_some() {
        c.min_snr_gamma = a.min_snr_gamma;
    }
    set!(seed);
    set!(lora_rank);
    set!(lora_alpha);
    if let Some(t) = &a.lora_targets {
        c.lora_targets = t.iter().map(|t| t.name().to_string()).collect();
    }
    if a.lora_text_encoder {
        c.lora_text_encoder = true;
    }
    if a.text_encoder_lr.is_some() {
        c.text_encoder_lr = a.text_encoder_lr;
    }
    set!(checkpoint_every);
    set!(keep_checkpoints);
    set!(validation_every);
    if !a.validation_prompts.is_empty() {
        c.validation_prompts = a.validation_prompts.clone();
    }
    if a.class_data.is_some() {
        c.class_data = a.class_data.clone();
    }
    set!(prior_loss_weight);
    set!(placeholder_token);
    set!(num_vectors);
    set!(initializer_token);
    if a.cache_latents {
        c.cache_latents = true;
    }
    if a.latent_cache_dir.is_some() {
        c.latent_cache_dir = a.latent_cache_dir.clone();
    }
    if a.bucket {
        c.bucket = true;
    }
    for (v, f) in [
        (a.min_bucket_reso, &mut c.min_bucket_reso),
        (a.max_bucket_reso, &mut c.max_bucket_reso),
        (a.bucket_reso_steps, &mut c.bucket_reso_steps),
    ] {
        if v.is_some() {
            *f = v;
        }
    }
    Ok(c)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.image_limit.apply();
    let (cfg, resume) = match &args.resume {
        Some(run) => {
            let mut c = strata_train::run::read_run_config(run)?;
            // the device is where the run goes on, not part of what it trains
            if let Some(d) = args.device {
                c.device = d;
            }
            (c, true)
        }
        None => (build_config(&args)?, false),
    };
    // the estimate comes before the model, the images or the run folder are touched
    cfg.validate()?;
    let mem = strata_train::memory::check(&cfg)?;
    if !mem.fits() && !args.force {
        anyhow::bail!("{}", strata_train::memory::refusal(&cfg, &mem));
    }
    if !args.quiet {
        let method = serde_json::to_value(cfg.method)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        eprintln!(
            "strata train: {method} at {} px, batch {}; {}{}",
            cfg.resolution,
            cfg.batch_size,
            mem.summary(),
            if mem.fits() {
                ""
            } else {
                " (--force: starting anyway)"
            }
        );
    }
    let show = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut first_step: Option<u64> = None;
    let mut on_status = |s: &str| {
        if show {
            bar.set_message(s.to_string());
        } else if !args.quiet {
            eprintln!("strata train: {s}");
        }
    };
    let mut on_step = |r: &strata_train::StepReport| {
        let s0 = *first_step.get_or_insert(r.step - 1);
        bar.set_length(r.total);
        bar.set_position(r.step);
        let rate = (r.step - s0) as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.2} it/s",
            r.loss, r.lr, rate
        ));
    };
    let out = cfg.out.clone();
    let res = strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume,
            on_status: &mut on_status,
            on_step: &mut on_step,
        },
    );
    bar.finish_and_clear();
    match res {
        Ok(s) => {
            println!(
                "trained {} steps, final loss {:.5}; output {}",
                s.steps,
                s.final_loss,
                s.output.display()
            );
            if !s.skipped_images.is_empty() {
                for (f, e) in &s.skipped_images {
                    eprintln!("skipped {f}: {e}");
                }
                eprintln!(
                    "{} training image(s) could not be read (listed above)",
                    s.skipped_images.len()
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ TrainError::NonFinite { .. }) => {
            eprintln!("error: {e}");
            eprintln!("run folder: {}", out.display());
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}
