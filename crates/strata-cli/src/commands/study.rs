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

use crate::stages::{self, stage_bar, Stages};
use crate::study::{self, Arm, Plan, StudyConfig, PRESETS};

#[derive(clap::Args)]
pub struct Args {
    /// Study settings (TOML): any key of the preset (`arms`, `seeds`, `[data]`, `[train]`,
    /// `[generate]`, `[stats]`, `model`, `resolution`) overrides it; `preset = "…"` picks the
    /// preset the file starts from. See docs/study.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The preset to start from when the file names none: `ci` (a few steps of everything;
    /// the test suite's), `demo` (flat vs hierarchical, one seed, captions from the pixels,
    /// sized to --minutes: what `strata demo` runs), `small` (flat vs hierarchical, 3 seeds,
    /// 220 test scenes) or `full` (all seven arms).
    #[arg(long, default_value = "small", value_parser = PRESETS)]
    preset: String,
    /// Wall-time budget of the demo preset in minutes on two idle cores [default: 10]: scales
    /// its scenes per class, sampling steps and LoRA steps.
    #[arg(long, value_name = "M", value_parser = super::numbers::float(super::numbers::End::Open(0.0), super::numbers::End::Closed(100_000.0)))]
    minutes: Option<f64>,
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

/// The metric networks' weights of a study, passed to `strata eval`. Without a metric's
/// weights its row says why it was not computed.
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

    /// The files as the evaluation marker records them (a change redoes the evaluation).
    fn json(&self) -> Value {
        let p = |x: &Option<PathBuf>| json!(x.as_ref().map(|p| p.display().to_string()));
        json!({
            "inception": p(&self.inception_weights),
            "lpips_backbone": p(&self.lpips_backbone),
            "clip": p(&self.clip_weights),
            "vgg16_classifier": p(&self.vgg16_weights),
            "pieapp": p(&self.pieapp_weights),
        })
    }
}

fn resolve_plan(args: &Args) -> anyhow::Result<Plan> {
    let config = match &args.config {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            StudyConfig::from_toml(&text, f, &args.preset, args.minutes)?
        }
        None => StudyConfig::sized(&args.preset, args.minutes)?,
    };
    plan_of(config, args.test_compositions.as_ref(), args.model.as_ref())
}

/// The plan of `config`, with a test-compositions file and a model given on the command
/// line laid over it.
pub fn plan_of(
    mut config: StudyConfig,
    test_compositions: Option<&PathBuf>,
    model: Option<&PathBuf>,
) -> anyhow::Result<Plan> {
    if let Some(c) = test_compositions {
        config.data.test_compositions = Some(c.clone());
    }
    if let Some(m) = model {
        config.model = Some(m.clone());
    }
    config.validate()?;
    let compositions = match &config.data.test_compositions {
        Some(f) => study::data::read_compositions(f)?,
        None => vec![],
    };
    let (model, sha) = stages::base_model(config.model.as_deref())?;
    let resolution = config
        .resolution
        .unwrap_or_else(|| super::model_side(&model));
    // a model given by path is recorded canonical (and through its hash)
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
    let mut v = stages::train::run(cfg, &format!("train {} s{seed}", arm.id()), k, n)?;
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
    let job = stages::generate::Job {
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
        // without VGG16 weights GSHPS uses strata's stand-in classifier (labelled as such):
        // one stand-in for every seed, trained on the study's training scenes: disjoint from
        // the test images it scores
        gshps_classifier: Some(run.join("eval/gshps_standin.safetensors")),
        gshps_train: strata_eval::gshps::CnnTrainOptions {
            steps: plan.config.eval.gshps_steps,
            ..Default::default()
        },
        gshps_train_dir: Some(plan.train_dir(run)),
        ..w.paths()
    }
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
        segmenter: None,
        // relation fidelity's judge: the embedded captioner's network (its held-out quality
        // is measured and reported with every figure)
        segmenter_net: Some(std::sync::Arc::new(
            strata_captioner::embedded::EmbeddedSegmenter::load_default()
                .context("loading the embedded captioner's network as the segmenter")?,
        )),
        train: strata_eval::seg::TrainOptions {
            held_out_scenes: plan.config.eval.segmenter_held_out,
            seed,
            ..Default::default()
        },
        kid_subsets: 100,
        kid_subset_size: 1000,
        seed,
        weights: weight_paths(weights, run, plan),
        grid_scenes: 11,
        device: dev.clone(),
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
        "weights": weights.json(),
    }))
}

