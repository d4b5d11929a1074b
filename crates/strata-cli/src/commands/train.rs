//! `strata train`: fine-tune the SD-1.5-layout model on a hierarchical-caption dataset with
//! LoRA, DreamBooth, textual inversion or a full UNet fine-tune. Every option can also come
//! from a TOML file (`--config`); the command line wins. `--resume RUN_DIR` continues a run
//! from its latest checkpoint with the configuration it was started with.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use strata_train::{TrainConfig, TrainError};

#[derive(clap::Args)]
pub struct Args {
    /// TOML file with any of the options below (snake_case keys, e.g. `batch_size = 10`).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// lora | dreambooth | textual-inversion | full | vae (trains the VAE: L1 + small KL)
    #[arg(long)]
    method: Option<String>,
    /// Base model: a diffusers folder or an SD-1.5 .safetensors file.
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Dataset folder (metadata.jsonl + images); only the train split is used.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Run folder: config, log, checkpoints, output.
    #[arg(long, value_name = "RUN_DIR")]
    out: Option<PathBuf>,
    /// Tokenizer (BPE file or vocab.json/merges.txt folder) when the model has none.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// hierarchical | flat
    #[arg(long)]
    captions: Option<String>,
    /// fixed | learned (hierarchical captions)
    #[arg(long)]
    fusion: Option<String>,
    /// concat | decoupled (how fused segments reach the UNet)
    #[arg(long)]
    fusion_mode: Option<String>,
    #[arg(long)]
    resolution: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long)]
    gradient_accumulation: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// cosine | constant
    #[arg(long)]
    lr_schedule: Option<String>,
    #[arg(long)]
    warmup_steps: Option<u64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    caption_dropout: Option<f64>,
    #[arg(long)]
    min_snr_gamma: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    lora_rank: Option<usize>,
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Comma-separated: attention, proj, ff.
    #[arg(long, value_delimiter = ',')]
    lora_targets: Option<Vec<String>>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    #[arg(long)]
    keep_checkpoints: Option<usize>,
    #[arg(long)]
    validation_every: Option<u64>,
    /// Validation prompt ("scene | relation | elements" for hierarchical runs); repeatable.
    #[arg(long = "validation-prompt")]
    validation_prompts: Vec<String>,
    /// DreamBooth class images (a dataset folder).
    #[arg(long)]
    class_data: Option<PathBuf>,
    #[arg(long)]
    prior_loss_weight: Option<f64>,
    /// Textual inversion token, e.g. "<strata>".
    #[arg(long)]
    placeholder_token: Option<String>,
    #[arg(long)]
    num_vectors: Option<usize>,
    #[arg(long)]
    initializer_token: Option<String>,
    /// no | bf16 | f16: frozen weights and activations in half precision, trainable weights
    /// and optimiser moments in f32; f16 adds dynamic loss scaling.
    #[arg(long, value_name = "no|bf16|f16")]
    mixed_precision: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse<T: std::str::FromStr<Err = String>>(flag: &str, v: &str) -> anyhow::Result<T> {
    v.parse::<T>().map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

fn build_config(a: &Args) -> anyhow::Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => {
            let s =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
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
    if let Some(v) = &a.method {
        c.method = parse("method", v)?;
    }
    if let Some(v) = &a.captions {
        c.captions = parse("captions", v)?;
    }
    if let Some(v) = &a.fusion {
        c.fusion = parse("fusion", v)?;
    }
    if let Some(v) = &a.fusion_mode {
        c.fusion_mode = parse("fusion-mode", v)?;
    }
    if let Some(v) = &a.mixed_precision {
        c.mixed_precision = parse("mixed-precision", v)?;
    }
    if let Some(v) = &a.lr_schedule {
        c.lr_schedule = match v.as_str() {
            "cosine" => strata_train::optim::LrSchedule::Cosine,
            "constant" => strata_train::optim::LrSchedule::Constant,
            _ => bail!("--lr-schedule {v:?}: use cosine or constant"),
        };
    }
    set!(model);
    set!(data);
    set!(out);
    if a.tokenizer.is_some() {
        c.tokenizer = a.tokenizer.clone();
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
    set!(lora_targets);
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
    Ok(c)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (cfg, resume) = match &args.resume {
        Some(run) => (strata_train::run::read_run_config(run)?, true),
        None => (build_config(&args)?, false),
    };
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
