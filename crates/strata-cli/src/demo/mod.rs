//! `strata demo`: the paper's experiment in miniature. The stages live in the submodules;
//! this module holds the run plan (every number the run uses, fixed when the run starts and
//! stored in `plan.json` so a rerun resumes the same run) and the done-markers.
//!
//! Run folder layout:
//!
//! ```text
//! DIR/plan.json                 the plan (settings + budget), checked on every rerun
//! DIR/stages/<stage>.json       done-marker of each finished stage (its summary, wall time)
//! DIR/synth/                    strata-synth dataset of all 11 classes (ground truth)
//! DIR/dataset/                  the caption stage's output (images + metadata.jsonl)
//! DIR/real/                     the test split: images + metadata.jsonl (relations as triples)
//! DIR/runs/{flat,hierarchical}/ strata train run folders (checkpoints, log, lora.safetensors)
//! DIR/gen/{flat,hierarchical}/  generated test images, same relative names as the real ones
//! DIR/eval/                     strata eval outputs (metrics.json, table.txt, report.html, ...)
//! DIR/report.html               the demo report (demo summary + the eval report)
//! ```

pub mod caption;
pub mod generate;
pub mod report;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// The two caption kinds compared, in table order.
pub const KINDS: [&str; 2] = ["flat", "hierarchical"];

/// Every number of a run. Two invocations with the same plan produce the same files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub preset: String,
    pub minutes: f64,
    pub seed: u64,
    pub model: PathBuf,
    /// sha256 of the base model's UNet weights (a rerun against another model is refused).
    pub model_sha256: String,
    /// Training and generation side in pixels.
    pub resolution: usize,
    /// Side of the synthetic scenes (the trainer resizes them to `resolution`).
    pub synth_size: u32,
    /// Scenes per class (8:2 train/test split per class).
    pub per_class: usize,
    pub train_steps: u64,
    pub train_batch: usize,
    pub lr: f64,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_targets: Vec<String>,
    pub checkpoint_every: u64,
    pub gen_steps: usize,
    pub gen_cfg: f64,
    pub gen_batch: usize,
    pub seg_steps: usize,
    pub seg_train_scenes: usize,
    pub seg_held_out: usize,
    /// Steps of the GSHPS stand-in scene classifier (used when no VGG16 weights are given).
    pub gshps_steps: usize,
    pub kid_subsets: usize,
}

/// Wall-time costs with the embedded base model (64 px, x4 VAE, UNet 48/96/96), measured in
/// three `strata demo --minutes 10` runs of a release build on the otherwise idle 2-core
/// development machine (two compute threads; docs/demo.md): seconds per LoRA step (batch 8,
/// rank 8 on attention/proj/ff; 0.463, 0.477 and 0.492 in the three runs, flat and
/// hierarchical together), per generated image and DDIM step (both CFG branches; model
/// loading included), per segmenter step (batch 8).
/// (Two LoRA runs side by side with one thread each were slower in total: 1.95 steps per
/// second as two threads, 1.4 as two processes, against 2.1 one run at a time.)
pub const SECONDS_PER_TRAIN_STEP: f64 = 0.477;
pub const SECONDS_PER_IMAGE_STEP: f64 = 0.038;
pub const SECONDS_PER_SEG_STEP: f64 = 0.235;
/// Fixed costs (model loading, VAE encoding of the training images, synth, captions, the
/// GSHPS stand-in, scoring, report), seconds: the ~30 s those runs left over, plus 10 s of
/// margin for the run-to-run spread of the step costs (±3 %), so the plan lands at or under
/// its budget rather than around it.
pub const SECONDS_FIXED: f64 = 40.0;

