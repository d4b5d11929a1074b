//! `strata demo`: the paper's experiment in miniature on two CPU cores — the study's
//! smallest preset. Synthetic scenes of all 11 classes, captioned from their pixels by the
//! caption stage; two LoRA fine-tunes of the base model (flat against hierarchical captions,
//! same images, order, steps and seed); the test captions generated with each from the same
//! noise; `strata eval`; paired intervals and verdicts; `report.html`. It is
//! `strata study --preset demo --minutes M`, with the seed and run folder of its own.

use std::path::PathBuf;
use std::process::ExitCode;

use strata_models::device::DeviceSpec;

use super::numbers::{self, End};
use super::study::{plan_of, run_plan, MetricWeights};
use crate::study::{Arm, CaptionSource, StudyConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Run folder (created; rerunning the same command into it resumes).
    #[arg(long, value_name = "DIR", default_value = "strata-demo")]
    out: PathBuf,
    /// Wall-time budget in minutes on two idle cores: scales the scenes per class, the
    /// sampling steps and the LoRA steps.
    #[arg(long, value_name = "M", default_value_t = 10.0, value_parser = numbers::float(End::Open(0.0), End::Closed(100_000.0)))]
    minutes: f64,
    /// `default` (sized to --minutes), or `ci`: the study's `ci` sizes with the demo's two
    /// arms, one seed and captions from the pixels (the test suite's version; its numbers
    /// mean nothing).
    #[arg(long, default_value = "default", value_parser = ["default", "ci"])]
    preset: String,
    /// Base model (a diffusers folder in the SD layout) [default: the embedded base model].
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Training and generation side in pixels [default: the model's side, as `strata train`
    /// and `strata generate` take it: `vae/config.json` sample_size, else `unet/config.json`
    /// sample_size × the VAE's down-sampling, else 512; 64 for the embedded base model].
    #[arg(long, value_name = "PX", value_parser = numbers::int(8usize, numbers::MAX_SIDE))]
    resolution: Option<usize>,
    /// Seed of the scenes, of training and of sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    weights: MetricWeights,
    /// Where training, generation and the metric networks run: cpu, cuda or cuda:N (cuda
    /// needs a build with the `cuda` feature). Not part of the run's plan: a run started on
    /// one device resumes on another.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceSpec,
}

/// The demo's study settings.
fn config(a: &Args) -> anyhow::Result<StudyConfig> {
    let mut c = if a.preset == "ci" {
        let mut c = StudyConfig::preset("ci")?;
        c.preset = "demo-ci".into();
        c.arms = vec![Arm::Flat, Arm::HierarchicalConcat];
        c.data.train_per_class = 2;
        c.data.captions = CaptionSource::Pixels;
        // two checkpoints, so an interrupted run has one to resume from
        c.train.steps = 4;
        c.train.checkpoint_every = 2;
        // batches of four, so a lost image leaves other batches to keep
        c.generate.batch = 4;
        c
    } else {
        StudyConfig::demo(a.minutes, a.seed)?
    };
    c.seeds = vec![a.seed];
    c.data.seed = a.seed;
    c.resolution = a.resolution;
    Ok(c)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = plan_of(config(&args)?, None, args.model.as_ref())?;
    run_plan(&plan, &args.out, &args.weights, args.device)
}
