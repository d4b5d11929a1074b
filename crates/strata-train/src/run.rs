//! A run folder: `config.toml` (every option), `log.jsonl` (loss and lr per step),
//! `checkpoints/step-NNNNNNNN/` (trainable tensors, AdamW moments, `state.json`; each written
//! into a temporary folder and renamed), `latest` (name of the newest checkpoint, replaced
//! atomically) and the method's output (`lora.safetensors`, `embeddings/<token>.safetensors`,
//! or the diffusers folder `model/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::config::{Method, TrainConfig};
use crate::error::{ce, Result, TrainError};
use crate::trainer::{append_jsonl, StepReport, Trainer};

pub(crate) fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, what, source }
}

/// Writes a checkpoint of `t` under `run/checkpoints/` and points `run/latest` at it; keeps
/// the newest `keep`. Returns its folder.
pub fn save_checkpoint(t: &Trainer, run: &Path) -> Result<PathBuf> {
    let state = serde_json::to_string_pretty(&t.checkpoint_state()).expect("serialises");
    save_checkpoint_parts(
        run,
        t.step,
        t.cfg.keep_checkpoints,
        &t.trainable_tensors(),
        &t.opt.state_tensors(),
        &state,
    )
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
    crate::st::save(&tmp.join("trainable.safetensors"), trainable, None)?;
    crate::st::save(&tmp.join("optimizer.safetensors"), optimizer, None)?;
    crate::st::write_atomic(&tmp.join("state.json"), state_json.as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir, "replacing"))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir, "renaming the checkpoint into place"))?;
    crate::st::write_atomic(&run.join("latest"), name.as_bytes())?;
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
        crate::st::write_atomic(log, kept.as_bytes())?;
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

/// Options of [`train`] beyond the configuration.
pub struct RunOptions<'a> {
    /// Continue the run in `cfg.out` from its latest checkpoint.
    pub resume: bool,
    pub on_status: &'a mut dyn FnMut(&str),
    pub on_step: &'a mut dyn FnMut(&StepReport),
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: u64,
    pub final_loss: f32,
    pub output: PathBuf,
    pub skipped_images: Vec<(String, String)>,
}

/// Trains to the end (or resumes), writing checkpoints, the log and the output.
pub fn train(cfg: TrainConfig, opts: RunOptions) -> Result<RunSummary> {
    if cfg.method == Method::Vae {
        return crate::vae_train::train(cfg, opts);
    }
    let run = cfg.out.clone();
    std::fs::create_dir_all(&run).map_err(io(&run, "creating the run folder"))?;
    let cfg_path = run.join("config.toml");
    if !opts.resume {
        if latest_checkpoint(&run).is_some() {
            return Err(TrainError::Config { field: "out".into(), what: format!("{} already holds a run; pass --resume {} to continue it, or choose another --out", run.display(), run.display()) });
        }
        crate::st::write_atomic(&cfg_path, cfg.to_toml().as_bytes())?;
    }
    let mut t = Trainer::new(cfg, opts.on_status)?;
    let log = run.join("log.jsonl");
    let mut last_ckpt = String::from("(none yet)");
    if opts.resume {
        if let Some(dir) = latest_checkpoint(&run) {
            (opts.on_status)(&format!("resuming from {}", dir.display()));
            t.load_checkpoint(&dir)?;
            last_ckpt = dir.display().to_string();
            // Drop log lines written after the checkpoint (the steps are redone).
            truncate_log(&log, t.step)?;
        } else {
            let _ = std::fs::remove_file(&log);
        }
    }
    while t.step < t.total_steps {
        let r = t.train_step(&last_ckpt)?;
        append_jsonl(&log, &r)?;
        (opts.on_step)(&r);
        if t.step % t.cfg.checkpoint_every == 0 || t.step == t.total_steps {
            last_ckpt = save_checkpoint(&t, &run)?.display().to_string();
        }
        if t.cfg.validation_every > 0
            && t.step % t.cfg.validation_every == 0
            && !t.cfg.validation_prompts.is_empty()
        {
            crate::validate::validation_images(&t, &run.join("validation"))?;
        }
    }
    if latest_checkpoint(&run)
        .map(|d| !d.ends_with(format!("step-{:08}", t.step)))
        .unwrap_or(true)
    {
        save_checkpoint(&t, &run)?;
    }
    let output = write_output(&t, &run)?;
    Ok(RunSummary {
        steps: t.step,
        final_loss: t.last_loss,
        output,
        skipped_images: t.data.skipped.clone(),
    })
}