impl Plan {
    /// The plan of `preset` scaled to `minutes`. `resolution`: the model's image side.
    pub fn new(
        preset: &str,
        minutes: f64,
        seed: u64,
        model: PathBuf,
        model_sha256: String,
        resolution: usize,
    ) -> anyhow::Result<Plan> {
        if !(minutes.is_finite() && minutes > 0.0) {
            bail!("--minutes must be a positive number of minutes");
        }
        let synth_size = (resolution as u32).clamp(strata_synth::MIN_SIZE, strata_synth::MAX_SIZE);
        Ok(match preset {
            // For the test suite: a few steps of everything (tiny model, well under 2 minutes
            // in the dev profile). `--minutes` is ignored.
            "ci" => Plan {
                preset: "ci".into(),
                minutes,
                seed,
                model,
                model_sha256,
                resolution,
                synth_size,
                per_class: 3,
                train_steps: 4,
                train_batch: 4,
                lr: 1e-3,
                lora_rank: 4,
                lora_alpha: 4.0,
                lora_targets: vec!["attention".into()],
                checkpoint_every: 2,
                gen_steps: 3,
                gen_cfg: 5.0,
                gen_batch: 6,
                seg_steps: 0,
                seg_train_scenes: 0,
                seg_held_out: 11,
                gshps_steps: 4,
                kid_subsets: 10,
            },
            "default" => {
                // Generation gets what it needs at this budget; the two LoRA runs get the
                // rest. The segmenter is the embedded captioner's network: no steps.
                let budget = (minutes * 60.0 - SECONDS_FIXED).max(60.0);
                let per_class = (minutes.round() as usize).clamp(5, 40);
                let n_test = 11 * (per_class - (per_class as f64 * 0.8).round() as usize);
                let gen_steps = ((2.5 * minutes).round() as usize).clamp(10, 50);
                let gen_cost = 2.0 * (n_test * gen_steps) as f64 * SECONDS_PER_IMAGE_STEP;
                let seg_steps = 0;
                let seg_cost = seg_steps as f64 * SECONDS_PER_SEG_STEP;
                let train_steps = ((budget - gen_cost - seg_cost).max(0.0)
                    / (2.0 * SECONDS_PER_TRAIN_STEP))
                    .round()
                    .max(20.0) as u64;
                Plan {
                    preset: "default".into(),
                    minutes,
                    seed,
                    model,
                    model_sha256,
                    resolution,
                    synth_size,
                    per_class,
                    train_steps,
                    train_batch: 8,
                    lr: 1e-3,
                    lora_rank: 8,
                    lora_alpha: 8.0,
                    lora_targets: vec!["attention".into(), "proj".into(), "ff".into()],
                    checkpoint_every: 10,
                    gen_steps,
                    // Stable Diffusion's usual guidance: the embedded base model follows its
                    // captions clearly only from about 8 (docs/base-model.md)
                    gen_cfg: 7.5,
                    gen_batch: 8,
                    seg_steps,
                    seg_train_scenes: 0,
                    seg_held_out: 110,
                    gshps_steps: 100,
                    kid_subsets: 100,
                }
            }
            other => bail!("--preset {other:?}: use ci or default"),
        })
    }

    /// Scenes in the synthetic dataset.
    pub fn scenes(&self) -> usize {
        11 * self.per_class
    }

    /// Test images (the caption stage's stratified 8:2 split).
    pub fn test_images(&self) -> usize {
        11 * (self.per_class - (self.per_class as f64 * 0.8).round() as usize)
    }

    /// A rough wall-time estimate in seconds on an idle 2-core machine, from the measured
    /// per-step costs (for the base model at 64 px; other models cost differently).
    pub fn estimate_seconds(&self) -> f64 {
        let px = (self.resolution as f64 / 64.0).powi(2);
        SECONDS_FIXED
            + px * 2.0 * self.train_steps as f64 * SECONDS_PER_TRAIN_STEP * self.train_batch as f64
                / 8.0
            + px * 2.0 * (self.test_images() * self.gen_steps) as f64 * SECONDS_PER_IMAGE_STEP
            + self.seg_steps as f64 * SECONDS_PER_SEG_STEP
    }
}

/// CPU time (user + system, seconds) this process has used so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere). Stage markers record it next to wall time: on a shared
/// machine wall time depends on the load, CPU time much less.
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the command name (which is in parentheses and may hold spaces)
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12)
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Peak resident memory of this process so far in MB (`VmHWM` of `/proc/self/status`;
/// Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Writes `bytes` to `path` atomically (strata-io: a temporary file in the same folder,
/// renamed into place), naming the file in the error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    strata_io::atomic::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Stores `plan` as `DIR/file` in a new run folder, or checks it against the plan stored by
/// an earlier run (`Ok(true)`: resuming). A folder holding another plan is refused with the
/// differing settings; a non-empty folder without one is refused too. `what` names the
/// command in messages (`demo`, `study`).
pub fn load_or_write_plan<T>(out: &Path, file: &str, plan: &T, what: &str) -> anyhow::Result<bool>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let path = out.join(file);
    if path.is_file() {
        let old: T = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a {what} plan", path.display()))?;
        if &old != plan {
            let a = serde_json::to_value(&old)?;
            let b = serde_json::to_value(plan)?;
            let mut diff = vec![];
            json_diff("", &a, &b, &mut diff);
            bail!(
                "{} holds a {what} run with other settings ({}); rerun with the same options to resume it, or choose another --out",
                out.display(),
                diff.join("; ")
            );
        }
        return Ok(true);
    }
    // the folder lock this run holds is not content
    let holds_something = out.is_dir()
        && std::fs::read_dir(out)?
            .flatten()
            .any(|e| e.file_name() != strata_io::lock::LOCK_FILE);
    if holds_something {
        bail!(
            "{} exists and is not a strata {what} folder (no {file}); choose another --out",
            out.display()
        );
    }
    write_atomic(
        &path,
        (serde_json::to_string_pretty(plan)? + "\n").as_bytes(),
    )?;
    Ok(false)
}

