//! strata-train: fine-tuning methods (LoRA, DreamBooth, textual inversion, full), optimiser,
//! schedules, checkpoints and resume.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod fusion_record;
pub mod memory;
pub mod optim;
pub mod run;
pub mod trainer;
pub mod vae_train;
pub mod validate;

pub use config::{Captions, FusionKind, Method, TrainConfig};
pub use error::{Result, TrainError};
pub use run::{train, RunOptions, RunSummary};
pub use trainer::{StepReport, Trainer};
