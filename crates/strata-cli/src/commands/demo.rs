//! `strata demo`: the paper's whole experiment in miniature on two CPU cores —
//! synthetic scenes of all 11 classes, the caption stage, two LoRA fine-tunes of the base
//! model (flat vs hierarchical captions, same seed and steps), generation of the test
//! captions, `strata eval`, and `report.html`. Every stage writes its outputs atomically and
//! a done-marker; rerunning the same command resumes (training from its checkpoints).

use super::numbers::{self, End};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strata_eval::seg::TrainOptions;
use strata_eval::{evaluate, EvalOptions, GeneratedSet, Metric, WeightPaths};
use strata_models::clip::Device;
use strata_models::device::DeviceSpec;
use strata_train::{Captions, Method, TrainConfig};

use crate::demo::{self, stage_bar, Plan, Stages, KINDS};

#[derive(clap::Args)]
pub struct Args {
    /// Run folder (created; rerunning the same command into it resumes).
    #[arg(long, value_name = "DIR", default_value = "strata-demo")]
    out: PathBuf,
    /// Wall-time budget in minutes on a 2-core machine: scales training steps, segmenter
    /// steps, scenes per class and sampling steps (default preset only).
    #[arg(long, value_name = "M", default_value_t = 10.0, value_parser = numbers::float(End::Open(0.0), End::Closed(100_000.0)))]
    minutes: f64,
    /// `default` (scaled to --minutes), or `ci`: a few steps of everything (the test
    /// suite's version).
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
    /// Seed of the data, the split, training and sampling.
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

/// The metric networks' weights of `demo` and `study`, passed to `strata eval`. Without a
/// metric's weights its row says why it was not computed.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetricWeights {
    /// pytorch-fid's Inception weights for standard FID/KID (as `strata eval`). Adding or
    /// changing weights on a finished run redoes only the evaluation and the report.
    #[arg(long, value_name = "FILE")]
    pub inception_weights: Option<PathBuf>,
    /// LPIPS backbone (torchvision AlexNet or VGG16 weights), as `strata eval`.
    #[arg(long, value_name = "FILE")]
    pub lpips_backbone: Option<PathBuf>,
    /// CLIP (transformers folder or model.safetensors) for CLIPScore, as `strata eval`.
    #[arg(long, value_name = "DIR|FILE")]
    pub clip_weights: Option<PathBuf>,
    /// VGG16 scene classifier for GSHPS (without it: strata's labelled stand-in classifier).
    #[arg(long, value_name = "FILE")]
    pub vgg16_weights: Option<PathBuf>,
    /// PieAPP weights, as `strata eval`.
    #[arg(long, value_name = "FILE")]
    pub pieapp_weights: Option<PathBuf>,
}

impl MetricWeights {
    /// The given files as `strata eval`'s weight paths (the GSHPS stand-in's settings are
    /// the caller's).
    pub fn paths(&self) -> WeightPaths {
        WeightPaths {
            inception: self.inception_weights.clone(),
            lpips_backbone: self.lpips_backbone.clone(),
            clip: self.clip_weights.clone(),
            vgg16_classifier: self.vgg16_weights.clone(),
            pieapp: self.pieapp_weights.clone(),
            ..WeightPaths::default()
        }
    }
}

fn weight_paths(a: &Args, run: &Path, plan: &Plan) -> WeightPaths {
    WeightPaths {
        // without VGG16 weights GSHPS uses strata's stand-in classifier (labelled as such)
        gshps_classifier: Some(run.join("eval/gshps_standin.safetensors")),
        gshps_train: strata_eval::gshps::CnnTrainOptions {
            steps: plan.gshps_steps,
            seed: plan.seed,
            ..Default::default()
        },
        ..a.weights.paths()
    }
}

/// The metric weight files of a run, as its evaluation marker records them (a change
/// redoes the evaluation).
pub(crate) fn weights_json(w: &WeightPaths) -> Value {
    let p = |x: &Option<PathBuf>| json!(x.as_ref().map(|p| p.display().to_string()));
    json!({
        "inception": p(&w.inception),
        "lpips_backbone": p(&w.lpips_backbone),
        "clip": p(&w.clip),
        "vgg16_classifier": p(&w.vgg16_classifier),
        "pieapp": p(&w.pieapp),
    })
}