/// The differing leaves of two JSON values, as `path: then (then) vs now (now)`.
fn json_diff(at: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let null = serde_json::Value::Null;
                json_diff(
                    &p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{at}: {a} (then) vs {b} (now)")),
        _ => {}
    }
}

/// The base model of a demo or study: `given` (a diffusers folder), else the embedded base
/// model; returned canonical, with the sha256 of its UNet weights (a rerun against another
/// model is refused through it). `what` names the setting in messages (`--model`, `model`).
pub fn base_model(given: Option<&Path>, what: &str) -> anyhow::Result<(PathBuf, String)> {
    let model = match given {
        Some(m) => m.to_path_buf(),
        None => crate::base_model::ensure().with_context(|| {
            format!("no {what} given and the embedded base model is unavailable")
        })?,
    };
    if !model.join("unet").is_dir() {
        bail!(
            "{what} {}: not a diffusers folder (unet/, vae/, text_encoder/, tokenizer/)",
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
    Ok((model, sha))
}

/// Runs one stage and records it: `work`'s summary gets the stage's wall and CPU seconds
/// and the process's peak memory so far, and is written as the stage's done-marker.
pub fn run_stage(
    stages: &Stages,
    name: &str,
    work: impl FnOnce() -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let start = std::time::Instant::now();
    let cpu0 = cpu_seconds();
    let mut v = work()?;
    v["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
    if let (Some(a), Some(b)) = (cpu0, cpu_seconds()) {
        v["cpu_seconds"] = serde_json::json!(b - a);
    }
    if let Some(m) = peak_rss_mb() {
        v["peak_rss_mb_so_far"] = serde_json::json!(m.round());
    }
    stages.mark(name, &v)?;
    Ok(v)
}

/// The done-markers of a run folder.
pub struct Stages {
    dir: PathBuf,
}

impl Stages {
    pub fn new(run: &Path) -> Stages {
        Stages {
            dir: run.join("stages"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The summary a finished stage recorded, if it finished.
    pub fn done(&self, name: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let p = self.path(name);
        if !p.is_file() {
            return Ok(None);
        }
        let s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let v = serde_json::from_str(&s).with_context(|| {
            format!(
                "{} is not a stage marker (JSON); delete it to redo the stage",
                p.display()
            )
        })?;
        Ok(Some(v))
    }

    /// Records that `name` finished, with its summary.
    pub fn mark(&self, name: &str, summary: &serde_json::Value) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(summary).expect("json") + "\n";
        write_atomic(&self.path(name), text.as_bytes())
    }
}

/// A progress bar for one stage: `[k/n] name` prefix, position/length, elapsed time.
pub fn stage_bar(k: usize, n: usize, name: &str, len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let tpl = format!(
        "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed_precise}} (eta {{eta}}) {{msg}}"
    );
    bar.set_style(
        ProgressStyle::with_template(&tpl)
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("[{k}/{n}] {name:<22}"));
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_scales_with_minutes_and_keeps_a_test_image_per_class() {
        let p = |m: f64| Plan::new("default", m, 0, "m".into(), String::new(), 64).unwrap();
        assert!(p(20.0).train_steps > p(10.0).train_steps);
        // the embedded segmenter needs no training: its time goes to the LoRA steps
        assert_eq!(p(20.0).seg_steps, 0);
        assert_eq!(p(10.0).seg_steps, 0);
        for m in [1.0, 2.0, 10.0, 60.0] {
            assert!(p(m).test_images() >= 11, "{m} minutes");
        }
        for m in [5.0, 10.0, 20.0, 60.0] {
            let e = p(m).estimate_seconds() / 60.0;
            assert!((e - m).abs() < 0.1 * m, "{m} minutes planned as {e:.2}");
        }
        let ci = Plan::new("ci", 1.0, 0, "m".into(), String::new(), 32).unwrap();
        assert_eq!(ci.test_images(), 11);
        assert_eq!(ci.scenes(), 33);
        assert!(Plan::new("fast", 1.0, 0, "m".into(), String::new(), 32).is_err());
        assert!(Plan::new("default", 0.0, 0, "m".into(), String::new(), 32).is_err());
    }
}
