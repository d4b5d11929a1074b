//! `strata study`: arms × training seeds × one test set, paired bootstrap intervals and
//! verdicts (see `crate::study`). Every stage writes its outputs atomically and a
//! done-marker; rerunning the same command resumes (training from its checkpoints,
//! generation from the images already written).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strata_eval::{evaluate, EvalOptions, GeneratedSet, Metric, WeightPaths};
use strata_models::clip::Device;
use strata_models::device::DeviceSpec;
use strata_train::{Method, TrainConfig};

use super::demo::MetricWeights;
use crate::demo::{self, stage_bar, Stages};
use crate::study::{self, Arm, Plan, StudyConfig, PRESETS};

#[derive(clap::Args)]
pub struct Args {
    /// Study settings (TOML): any key of the preset (`arms`, `seeds`, `[data]`, `[train]`,
    /// `[generate]`, `[stats]`, `model`, `resolution`) overrides it; `preset = "…"` picks the
    /// preset the file starts from. See docs/study.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The preset to start from when the file names none: `ci` (a few steps of everything; the test suite's),
    /// `small` (flat vs hierarchical, 3 seeds, 220 test scenes) or `full` (all seven arms).
    #[arg(long, default_value = "small", value_parser = PRESETS)]
    preset: String,
    /// Run folder (created; rerunning the same command into it resumes).
    #[arg(long, value_name = "DIR", default_value = "strata-study")]
    out: PathBuf,
    /// A JSON list of scene + elements + relations combinations: the test scenes are drawn
    /// for them and no training scene holds one, so the study measures new compositions
    /// (overrides `data.test_compositions` of the file).
    #[arg(long, value_name = "FILE")]
    test_compositions: Option<PathBuf>,
    /// Base model (a diffusers folder in the SD layout) [default: the file's `model`, else
    /// the embedded base model].
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    #[command(flatten)]
    weights: MetricWeights,
    /// Where training, generation and the metric networks run: cpu, cuda or cuda:N. Not part
    /// of the plan: a study started on one device resumes on another.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceSpec,
}

fn resolve_plan(args: &Args) -> anyhow::Result<Plan> {
    let mut config = match &args.config {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            StudyConfig::from_toml(&text, f, &args.preset)?
        }
        None => StudyConfig::preset(&args.preset)?,
    };
    if let Some(c) = &args.test_compositions {
        config.data.test_compositions = Some(c.clone());
    }
    if let Some(m) = &args.model {
        config.model = Some(m.clone());
    }
    config.validate()?;
    let compositions = match &config.data.test_compositions {
        Some(f) => study::data::read_compositions(f)?,
        None => vec![],
    };
    let model = match &config.model {
        Some(m) => m.clone(),
        None => crate::base_model::ensure()
            .context("no model given and the embedded base model is unavailable")?,
    };
    if !model.join("unet").is_dir() {
        bail!(
            "model {}: not a diffusers folder (unet/, vae/, text_encoder/, tokenizer/)",
            model.display()
        );
    }
    let model =
        std::fs::canonicalize(&model).with_context(|| format!("resolving {}", model.display()))?;
    let unet_file = strata_train::trainer::base_weights_file(&model).with_context(|| {
        format!(
            "{}: no unet/diffusion_pytorch_model.safetensors",
            model.display()
        )
    })?;
    let sha = strata_train::trainer::sha256_file(&unet_file)
        .with_context(|| format!("hashing {}", unet_file.display()))?;
    let resolution = config
        .resolution
        .unwrap_or_else(|| super::model_side(&model));
    // a model given by path is part of the plan through its hash, not its path
    if config.model.is_some() {
        config.model = Some(model.clone());
    }
    Ok(Plan {
        config,
        model,
        model_sha256: sha,
        resolution,
        compositions,
    })
}

fn train(
    run: &Path,
    plan: &Plan,
    arm: Arm,
    seed: u64,
    dev: DeviceSpec,
    k: usize,
    n: usize,
) -> anyhow::Result<Value> {
    let t = &plan.config.train;
    let (fusion, fusion_mode) = arm.fusion();
    let cfg = TrainConfig {
        method: Method::Lora,
        model: plan.model.clone(),
        data: plan.arm_data(run, arm),
        out: plan.run_dir(run, arm, seed),
        captions: arm.captions(),
        fusion,
        fusion_mode,
        resolution: plan.resolution,
        batch_size: t.batch,
        max_steps: Some(t.steps),
        lr: t.lr,
        seed,
        lora_rank: t.rank,
        lora_alpha: t.alpha,
        lora_targets: t.targets.clone(),
        checkpoint_every: t.checkpoint_every,
        keep_checkpoints: 2,
        // every run encodes the same training images: once, into one shared cache
        cache_latents: true,
        latent_cache_dir: Some(run.join("latents")),
        device: dev,
        ..TrainConfig::default()
    };
    let mut v = demo::train::run(cfg, &format!("train {} s{seed}", arm.id()), k, n)?;
    v["arm"] = json!(arm.id());
    v["seed"] = json!(seed);
    Ok(v)
}

