//! A training run: the loops that train to the end or resume, writing into a run folder
//! `config.toml` (every option), `log.jsonl` (loss and lr per step),
//! `checkpoints/step-NNNNNNNN/` (trainable tensors, AdamW moments, `state.json`; each written
//! into a temporary folder and renamed), `latest` (name of the newest checkpoint, replaced
//! atomically) and the method's output (`lora.safetensors`, `embeddings/<token>.safetensors`,
//! or the diffusers folder `model/`). The folder's layout is in [`crate::checkpoint`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::checkpoint::{copy_dir, io, start_run};
pub use crate::checkpoint::{
    latest_checkpoint, read_run_config, save_checkpoint_parts, truncate_log,
};
use crate::config::{Method, TrainConfig};
use crate::error::{ce, Result};
use crate::trainer::{append_jsonl, StepReport, Trainer};
use crate::vae_train::VaeTrainer;

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
        return train_vae(cfg, opts);
    }
    let fresh = !opts.resume && folder_absent_or_empty(&cfg.out);
    let (run, lock) = start_run(&cfg, opts.resume)?;
    let mut t = match Trainer::new(cfg, opts.on_status) {
        Ok(t) => t,
        Err(e) => {
            // the model or the data was refused before the first step: a new run leaves
            // nothing behind, so the same command can be rerun once the input is fixed
            if fresh {
                undo_fresh_run(&run, lock);
            }
            return Err(e);
        }
    };
    let log = run.join("log.jsonl");
    let mut last_ckpt = resume(&run, &log, opts.resume, opts.on_status, |dir| {
        t.load_checkpoint(dir)?;
        Ok(t.step)
    })?;
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
    if !has_checkpoint_of(&run, t.step) {
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

fn folder_absent_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(_) => true,
    }
}

/// Removes what [`start_run`] wrote into a folder that was absent or empty before it.
fn undo_fresh_run(run: &Path, lock: strata_io::lock::FolderLock) {
    let _ = std::fs::remove_file(run.join("config.toml"));
    let _ = std::fs::remove_file(lock.path());
    drop(lock);
    let _ = std::fs::remove_dir(run);
}

/// Trains the VAE to the end (or resumes), writing checkpoints, the log and `model/`.
fn train_vae(cfg: TrainConfig, opts: RunOptions) -> Result<RunSummary> {
    let (run, _lock) = start_run(&cfg, opts.resume)?;
    let mut t = VaeTrainer::new(cfg, opts.on_status)?;
    let log = run.join("log.jsonl");
    let mut last_ckpt = resume(&run, &log, opts.resume, opts.on_status, |dir| {
        t.load_checkpoint(dir)?;
        Ok(t.step)
    })?;
    while t.step < t.total_steps {
        let r = t.train_step(&last_ckpt)?;
        append_jsonl(&log, &r)?;
        (opts.on_step)(&StepReport {
            step: r.step,
            total: r.total,
            epoch: r.epoch,
            loss: r.loss,
            lr: r.lr,
        });
        if t.step % t.cfg.checkpoint_every == 0 || t.step == t.total_steps {
            last_ckpt = t.save_checkpoint(&run)?.display().to_string();
        }
    }
    if !has_checkpoint_of(&run, t.step) {
        t.save_checkpoint(&run)?;
    }
    (opts.on_status)("measuring the latent scale and writing the model");
    let output = t.write_output(&run)?;
    Ok(RunSummary {
        steps: t.step,
        final_loss: t.last_loss,
        output,
        skipped_images: t.skipped.clone(),
    })
}

