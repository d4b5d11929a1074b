//! The run folder's layout, shared by every method's run loop: `config.toml` (written once
//! when a run starts), `checkpoints/step-NNNNNNNN/` (`trainable.safetensors`,
//! `optimizer.safetensors`, `state.json`; each written into a temporary folder and renamed),
//! `latest` (the newest checkpoint's name, replaced atomically) and `log.jsonl` (cut back to
//! the checkpoint on resume).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strata_io::lock::FolderLock;

use candle_core::Tensor;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::trainer::StepReport;

pub(crate) fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, what, source }
}

/// Creates the run folder. A new run (`resume` false) refuses a folder that already holds
/// checkpoints and writes `config.toml`; a resumed one keeps what is there. The options are
/// validated first, so a refused run creates and writes nothing (an empty `out` used to
/// write `config.toml` into the current folder). The folder is locked (`.strata.lock`) for
/// as long as the returned lock lives: a second run aimed at it fails at once.
pub fn start_run(cfg: &TrainConfig, resume: bool) -> Result<(PathBuf, FolderLock)> {
    cfg.validate()?;
    let run = cfg.out.clone();
    std::fs::create_dir_all(&run).map_err(io(&run, "creating the run folder"))?;
    // before anything is read or written: a second run into the same folder stops here
    let lock = FolderLock::acquire(&run)?;
    if !resume {
        if latest_checkpoint(&run).is_some() {
            return Err(TrainError::Config {
                field: "out".into(),
                what: format!(
                    "{} already holds a run; pass --resume {} to continue it, or choose another --out",
                    run.display(),
                    run.display()
                ),
            });
        }
        strata_models::safetensors_io::write_atomic(
            &run.join("config.toml"),
            cfg.to_toml().as_bytes(),
        )?;
    }
    Ok((run, lock))
}

/// The checkpoint layout shared by every method: `checkpoints/step-NNNNNNNN/` with
/// `trainable.safetensors`, `optimizer.safetensors` and `state.json`, written into a
/// temporary folder and renamed, then `latest` replaced; the newest `keep` are kept.
pub fn save_checkpoint_parts(
    run: &Path,
    step: u64,
    keep: usize,
    trainable: &HashMap<String, Tensor>,
    optimizer: &HashMap<String, Tensor>,
    state_json: &str,
) -> Result<PathBuf> {
    let root = run.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io(&root, "creating"))?;
    let name = format!("step-{step:08}");
    let dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp, "removing a stale temporary checkpoint"))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp, "creating"))?;
    strata_models::safetensors_io::save(&tmp.join("trainable.safetensors"), trainable, None)?;
    strata_models::safetensors_io::save(&tmp.join("optimizer.safetensors"), optimizer, None)?;
    strata_models::safetensors_io::write_atomic(&tmp.join("state.json"), state_json.as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir, "replacing"))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir, "renaming the checkpoint into place"))?;
    strata_models::safetensors_io::write_atomic(&run.join("latest"), name.as_bytes())?;
    // prune
    let mut all: Vec<String> = std::fs::read_dir(&root)
        .map_err(io(&root, "listing"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("step-"))
        .collect();
    all.sort();
    let keep = keep.max(1);
    if all.len() > keep {
        for n in &all[..all.len() - keep] {
            let _ = std::fs::remove_dir_all(root.join(n));
        }
    }
    Ok(dir)
}

/// Drops the lines of a `log.jsonl` written after `step` (a resumed run redoes them).
pub fn truncate_log(log: &Path, step: u64) -> Result<()> {
    if let Ok(s) = std::fs::read_to_string(log) {
        let kept: String = s
            .lines()
            .filter(|l| {
                serde_json::from_str::<StepReport>(l)
                    .map(|r| r.step <= step)
                    .unwrap_or(false)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        strata_models::safetensors_io::write_atomic(log, kept.as_bytes())?;
    }
    Ok(())
}

/// The newest checkpoint folder of a run, if any.
pub fn latest_checkpoint(run: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(run.join("latest")).ok()?;
    let dir = run.join("checkpoints").join(name.trim());
    dir.join("state.json").is_file().then_some(dir)
}

/// Reads the configuration a run was started with.
pub fn read_run_config(run: &Path) -> Result<TrainConfig> {
    let p = run.join("config.toml");
    let s = std::fs::read_to_string(&p).map_err(|e| TrainError::Io {
        path: p.clone(),
        what: "reading the run configuration (is this a strata train run folder?)",
        source: e,
    })?;
    let mut c = TrainConfig::from_toml_str(&s, &p)?;
    c.out = run.to_path_buf();
    Ok(c)
}

pub(crate) fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(io(dst, "creating"))?;
    for e in std::fs::read_dir(src).map_err(io(src, "listing"))? {
        let e = e.map_err(io(src, "listing"))?;
        let p = e.path();
        let to = dst.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &to)?;
        } else {
            std::fs::copy(&p, &to).map_err(io(&p, "copying"))?;
        }
    }
    Ok(())
}