/// The noise seed of a training seed's generations (the same for every arm).
fn generation_seed(seed: u64) -> u64 {
    seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x5EED_5EED_0F7E_5700
}

fn generate(
    run: &Path,
    plan: &Plan,
    arm: Arm,
    seed: u64,
    dev: &Device,
    k: usize,
    n: usize,
) -> anyhow::Result<Value> {
    let tests = study::data::test_records(plan, run)?;
    let g = &plan.config.generate;
    let bar = stage_bar(
        k,
        n,
        &format!("generate {} s{seed}", arm.id()),
        tests.len() as u64,
        "images",
    );
    let lora = plan.run_dir(run, arm, seed).join("lora.safetensors");
    let flat = move |r: &strata_caption::MetadataRecord| arm.flat_text(r);
    let job = demo::generate::Job {
        model: &plan.model,
        lora: &lora,
        records: &tests,
        flat_text: &flat,
        out: &plan.gen_dir(run, arm, seed),
        steps: g.steps,
        cfg: g.cfg,
        batch: g.batch,
        resolution: plan.resolution,
        seed: generation_seed(seed),
        label: arm.id(),
        software: "strata study",
    };
    let mut v = job.run(dev, &bar)?;
    bar.finish_and_clear();
    v["arm"] = json!(arm.id());
    v["seed"] = json!(seed);
    Ok(v)
}

fn weight_paths(w: &MetricWeights, run: &Path, plan: &Plan) -> WeightPaths {
    WeightPaths {
        inception: w.inception_weights.clone(),
        lpips_backbone: w.lpips_backbone.clone(),
        clip: w.clip_weights.clone(),
        vgg16_classifier: w.vgg16_weights.clone(),
        pieapp: w.pieapp_weights.clone(),
        // without VGG16 weights GSHPS uses strata's stand-in classifier (labelled as such)
        // one stand-in for every seed, trained on the study's training scenes: disjoint from
        // the test images it scores
        gshps_classifier: Some(run.join("eval/gshps_standin.safetensors")),
        gshps_train: strata_eval::gshps::CnnTrainOptions::default(),
        gshps_train_dir: Some(plan.train_dir(run)),
        ..WeightPaths::default()
    }
}

fn weights_json(w: &MetricWeights) -> Value {
    let p = |x: &Option<PathBuf>| json!(x.as_ref().map(|p| p.display().to_string()));
    json!({
        "inception": p(&w.inception_weights),
        "lpips_backbone": p(&w.lpips_backbone),
        "clip": p(&w.clip_weights),
        "vgg16_classifier": p(&w.vgg16_weights),
        "pieapp": p(&w.pieapp_weights),
    })
}