/// The method's deliverable.
pub fn write_output(t: &Trainer, run: &Path) -> Result<PathBuf> {
    match t.cfg.method {
        Method::Lora => {
            let p = run.join("lora.safetensors");
            crate::lora_io::export_kohya(&t.unet, &p, lora_metadata(t))?;
            Ok(p)
        }
        Method::TextualInversion => {
            let dir = run.join("embeddings");
            std::fs::create_dir_all(&dir).map_err(io(&dir, "creating"))?;
            let name: String = t
                .cfg
                .placeholder_token
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            let name = if name.is_empty() {
                "embedding".to_string()
            } else {
                name
            };
            let p = dir.join(format!("{name}.safetensors"));
            let v = t.ti.as_ref().expect("TI run has rows");
            let tensors = HashMap::from([(
                "emb_params".to_string(),
                v.as_tensor()
                    .to_dtype(DType::F32)
                    .map_err(ce("embedding"))?,
            )]);
            let meta = HashMap::from([
                (
                    "strata_placeholder_token".to_string(),
                    t.cfg.placeholder_token.clone(),
                ),
                ("strata_steps".to_string(), t.step.to_string()),
                (
                    "strata_captions".to_string(),
                    format!("{:?}", t.cfg.captions).to_lowercase(),
                ),
            ]);
            crate::st::save(&p, &tensors, Some(meta))?;
            Ok(p)
        }
        Method::Full | Method::Dreambooth => write_diffusers(t, run),
        Method::Vae => unreachable!("the VAE run writes its own output (vae_train)"),
    }
}

fn lora_metadata(t: &Trainer) -> HashMap<String, String> {
    let base = crate::trainer::base_weights_file(&t.cfg.model);
    let hash = base
        .as_deref()
        .and_then(|p| crate::trainer::sha256_file(p).ok())
        .unwrap_or_default();
    let mut m = HashMap::from([
        ("ss_network_module".to_string(), "networks.lora".to_string()),
        ("ss_network_dim".to_string(), t.cfg.lora_rank.to_string()),
        (
            "ss_network_alpha".to_string(),
            format!("{}", t.cfg.lora_alpha),
        ),
        ("ss_base_model_version".to_string(), "sd_v1".to_string()),
        ("ss_steps".to_string(), t.step.to_string()),
        ("ss_learning_rate".to_string(), format!("{}", t.cfg.lr)),
        (
            "modelspec.architecture".to_string(),
            "stable-diffusion-v1/lora".to_string(),
        ),
        (
            "strata_base_model".to_string(),
            t.cfg.model.display().to_string(),
        ),
        ("strata_base_model_sha256".to_string(), hash.clone()),
        (
            "ss_sd_model_hash".to_string(),
            hash.get(..10).unwrap_or("").to_string(),
        ),
        ("strata_rank".to_string(), t.cfg.lora_rank.to_string()),
        ("strata_alpha".to_string(), format!("{}", t.cfg.lora_alpha)),
        (
            "strata_captions".to_string(),
            format!("{:?}", t.cfg.captions).to_lowercase(),
        ),
        (
            "strata_lora_targets".to_string(),
            t.cfg.lora_targets.join(","),
        ),
    ]);
    if let Some(f) = &t.fusion {
        m.insert("strata_fusion".to_string(), fusion_json(f).to_string());
    }
    m
}

/// The fusion module as JSON: kind, mode, w(t) at a few timesteps, and for the learned one
/// its four tensors (shape + values), enough to rebuild it.
pub fn fusion_json(f: &strata_models::fusion::Fusion) -> serde_json::Value {
    use strata_models::fusion::Schedule;
    let ts = [0.0, 250.0, 500.0, 750.0, 999.0];
    let w: Vec<serde_json::Value> = ts
        .iter()
        .map(|&t| serde_json::json!({"t": t, "w": f.schedule.weights(t).ok()}))
        .collect();
    let mut v = serde_json::json!({"mode": f.mode, "weights": w});
    match &f.schedule {
        Schedule::Fixed(s) => {
            v["schedule"] = "fixed".into();
            v["fixed"] = serde_json::to_value(s).expect("serialises");
        }
        Schedule::Learned(l) => {
            v["schedule"] = "learned".into();
            v["learned_config"] = serde_json::to_value(&l.config).expect("serialises");
            let mut ts = serde_json::Map::new();
            for (k, t) in l.to_tensors("") {
                let vals = t
                    .flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .unwrap_or_default();
                ts.insert(k, serde_json::json!({"shape": t.dims(), "data": vals}));
            }
            v["learned_tensors"] = serde_json::Value::Object(ts);
        }
    }
    v
}

/// Full fine-tune output: a copy of the base diffusers folder with the trained UNet.
fn write_diffusers(t: &Trainer, run: &Path) -> Result<PathBuf> {
    let dst = run.join("model");
    let tmp = run.join(".model.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp, "removing"))?;
    }
    copy_dir(&t.cfg.model, &tmp)?;
    let unet_dir = tmp.join("unet");
    for e in std::fs::read_dir(&unet_dir)
        .map_err(io(&unet_dir, "listing"))?
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(".safetensors") {
            std::fs::remove_file(e.path()).map_err(io(&unet_dir, "replacing the UNet weights"))?;
        }
    }
    let vars = t.full_vars().expect("full run has UNet vars");
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    crate::st::save(
        &unet_dir.join("diffusion_pytorch_model.safetensors"),
        &tensors,
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
    )?;
    strata_models::schedulers::ensure_scheduler_config(&tmp)
        .map_err(io(&tmp, "writing scheduler/"))?;
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(io(&dst, "replacing"))?;
    }
    std::fs::rename(&tmp, &dst).map_err(io(&dst, "renaming into place"))?;
    Ok(dst)
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