/// One stage of a study.
#[derive(Clone, Copy)]
enum Stage {
    Data,
    Train(Arm, u64),
    Generate(Arm, u64),
    Eval(u64),
}

impl Stage {
    /// The done-marker's name.
    fn name(self) -> String {
        match self {
            Stage::Data => "data".into(),
            Stage::Train(a, s) => format!("train-{}-seed-{s}", a.id()),
            Stage::Generate(a, s) => format!("generate-{}-seed-{s}", a.id()),
            Stage::Eval(s) => format!("eval-seed-{s}"),
        }
    }

    fn label(self) -> String {
        match self {
            Stage::Data => "training and test scenes".into(),
            Stage::Train(a, s) => format!("LoRA {} (seed {s})", a.id()),
            Stage::Generate(a, s) => format!("generate the test captions, {} (seed {s})", a.id()),
            Stage::Eval(s) => format!("strata eval of every arm (seed {s})"),
        }
    }
}

/// The stages in order: the data, then per training seed every arm's training and
/// generation and the seed's evaluation (a study stopped part-way has whole seeds to show).
fn stage_list(plan: &Plan) -> Vec<Stage> {
    let mut v = vec![Stage::Data];
    for &s in &plan.config.seeds {
        for &a in &plan.config.arms {
            v.push(Stage::Train(a, s));
            v.push(Stage::Generate(a, s));
        }
        v.push(Stage::Eval(s));
    }
    v
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = resolve_plan(&args)?;
    run_plan(&plan, &args.out, &args.weights, args.device)
}

/// Runs (or resumes) the study `plan` in the folder `run`: every stage, then the statistics
/// and the report; prints the table and the report's path.
pub fn run_plan(
    plan: &Plan,
    run: &Path,
    weights: &MetricWeights,
    device: DeviceSpec,
) -> anyhow::Result<ExitCode> {
    let dev = device.open()?;
    std::fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let _lock = strata_io::lock::FolderLock::acquire(run)?;
    let resumed = stages::load_or_write_plan(run, plan)?;
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
    let marks = Stages::new(run);
    let list = stage_list(plan);
    let n = list.len() + 1;
    let mut summaries: Vec<(String, Value)> = vec![];
    for (i, &stage) in list.iter().enumerate() {
        let (k, name, label) = (i + 1, stage.name(), stage.label());
        let mut done = marks.done(&name)?;
        if let (Stage::Eval(_), Some(v)) = (stage, &done) {
            if v["weights"] != weights.json() {
                eprintln!("[{k}/{n}] {label}: metric weights changed, evaluating again");
                done = None;
            }
        }
        if let Some(v) = done {
            summaries.push((name, v));
            continue;
        }
        let v = stages::run_stage(&marks, &name, || match stage {
            Stage::Data => study::data::write(run, plan, k, n),
            Stage::Train(arm, seed) => train(run, plan, arm, seed, device, k, n),
            Stage::Generate(arm, seed) => generate(run, plan, arm, seed, &dev, k, n),
            Stage::Eval(seed) => eval(run, plan, seed, weights, &dev, k, n),
        })?;
        let secs = v["seconds"].as_f64().unwrap_or_default();
        eprintln!("[{k}/{n}] {label}: done in {secs:.1} s");
        summaries.push((name, v));
    }
    let start = Instant::now();
    let bar = stage_bar(n, n, "statistics + report", 1, "");
    bar.set_message("bootstrap intervals");
    let results = study::results::compute(run, plan)?;
    let table = study::report::write(run, plan, &results, &summaries)?;
    bar.finish_and_clear();
    eprintln!(
        "[{n}/{n}] statistics and report: done in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!("{}", table.trim_end());
    println!("\nreport: {}", run.join("report.html").display());
    Ok(ExitCode::SUCCESS)
}
