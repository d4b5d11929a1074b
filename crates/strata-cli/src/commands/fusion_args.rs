//! The options of `strata generate` that choose the caption mode and the fusion. By
//! default generation applies what the LoRA (or the model folder) records about how it was
//! trained; each option given here replaces that part of the record.

use crate::commands::numbers;
use std::path::{Path, PathBuf};

use anyhow::Context;
use strata_models::clip::Device;
use strata_models::fusion::record::{
    self, AppliedFusion, CaptionMode, FusionOverrides, ScheduleChoice,
};
use strata_models::fusion::FusionMode;

#[derive(clap::Args, Debug, Default, Clone)]
pub struct FusionArgs {
    /// How the segments reach the cross-attention [default: what the LoRA or model records,
    /// else concat].
    #[arg(long = "fusion-mode", alias = "fusion", value_enum)]
    pub fusion_mode: Option<FusionMode>,
    /// Caption mode: hierarchical (three segment windows, fused) or flat (the segments
    /// joined into one prompt) [default: what the LoRA or model records, else hierarchical].
    #[arg(long, value_enum)]
    pub captions: Option<CaptionMode>,
    /// Segment weights w(t): fixed curves, the recorded learned schedule, or uniform
    /// [default: what the LoRA or model records, else fixed].
    #[arg(long, value_enum)]
    pub fusion_schedule: Option<ScheduleChoice>,
    /// Fixed schedule peaks (scene,relation,elements) in s = t/(T−1) [default: the recorded
    /// ones, else 1,0.5,0]. Implies --fusion-schedule fixed.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "S,S,S", value_parser = numbers::unit)]
    pub fusion_centers: Option<Vec<f64>>,
    /// Fixed schedule widths σ (scene,relation,elements) [default: the recorded ones, else
    /// 0.3,0.3,0.3]. Implies --fusion-schedule fixed.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "W,W,W", value_parser = numbers::positive)]
    pub fusion_widths: Option<Vec<f64>>,
    /// Fixed schedule floor [default: the recorded one, else 0.05]. Implies
    /// --fusion-schedule fixed.
    #[arg(long, value_name = "F", value_parser = numbers::non_negative)]
    pub fusion_floor: Option<f64>,
    /// A learned schedule's weights: a `<lora>.fusion.safetensors` file written by training,
    /// a model folder's fusion/schedule.safetensors, or a LoRA or model folder recording
    /// one. Implies --fusion-schedule learned.
    #[arg(long, value_name = "FILE")]
    pub fusion_weights: Option<PathBuf>,
}

fn three(flag: &str, v: &Option<Vec<f64>>) -> anyhow::Result<Option<[f64; 3]>> {
    v.as_ref()
        .map(|v| {
            <[f64; 3]>::try_from(v.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "{flag}: give three comma-separated values (scene,relation,elements), got {}",
                    v.len()
                )
            })
        })
        .transpose()
}

impl FusionArgs {
    pub fn overrides(&self) -> anyhow::Result<FusionOverrides> {
        Ok(FusionOverrides {
            captions: self.captions,
            mode: self.fusion_mode,
            schedule: self.fusion_schedule,
            centers: three("--fusion-centers", &self.fusion_centers)?,
            widths: three("--fusion-widths", &self.fusion_widths)?,
            floor: self.fusion_floor,
            weights: self.fusion_weights.clone(),
        })
    }

    /// The record of `lora` (else of the `model` folder) with these options applied.
    pub fn resolve(
        &self,
        lora: Option<&Path>,
        model: &Path,
        device: &Device,
    ) -> anyhow::Result<AppliedFusion> {
        let ov = self.overrides()?;
        record::resolve(lora, Some(model), &ov, device).with_context(|| match lora {
            Some(l) => format!("the fusion recorded in {}", l.display()),
            None => format!("the fusion recorded in {}", model.display()),
        })
    }
}
