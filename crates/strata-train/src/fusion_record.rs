//! The record of how a run was trained on the text side (caption mode, fusion mode, fixed
//! schedule parameters or learned schedule weights), written with every output so
//! generation applies what training learned. The format and the reader are in
//! [`strata_models::fusion::record`]; this module builds the record from a [`Trainer`] and
//! exposes the trainer's conditioning of one caption, to check generation against it.

use std::collections::HashMap;
use std::path::Path;

use strata_models::conditioning::Conditioning;
use strata_models::fusion::record::CaptionMode;
use strata_models::fusion::{FusionRecord, Schedule};

use crate::config::Captions;
use crate::error::Result;
use crate::trainer::Trainer;

impl Trainer {
    /// How this run conditions the UNet: its caption mode, fusion mode and (current) schedule.
    pub fn fusion_record(&self) -> FusionRecord {
        match (&self.fusion, self.cfg.captions) {
            (Some(f), Captions::Hierarchical) => FusionRecord::hierarchical(f),
            _ => FusionRecord {
                captions: match self.cfg.captions {
                    Captions::Flat => CaptionMode::Flat,
                    Captions::Hierarchical => CaptionMode::Hierarchical,
                },
                mode: self.cfg.fusion_mode,
                schedule: Schedule::Fixed(self.cfg.fixed_schedule()),
            },
        }
    }

    /// The conditioning the training loop hands the UNet for training item `item` (its
    /// caption, not dropped) at timestep `t`: the same code path as a training step.
    pub fn item_conditioning(&self, item: usize, t: f64) -> Result<Conditioning> {
        self.conditioning(&self.data, &self.enc, &[item], &[false], &[t])
    }
}

/// Writes a learned schedule's sidecar next to `file` (a LoRA or embedding about to be
/// written) and returns the header entries recording the run's fusion.
pub fn metadata_for_file(t: &Trainer, file: &Path) -> Result<HashMap<String, String>> {
    Ok(t.fusion_record().write_for_file(file)?)
}

/// Writes `<dir>/fusion/` (the record of a full fine-tune or DreamBooth model folder).
pub fn write_model_dir(t: &Trainer, dir: &Path) -> Result<()> {
    Ok(t.fusion_record().write_to_model_dir(dir)?)
}
