//! `strata`: one subcommand per pipeline stage. This crate stays thin: it parses arguments,
//! shows progress and turns library errors into messages; the work lives in the stage crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod base_model;
mod commands;
mod demo;

/// Hierarchical captions and fine-grained scene generation for remote-sensing imagery.
///
/// Pipeline: prepare → caption → train → generate → eval (see the README).
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: boxing the big argument structs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Stage 1: raw rasters → RGB 8-bit tiles (band selection, stretch, Eq. 1 slicing /
    /// cropping / padding), georeferencing kept, manifest.jsonl written.
    Prepare(commands::prepare::Args),
    /// Stage 2: images → hierarchical captions {scene, relation, elements} with the SRKC
    /// golden rule and expert corrections; imports RSICD/UCM/Sydney, COCO, class folders, kohya.
    Caption(commands::caption::Args),
    /// Dataset utilities (statistics as in the paper's section 4.1).
    Dataset(commands::dataset::Args),
    /// Procedural aerial scenes with exact masks and hierarchical captions.
    Synth(commands::synth::Args),
    /// Stage 3: encode a hierarchical caption per segment (debug aid): token counts and the
    /// fusion weights w(t).
    Encode(commands::encode::Args),
    /// Stage 4: fine-tune (LoRA, DreamBooth, textual inversion, full) on a hierarchical-caption
    /// dataset; checkpoints and --resume.
    Train(commands::train::Args),
    /// Stage 5: generate scenes from hierarchical prompts (DDIM, CFG, img2img, LoRA).
    Generate(commands::generate::Args),
    /// Stage 6: metrics (FID/KID, relation fidelity, LPIPS, CLIPScore, GSHPS) and the report.
    Eval(commands::eval::Args),
    /// The whole experiment in miniature on the embedded default.
    Demo(commands::demo::Args),
    /// Models: create a random one of a preset size (`model init`), locate the embedded base.
    Model(commands::model::Args),
    /// The web page: generate from hierarchical prompts with live progress, and check and
    /// correct dataset captions by eye (expert correction), on 127.0.0.1:7860.
    Serve(commands::serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prepare(a) => commands::prepare::run(a),
        Command::Caption(a) => commands::caption::run(a),
        Command::Dataset(a) => commands::dataset::run(a),
        Command::Synth(a) => commands::synth::run(a),
        Command::Encode(a) => commands::encode::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Demo(a) => commands::demo::run(a),
        Command::Model(a) => commands::model::run(a),
        Command::Serve(a) => commands::serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