/// Resumes a run from its latest checkpoint when `resume` is set: `load` restores the
/// trainer from the checkpoint folder and returns its step, and log lines written after that
/// step are dropped (those steps are redone); a resumed run without a checkpoint starts
/// again with an empty log. Returns the checkpoint shown in progress reports.
fn resume(
    run: &Path,
    log: &Path,
    resume: bool,
    on_status: &mut dyn FnMut(&str),
    load: impl FnOnce(&Path) -> Result<u64>,
) -> Result<String> {
    if resume {
        if let Some(dir) = latest_checkpoint(run) {
            on_status(&format!("resuming from {}", dir.display()));
            let step = load(&dir)?;
            truncate_log(log, step)?;
            return Ok(dir.display().to_string());
        }
        let _ = std::fs::remove_file(log);
    }
    Ok(String::from("(none yet)"))
}

/// Whether the run's latest checkpoint is the one of `step` (so the end needs no new one).
fn has_checkpoint_of(run: &Path, step: u64) -> bool {
    latest_checkpoint(run).is_some_and(|d| d.ends_with(format!("step-{step:08}")))
}

/// The method's deliverable.
pub fn write_output(t: &Trainer, run: &Path) -> Result<PathBuf> {
    match t.cfg.method {
        Method::Lora => {
            let p = run.join("lora.safetensors");
            let mut meta = lora_metadata(t);
            // the record of the fusion (a learned schedule's sidecar is written first)
            meta.extend(crate::fusion_record::metadata_for_file(t, &p)?);
            let text = t.cfg.lora_text_encoder.then_some(&t.text);
            strata_models::lora_file::export_kohya_with_text(&t.unet, text, &p, meta)?;
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
            let mut meta = meta;
            meta.extend(crate::fusion_record::metadata_for_file(t, &p)?);
            strata_models::safetensors_io::save(&p, &tensors, Some(meta))?;
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
    add_text_encoder_metadata(t, &mut m);
    m
}

/// kohya's header entries about the text encoder (`ss_network_train_unet_only`,
/// `ss_text_encoder_lr`).
fn add_text_encoder_metadata(t: &Trainer, m: &mut HashMap<String, String>) {
    let te = t.cfg.lora_text_encoder;
    m.insert(
        "ss_network_train_unet_only".to_string(),
        if te { "False" } else { "True" }.to_string(),
    );
    if te {
        let lr = t.cfg.text_encoder_lr.unwrap_or(t.cfg.lr);
        m.insert("ss_text_encoder_lr".to_string(), format!("{lr}"));
    }
}

/// Full fine-tune output: a copy of the base diffusers folder with the trained UNet (and
/// text encoder, with `train_text_encoder`).
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
    strata_models::safetensors_io::save(
        &unet_dir.join("diffusion_pytorch_model.safetensors"),
        &tensors,
        Some(HashMap::from([("format".to_string(), "pt".to_string())])),
    )?;
    if let Some(tv) = t.full_text_vars() {
        // the trained text encoder, transformers key layout (`text_model.…`), f32; the
        // copied weights (any precision variant) are removed so no loader picks them
        let te_dir = tmp.join("text_encoder");
        std::fs::create_dir_all(&te_dir).map_err(io(&te_dir, "creating"))?;
        for e in std::fs::read_dir(&te_dir)
            .map_err(io(&te_dir, "listing"))?
            .flatten()
        {
            if e.file_name().to_string_lossy().ends_with(".safetensors") {
                std::fs::remove_file(e.path())
                    .map_err(io(&te_dir, "replacing the text-encoder weights"))?;
            }
        }
        let tensors: HashMap<String, Tensor> = tv
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        strata_models::safetensors_io::save(
            &te_dir.join("model.safetensors"),
            &tensors,
            Some(HashMap::from([("format".to_string(), "pt".to_string())])),
        )?;
    }
    // a complete StableDiffusionPipeline folder (scheduler, model_index.json entries)
    strata_models::diffusers_folder::complete_model_index(&tmp)?;
    crate::fusion_record::write_model_dir(t, &tmp)?;
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(io(&dst, "replacing"))?;
    }
    std::fs::rename(&tmp, &dst).map_err(io(&dst, "renaming into place"))?;
    Ok(dst)
}