const STAGES: [(&str, &str); 8] = [
    ("1-synth", "synthetic scenes (11 classes)"),
    ("2-caption", "caption stage"),
    ("3-train-flat", "LoRA, flat captions"),
    ("4-train-hierarchical", "LoRA, hierarchical captions"),
    ("5-generate-flat", "generate test captions, flat LoRA"),
    (
        "6-generate-hierarchical",
        "generate test captions, hierarchical LoRA",
    ),
    ("7-eval", "strata eval"),
    ("8-report", "report.html"),
];

fn train(
    run: &Path,
    plan: &Plan,
    kind: &str,
    device: DeviceSpec,
    k: usize,
    n: usize,
) -> anyhow::Result<Value> {
    let cfg = TrainConfig {
        method: Method::Lora,
        model: plan.model.clone(),
        data: run.join("dataset"),
        out: run.join("runs").join(kind),
        captions: kind.parse::<Captions>().map_err(anyhow::Error::msg)?,
        resolution: plan.resolution,
        batch_size: plan.train_batch,
        max_steps: Some(plan.train_steps),
        lr: plan.lr,
        seed: plan.seed,
        lora_rank: plan.lora_rank,
        lora_alpha: plan.lora_alpha,
        lora_targets: plan.lora_targets.clone(),
        checkpoint_every: plan.checkpoint_every,
        keep_checkpoints: 2,
        device,
        ..TrainConfig::default()
    };
    let mut v = demo::train::run(cfg, &format!("train {kind}"), k, n)?;
    v["captions"] = json!(kind);
    Ok(v)
}

