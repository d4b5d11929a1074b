//! `strata model`: create a randomly initialised model of a named size (the starting point of
//! the embedded base model), or show where the embedded base model lives.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Write a randomly initialised diffusers folder (unet/, vae/, text_encoder/, tokenizer/)
    /// of a preset, to be trained with `strata train --method vae` then `--method full`.
    Init(InitArgs),
    /// Copy a diffusers folder (e.g. a run's `model/`) with every weight file converted to
    /// half precision (`*.fp16.safetensors`): how `models/strata-base/` is made.
    Export(ExportArgs),
    /// Materialise the embedded base model (once) and print its folder.
    Base,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The diffusers folder to export.
    model: PathBuf,
    /// New output folder.
    #[arg(short = 'o', long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct InitArgs {
    /// Model size: base64 (the embedded base model's shape) or tiny (tests).
    #[arg(long, default_value = "base64", value_parser = ["base64", "tiny"])]
    preset: String,
    /// New output folder.
    #[arg(short = 'o', long, value_name = "DIR")]
    out: PathBuf,
    /// CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, or a folder with vocab.json +
    /// merges.txt) [default: the embedded base model's tokenizer].
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Seed of the random weights (same seed → same files).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Init(a) => {
            let preset = strata_models::init::preset(&a.preset)?;
            let tok_path = match a.tokenizer {
                Some(p) => p,
                None => crate::base_model::ensure()?.join("tokenizer"),
            };
            let tok = strata_models::tokenizer::ClipTokenizer::load(&tok_path)
                .with_context(|| format!("loading the tokenizer {}", tok_path.display()))?;
            let out = strata_models::init::write_model(&preset, &tok, &a.out, a.seed)?;
            println!(
                "wrote a random {} model to {} ({})",
                preset.name,
                out.display(),
                preset.summary
            );
            Ok(ExitCode::SUCCESS)
        }
        Sub::Export(a) => {
            let bytes = strata_models::init::export_half(&a.model, &a.out)?;
            println!(
                "wrote {} ({:.1} MB, weights in f16)",
                a.out.display(),
                bytes as f64 / 1e6
            );
            Ok(ExitCode::SUCCESS)
        }
        Sub::Base => {
            let dir = crate::base_model::ensure()?;
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
