//! strata-train: fine-tuning methods (LoRA, DreamBooth, textual inversion, full), optimiser,
//! schedules, checkpoints and resume.
