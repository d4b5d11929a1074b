//! Trains the embedded captioner's network on procedural scenes and writes the weights
//! (safetensors with the recipe, seeds and validation figures as metadata). Run through
//! `scripts/train-captioner.sh`.
//!
//! Options (all optional): `--out FILE`, `--steps N`, `--batch N`, `--lr X`,
//! `--train-scenes N`, `--validation-scenes N`, `--widths a,b,c,d`, `--seed N`,
//! `--dice X`, `--checkpoint-every N`.

use std::path::PathBuf;

use strata_captioner::embedded::net::Widths;
use strata_captioner::embedded::train::{train, TrainOptions};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut opts = TrainOptions::default();
    let mut out = PathBuf::from("crates/strata-captioner/weights/embedded-captioner.safetensors");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        let bad = |what: &str| format!("{flag} {value}: expected {what}");
        match flag.as_str() {
            "--out" => out = PathBuf::from(value),
            "--steps" => opts.steps = value.parse().map_err(|_| bad("a step count"))?,
            "--batch" => opts.batch = value.parse().map_err(|_| bad("a batch size"))?,
            "--lr" => opts.lr = value.parse().map_err(|_| bad("a learning rate"))?,
            "--train-scenes" => opts.train_scenes = value.parse().map_err(|_| bad("a count"))?,
            "--validation-scenes" => {
                opts.validation_scenes = value.parse().map_err(|_| bad("a count"))?
            }
            "--widths" => {
                opts.widths = Widths::parse(value).ok_or_else(|| bad("four multiples of 4"))?
            }
            "--seed" => opts.seed = value.parse().map_err(|_| bad("an integer"))?,
            "--dice" => opts.dice_weight = value.parse().map_err(|_| bad("a weight"))?,
            "--checkpoint-every" => {
                opts.checkpoint_every = value.parse().map_err(|_| bad("a step count"))?
            }
            _ => {
                return Err(format!(
                    "unknown option {flag}; see the header of this example"
                ))
            }
        }
    }
    let fig = train(&opts, &out, &mut |line| eprintln!("{line}")).map_err(|e| e.to_string())?;
    println!(
        "{}: pixel accuracy {:.4}, mIoU {:.4}, scene accuracy {:.4} on {} validation scenes",
        out.display(),
        fig.pixel_accuracy,
        fig.mean_iou,
        fig.scene_accuracy,
        fig.scenes
    );
    Ok(())
}