fn eval(
    run: &Path,
    plan: &Plan,
    seed: u64,
    weights: &MetricWeights,
    dev: &Device,
    k: usize,
    n: usize,
) -> anyhow::Result<Value> {
    let opts = EvalOptions {
        real: plan.test_dir(run),
        generated: plan
            .config
            .arms
            .iter()
            .map(|a| GeneratedSet {
                label: format!("lora/{}", a.id()),
                dir: plan.gen_dir(run, *a, seed),
            })
            .collect(),
        captions: None,
        metrics: Metric::ALL.to_vec(),
        out: plan.eval_dir(run, seed),
        ..study::results::eval_options(plan, seed, weight_paths(weights, run, plan), dev)?
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let bar = stage_bar(
        k,
        n,
        &format!("eval s{seed}"),
        plan.config.arms.len() as u64,
        "sets",
    );
    let report = evaluate(&opts, &mut |m| bar.set_message(m.to_string()))?;
    strata_eval::report::write_outputs(&report, &opts)?;
    study::results::save_per_image(&report, &opts.out)?;
    bar.finish_and_clear();
    if !report.failed.is_empty() {
        let (f, e) = &report.failed[0];
        bail!(
            "strata eval skipped {} item(s), first: {f}: {e}",
            report.failed.len()
        );
    }
    Ok(json!({
        "seed": seed,
        "real_images": report.real_images,
        "segmenter": report.segmenter,
        "weights": weights_json(weights),
    }))
}

/// The stages in order: the data, then per training seed every arm's training and
/// generation and the seed's evaluation (a study stopped part-way has whole seeds to show).
fn stages(plan: &Plan) -> Vec<(String, String)> {
    let mut v = vec![("data".to_string(), "training and test scenes".to_string())];
    for &s in &plan.config.seeds {
        for a in &plan.config.arms {
            v.push((
                format!("train-{}-seed-{s}", a.id()),
                format!("LoRA {} (seed {s})", a.id()),
            ));
            v.push((
                format!("generate-{}-seed-{s}", a.id()),
                format!("generate the test captions, {} (seed {s})", a.id()),
            ));
        }
        v.push((
            format!("eval-seed-{s}"),
            format!("strata eval of every arm (seed {s})"),
        ));
    }
    v
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dev = args.device.open()?;
    let plan = resolve_plan(&args)?;
    let run = args.out.clone();
    std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
    let _lock = strata_io::lock::FolderLock::acquire(&run)?;
    let resumed = demo::load_or_write_plan(&run, "study.json", &plan, "study")?;
    let c = &plan.config;
    eprintln!(
        "strata study ({} preset): {} arms ({}) x {} seeds; {} training scenes per class, {} test scenes{}; LoRA {} steps, batch {}; {} DDIM steps. {} training runs; estimated {:.0} min on an idle 2-core machine.{}",
        c.preset,
        c.arms.len(),
        c.arms.iter().map(|a| a.id()).collect::<Vec<_>>().join(", "),
        c.seeds.len(),
        c.data.train_per_class,
        c.data.test_images,
        if plan.compositions.is_empty() { String::new() } else { format!(" drawn for {} test compositions", plan.compositions.len()) },
        c.train.steps,
        c.train.batch,
        c.generate.steps,
        c.runs(),
        plan.estimate_seconds() / 60.0,
        if resumed { format!(" Resuming the study in {}.", run.display()) } else { String::new() }
    );
    let marks = Stages::new(&run);
    let list = stages(&plan);
    let n = list.len() + 1;
    let mut summaries: Vec<(String, Value)> = vec![];
    for (i, (name, label)) in list.iter().enumerate() {
        let k = i + 1;
        let mut done = marks.done(name)?;
        if name.starts_with("eval-") {
            if let Some(v) = &done {
                if v["weights"] != weights_json(&args.weights) {
                    eprintln!("[{k}/{n}] {label}: metric weights changed, evaluating again");
                    done = None;
                }
            }
        }
        if let Some(v) = done {
            summaries.push((name.clone(), v));
            continue;
        }
        let start = Instant::now();
        let cpu0 = demo::cpu_seconds();
        let mut v = if name == "data" {
            study::data::write(&run, &plan)?
        } else {
            let (what, rest) = name.split_once('-').expect("stage names hold a dash");
            let (arm_id, seed) = rest
                .rsplit_once("-seed-")
                .unwrap_or(("", rest.trim_start_matches("seed-")));
            let seed: u64 = seed.parse().expect("stage seed");
            match what {
                "train" => train(
                    &run,
                    &plan,
                    Arm::parse(arm_id).expect("arm"),
                    seed,
                    args.device,
                    k,
                    n,
                )?,
                "generate" => generate(
                    &run,
                    &plan,
                    Arm::parse(arm_id).expect("arm"),
                    seed,
                    &dev,
                    k,
                    n,
                )?,
                "eval" => eval(&run, &plan, seed, &args.weights, &dev, k, n)?,
                _ => unreachable!("stage list"),
            }
        };
        let secs = start.elapsed().as_secs_f64();
        v["seconds"] = json!(secs);
        if let (Some(a), Some(b)) = (cpu0, demo::cpu_seconds()) {
            v["cpu_seconds"] = json!(b - a);
        }
        marks.mark(name, &v)?;
        eprintln!("[{k}/{n}] {label}: done in {secs:.1} s");
        summaries.push((name.clone(), v));
    }
    let start = Instant::now();
    let bar = stage_bar(n, n, "statistics + report", 1, "");
    bar.set_message("bootstrap intervals");
    let results = study::results::compute(&run, &plan)?;
    let table = study::report::write(&run, &plan, &results, &summaries)?;
    bar.finish_and_clear();
    eprintln!(
        "[{n}/{n}] statistics and report: done in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!("{}", table.trim_end());
    println!("\nreport: {}", run.join("report.html").display());
    Ok(ExitCode::SUCCESS)
}
