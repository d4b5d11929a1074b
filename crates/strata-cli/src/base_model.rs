//! The embedded default base model (issue 9): a small SD-1.5-layout model pretrained by
//! `strata train` on synthetic scenes, used when `--model` is not given.

use std::path::PathBuf;

/// Returns a diffusers folder holding the base model, materialising it on first use.
pub fn ensure() -> anyhow::Result<PathBuf> {
    anyhow::bail!("the embedded base model is not built into this version yet (issue 9); pass --model PATH")
}
