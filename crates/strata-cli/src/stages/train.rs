//! Stage: one LoRA fine-tune as `strata train` runs it, with a progress bar, resuming from
//! the run folder's latest checkpoint (a folder left before its first checkpoint is started
//! again). Used by `strata study` (and so by `strata demo`).

use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strata_train::TrainConfig;

use super::stage_bar;

/// Trains `cfg` (its `out` is the run folder) under the bar prefix `[k/n] name`; the summary
/// holds the steps, the final loss and the seconds per step of this invocation.
pub fn run(cfg: TrainConfig, name: &str, k: usize, n: usize) -> anyhow::Result<Value> {
    let out = cfg.out.clone();
    let resume = strata_train::run::latest_checkpoint(&out).is_some();
    if !resume && out.exists() {
        // interrupted before its first checkpoint: start it again from scratch
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let steps = cfg.max_steps.unwrap_or(0);
    let (batch, lr, rank, targets) = (
        cfg.batch_size,
        cfg.lr,
        cfg.lora_rank,
        cfg.lora_targets.clone(),
    );
    let bar = stage_bar(k, n, name, steps, "steps");
    let start = Instant::now();
    let mut first: Option<u64> = None;
    let mut on_status = |s: &str| bar.set_message(s.to_string());
    let mut on_step = |r: &strata_train::StepReport| {
        let s0 = *first.get_or_insert(r.step - 1);
        bar.set_position(r.step);
        let rate = (r.step - s0) as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("loss {:.4} {:.2} it/s", r.loss, rate));
    };
    let s = strata_train::train(
        cfg,
        strata_train::RunOptions {
            resume,
            on_status: &mut on_status,
            on_step: &mut on_step,
        },
    )
    .with_context(|| format!("training {name} in {}", out.display()))?;
    bar.finish_and_clear();
    if !s.skipped_images.is_empty() {
        bail!(
            "{} training image(s) could not be read, first: {} ({})",
            s.skipped_images.len(),
            s.skipped_images[0].0,
            s.skipped_images[0].1
        );
    }
    let done_now = s.steps - first.map(|f| f.min(s.steps)).unwrap_or(s.steps);
    Ok(json!({
        "steps": s.steps,
        "steps_this_invocation": done_now,
        "resumed": resume,
        "batch": batch,
        "lr": lr,
        "lora_rank": rank,
        "lora_targets": targets,
        "final_loss": s.final_loss,
        "output": s.output.display().to_string(),
        "seconds_per_step": if done_now > 0 { start.elapsed().as_secs_f64() / done_now as f64 } else { f64::NAN },
    }))
}
