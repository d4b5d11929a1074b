//! The machinery of a run folder that `strata study` (and `strata demo`, its smallest
//! preset) fills stage by stage: the stored plan that a rerun is checked against, one
//! done-marker per finished stage with its wall and CPU seconds and peak memory, progress
//! bars, the base model's resolution and hash, and the stages shared by every study: the
//! caption stage from pixels ([`caption`]), LoRA training ([`train`]) and generation of the
//! test captions ([`generate`]).

pub mod caption;
pub mod generate;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

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

/// The file in a run folder that holds its plan.
const PLAN_FILE: &str = "study.json";

/// Stores `plan` as `DIR/study.json` in a new run folder, or checks it against the plan
/// stored by an earlier run (`Ok(true)`: resuming). A folder holding another plan is refused
/// with the differing settings; a non-empty folder without one is refused too.
pub fn load_or_write_plan<T>(out: &Path, plan: &T) -> anyhow::Result<bool>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let (file, what) = (PLAN_FILE, "study");
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

/// The base model of a study: `given` (a diffusers folder), else the embedded base model;
/// returned canonical, with the sha256 of its UNet weights (a rerun against another model is
/// refused through it).
pub fn base_model(given: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
    let what = "model";
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