fn eval(
    run: &Path,
    plan: &Plan,
    weights: &WeightPaths,
    device: &Device,
    k: usize,
    n: usize,
) -> anyhow::Result<Value> {
    let opts = EvalOptions {
        real: run.join("real"),
        generated: KINDS
            .iter()
            .map(|kind| GeneratedSet {
                label: format!("lora/{kind}"),
                dir: run.join("gen").join(kind),
            })
            .collect(),
        captions: None,
        metrics: Metric::ALL.to_vec(),
        out: run.join("eval"),
        // the embedded captioner's network (a plan from an older run with segmenter steps
        // still trains its own)
        segmenter: (plan.seg_steps > 0).then(|| run.join("eval/segmenter.safetensors")),
        segmenter_net: if plan.seg_steps > 0 {
            None
        } else {
            Some(std::sync::Arc::new(
                strata_captioner::embedded::EmbeddedSegmenter::load_default()
                    .context("loading the embedded captioner's network as the segmenter")?,
            ))
        },
        train: TrainOptions {
            steps: plan.seg_steps,
            train_scenes: plan.seg_train_scenes,
            held_out_scenes: plan.seg_held_out,
            seed: plan.seed,
            ..TrainOptions::default()
        },
        kid_subsets: plan.kid_subsets,
        kid_subset_size: 1000,
        seed: plan.seed,
        weights: weights.clone(),
        grid_scenes: plan.test_images(),
        device: device.clone(),
    };
    std::fs::create_dir_all(&opts.out)?;
    let bar = stage_bar(
        k,
        n,
        "strata eval",
        plan.seg_steps as u64,
        "segmenter steps",
    );
    let report = evaluate(&opts, &mut |m| {
        if let Some(rest) = m.strip_prefix("segmenter step ") {
            if let Some(s) = rest.split('/').next().and_then(|x| x.parse::<u64>().ok()) {
                bar.set_position(s);
            }
        }
        bar.set_message(m.to_string());
    })?;
    let table = strata_eval::report::write_outputs(&report, &opts)?;
    bar.finish_and_clear();
    if !report.failed.is_empty() {
        let (f, e) = &report.failed[0];
        bail!(
            "strata eval skipped {} item(s), first: {f}: {e}",
            report.failed.len()
        );
    }
    Ok(json!({
        "real_images": report.real_images,
        "segmenter_steps": plan.seg_steps,
        "segmenter": report.segmenter,
        "weights": weights_json(weights),
        "table": table,
    }))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dev = args.device.open()?;
    let (model, sha) = demo::base_model(args.model.as_deref(), "--model")?;
    let resolution = args.resolution.unwrap_or_else(|| super::model_side(&model));
    let plan = Plan::new(
        &args.preset,
        args.minutes,
        args.seed,
        model,
        sha,
        resolution,
    )?;
    let run = args.out.clone();
    std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
    // one demo per folder: a second one aimed here stops before touching a stage
    let _lock = strata_io::lock::FolderLock::acquire(&run)?;
    let resumed = demo::load_or_write_plan(&run, "plan.json", &plan, "demo")?;
    eprintln!(
        "strata demo ({} preset{}): {} synthetic scenes (11 classes, {} test) at {} px; LoRA {} steps x 2 (flat, hierarchical); {} test images x 2 at {} DDIM steps; segmenter: {}. Estimated {:.1} min on an idle 2-core machine.{}",
        plan.preset,
        if plan.preset == "default" { format!(", {} min budget", plan.minutes) } else { String::new() },
        plan.scenes(),
        plan.test_images(),
        plan.resolution,
        plan.train_steps,
        plan.test_images(),
        plan.gen_steps,
        if plan.seg_steps > 0 {
            format!("{} steps", plan.seg_steps)
        } else {
            "the embedded captioner's network".into()
        },
        plan.estimate_seconds() / 60.0,
        if resumed { format!(" Resuming the run in {}.", run.display()) } else { String::new() }
    );
    let stages = Stages::new(&run);
    let n = STAGES.len();
    let weights = weight_paths(&args, &run, &plan);
    let mut markers: Vec<(String, String, Value)> = Vec::new();
    let mut redo_rest = false;
    for (i, (name, label)) in STAGES.iter().enumerate() {
        let k = i + 1;
        let mut done = if redo_rest { None } else { stages.done(name)? };
        if *name == "7-eval" {
            if let Some(v) = &done {
                if v["weights"] != weights_json(&weights) {
                    eprintln!("[{k}/{n}] {label}: metric weights changed, evaluating again");
                    done = None;
                    redo_rest = true;
                }
            }
        }
        if let Some(v) = done {
            eprintln!("[{k}/{n}] {label}: done earlier, skipped");
            markers.push((name.to_string(), label.to_string(), v));
            continue;
        }
        let v = demo::run_stage(&stages, name, || match *name {
            "1-synth" => demo::caption::synth(&run, &plan, k, n),
            "2-caption" => demo::caption::caption(&run, &plan, k, n),
            "3-train-flat" => train(&run, &plan, "flat", args.device, k, n),
            "4-train-hierarchical" => train(&run, &plan, "hierarchical", args.device, k, n),
            "5-generate-flat" => demo::generate::generate(&run, &plan, "flat", &dev, k, n),
            "6-generate-hierarchical" => {
                demo::generate::generate(&run, &plan, "hierarchical", &dev, k, n)
            }
            "7-eval" => eval(&run, &plan, &weights, &dev, k, n),
            "8-report" => demo::report::write(&run, &plan, &markers),
            _ => unreachable!("stage list"),
        })?;
        let secs = v["seconds"].as_f64().unwrap_or_default();
        eprintln!(
            "[{k}/{n}] {label}: done in {secs:.1} s{}",
            v["cpu_seconds"]
                .as_f64()
                .map(|c| format!(" ({c:.1} s CPU)"))
                .unwrap_or_default()
        );
        markers.push((name.to_string(), label.to_string(), v));
    }
    // the summary
    let table = std::fs::read_to_string(run.join("eval/table.txt")).unwrap_or_default();
    let rep = &markers.last().expect("report stage").2;
    println!("{}", table.trim_end());
    println!();
    println!("Verdict (flat vs hierarchical captions, measured in this run):");
    for l in rep["verdict"].as_array().into_iter().flatten() {
        println!("  {}", l.as_str().unwrap_or(""));
    }
    let total: f64 = markers
        .iter()
        .filter_map(|(_, _, v)| v["seconds"].as_f64())
        .sum();
    println!();
    println!(
        "Stage wall time (summed over invocations): {:.1} min",
        total / 60.0
    );
    println!("Report: {}", run.join("report.html").display());
    Ok(ExitCode::SUCCESS)
}
