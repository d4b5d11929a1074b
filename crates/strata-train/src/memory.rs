//! The peak-memory estimate of a training run ([`strata_models::memory`]) from its
//! configuration, and the check against what the machine has available, made before the
//! model or any image is loaded and before the run folder is written.

use strata_models::fusion::FusionMode;
use strata_models::memory::{self, Available, Context, Estimate, TrainShape, Trained};

use crate::config::{Captions, Method, TrainConfig};
use crate::data::StreamOptions;
use crate::error::{Result, TrainError};

/// Training images a dataset lists (lines of its `metadata.jsonl`; 0 when unknown, e.g. for
/// a kohya dataset TOML). Only VAE training holds its images in memory.
fn listed_images(cfg: &TrainConfig) -> usize {
    std::fs::read_to_string(cfg.data.join("metadata.jsonl"))
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// The shape of one step of `cfg`.
pub fn train_shape(cfg: &TrainConfig) -> Result<TrainShape> {
    let trained = match cfg.method {
        Method::Lora => Trained::Lora {
            rank: cfg.lora_rank,
            targets: cfg.targets()?,
            text_encoder: cfg.lora_text_encoder,
        },
        Method::Full | Method::Dreambooth => Trained::Full {
            text_encoder: cfg.train_text_encoder,
        },
        Method::TextualInversion => Trained::TextualInversion {
            vectors: cfg.num_vectors,
        },
        Method::Vae => Trained::Vae { crop: cfg.vae_crop },
    };
    let (context, segments) = match (cfg.captions, cfg.fusion_mode) {
        (Captions::Flat, _) => (Context::Tokens(memory::CONTEXT_TOKENS), 1),
        (Captions::Hierarchical, FusionMode::Concat) => {
            (Context::Tokens(3 * memory::CONTEXT_TOKENS), 3)
        }
        (Captions::Hierarchical, FusionMode::Decoupled) => (Context::Segments, 3),
    };
    let stream = StreamOptions::default();
    // a bucketed run's largest batch has the area of resolution² at most
    Ok(TrainShape {
        trained,
        resolution: cfg.resolution,
        batch: cfg.batch_size,
        gradient_accumulation: cfg.gradient_accumulation,
        compute: cfg.mixed_precision.compute_dtype(),
        context,
        segments,
        prior_preservation: cfg.method == Method::Dreambooth,
        prefetch_batches: stream.depth,
        workers: stream.workers,
        cached_latents: cfg.cache_latents,
        held_images: if cfg.method == Method::Vae {
            listed_images(cfg)
        } else {
            0
        },
    })
}

/// The peak-memory estimate of a run of `cfg`: reads the model's configs and the headers of
/// its weight files, nothing else.
pub fn estimate(cfg: &TrainConfig) -> Result<Estimate> {
    let shape = memory::ModelShape::read(&cfg.model, None).map_err(|what| TrainError::Config {
        field: "model".into(),
        what,
    })?;
    Ok(memory::training(&shape, &train_shape(cfg)?))
}

/// The flags that lower a run's memory, with their values in `cfg`.
pub fn lowering_flags(cfg: &TrainConfig) -> String {
    let mut v = vec![
        format!("--batch-size (now {})", cfg.batch_size),
        format!("--resolution (now {})", cfg.resolution),
    ];
    if cfg.batch_size > 1 {
        v.push(format!(
            "--gradient-accumulation with a smaller --batch-size (same images per step; now {})",
            cfg.gradient_accumulation
        ));
    }
    if cfg.mixed_precision == crate::config::MixedPrecision::No
        && matches!(cfg.method, Method::Lora | Method::TextualInversion)
    {
        v.push("--mixed-precision bf16 (half-precision UNet and activations)".into());
    }
    if matches!(cfg.method, Method::Full | Method::Dreambooth) {
        v.push("--method lora (no UNet gradients or AdamW moments)".into());
    }
    if !cfg.cache_latents && cfg.method != Method::Vae {
        v.push("--cache-latents (no pixels in flight, no VAE encoding per step)".into());
    }
    v.join(", ")
}

/// The result of comparing an estimate with what is available.
#[derive(Debug, Clone)]
pub struct MemoryCheck {
    pub estimate: Estimate,
    pub available: Option<Available>,
}

impl MemoryCheck {
    /// Whether the estimate fits (true where nothing is known about the memory).
    pub fn fits(&self) -> bool {
        self.available
            .as_ref()
            .is_none_or(|a| self.estimate.total <= a.bytes)
    }

    /// The start-up line: estimate and what is available.
    pub fn summary(&self) -> String {
        match &self.available {
            Some(a) => format!(
                "memory estimate: {}; available {} ({})",
                self.estimate,
                memory::human(a.bytes),
                a.source
            ),
            None => format!(
                "memory estimate: {}; available memory unknown",
                self.estimate
            ),
        }
    }
}

/// Estimates `cfg`'s peak memory and reads what is available. On a GPU the estimate is of
/// device memory and is not compared with the host's.
pub fn check(cfg: &TrainConfig) -> Result<MemoryCheck> {
    let estimate = estimate(cfg)?;
    let available = memory::available_on(&cfg.device);
    Ok(MemoryCheck {
        estimate,
        available,
    })
}

/// The refusal of a run that does not fit: the estimate, what is available and the flags
/// that lower it.
pub fn refusal(cfg: &TrainConfig, c: &MemoryCheck) -> String {
    let (avail, source) = c
        .available
        .as_ref()
        .map(|a| (memory::human(a.bytes), a.source.clone()))
        .unwrap_or_default();
    format!(
        "this run needs about {} of memory at its peak, but {avail} is available ({source}); \
it would be killed when memory runs out. Estimate: {}. Lower it with {}; or pass --force to start anyway.",
        memory::human(c.estimate.total),
        c.estimate,
        lowering_flags(cfg)
    )
}
