//! Stage: generate every test caption with a trained LoRA — the flat caption for a flat
//! run, the three segments fused per timestep for a hierarchical one, as the LoRA records it
//! was trained — as `strata generate` does, in batches ([`Job`]). Each image is written
//! under a temporary name and renamed; a batch whose images all exist is skipped, so an
//! interrupted stage resumes.

use std::path::Path;

use anyhow::Context;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use strata_caption::MetadataRecord;
use strata_models::clip::{DType, Device};
use strata_models::fusion::record::{conditioning_source, CaptionMode, CaptionText};
use strata_models::pipeline::{self, GenerateOptions};
use strata_models::schedulers::{self, Sampler};
use strata_models::segments::SegmentTexts;

fn batch_seed(seed: u64, batch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(batch as u64 + 1)
}

/// Generating a list of caption records with one LoRA: the caption mode and fusion the LoRA
/// records it was trained with (the one-sentence caption `flat_text(record)` for a flat LoRA,
/// the three segments fused per timestep for a hierarchical one), DDIM with classifier-free
/// guidance, in batches of `batch` whose noise seed depends only on `seed` and the batch's
/// position: two jobs over the same records with the same seed and batch draw the same noise
/// for every image.
pub struct Job<'a> {
    pub model: &'a Path,
    pub lora: &'a Path,
    pub records: &'a [MetadataRecord],
    pub flat_text: &'a (dyn Fn(&MetadataRecord) -> String + Sync),
    pub out: &'a Path,
    pub steps: usize,
    pub cfg: f64,
    pub batch: usize,
    pub resolution: usize,
    pub seed: u64,
    /// Written into each image's settings (`Captions`) and caption chunk.
    pub label: &'a str,
    /// The PNG `Software` text.
    pub software: &'a str,
}

impl Job<'_> {
    /// Runs the job; `bar` counts images (its length is the caller's).
    pub fn run(&self, dev: &Device, bar: &ProgressBar) -> anyhow::Result<Value> {
        let start = std::time::Instant::now();
        let (tests, out, lora) = (self.records, self.out, self.lora);
        bar.set_message("loading the model");
        let loaded = pipeline::load_model(self.model, None, None, DType::F32, dev)
            .with_context(|| format!("loading {}", self.model.display()))?;
        let mut unet = loaded.models.unet;
        let imported = strata_models::lora_file::import(&unet, lora, dev)
            .with_context(|| format!("reading {}", lora.display()))?;
        strata_models::lora_file::install(&mut unet, &imported, 1.0)
            .with_context(|| format!("installing {}", lora.display()))?;
        strata_models::lora::set_multiplier(&mut unet, 1.0);
        // the caption mode and fusion the LoRA records it was trained with
        let applied =
            strata_models::fusion::record::resolve(Some(lora), None, &Default::default(), dev)
                .with_context(|| format!("reading the fusion recorded in {}", lora.display()))?;
        let flat_run = applied.record.captions == CaptionMode::Flat;
        let pipe = pipeline::Pipeline {
            unet: &unet,
            vae: &loaded.models.vae,
        };
        let sched_cfg = schedulers::read_model_scheduler_config(self.model)?.unwrap_or_default();
        let mut written = 0usize;
        let mut skipped = 0usize;
        for (bi, chunk) in tests.chunks(self.batch.max(1)).enumerate() {
            let paths: Vec<_> = chunk.iter().map(|r| out.join(&r.file_name)).collect();
            if paths.iter().all(|p| p.is_file()) {
                skipped += chunk.len();
                bar.inc(chunk.len() as u64);
                continue;
            }
            let captions: Vec<CaptionText> = chunk
                .iter()
                .map(|r| CaptionText {
                    segments: SegmentTexts::new(&r.scene, &r.relation, &r.elements),
                    flat: Some((self.flat_text)(r)),
                })
                .collect();
            let source = conditioning_source(
                &applied.record,
                &loaded.text,
                &loaded.tokenizer,
                &Default::default(),
                &captions,
            )?;
            let opts = GenerateOptions {
                steps: self.steps,
                guidance_scale: self.cfg,
                seed: batch_seed(self.seed, bi),
                batch: chunk.len(),
                width: self.resolution,
                height: self.resolution,
                // DDIM (η = 0) on the model's noise schedule
                sampler: Sampler::Ddim,
                scheduler: sched_cfg.clone(),
                ..Default::default()
            };
            bar.set_message(format!("batch {} (denoising)", bi + 1));
            let images = pipe.generate(source.as_ref(), &opts, None, &mut |i, m| {
                bar.set_message(format!("batch {} step {i}/{m}", bi + 1));
            })?;
            let rgb = pipeline::to_rgb8(&images)?;
            for ((px, r), path) in rgb.iter().zip(chunk).zip(&paths) {
                let prompt = if flat_run {
                    (self.flat_text)(r)
                } else {
                    SegmentTexts::new(&r.scene, &r.relation, &r.elements).joined()
                };
                let settings: Vec<(&str, String)> = vec![
                    ("Steps", self.steps.to_string()),
                    ("Sampler", Sampler::Ddim.display_name().into()),
                    ("CFG scale", self.cfg.to_string()),
                    ("Seed", opts.seed.to_string()),
                    ("Size", format!("{0}x{0}", self.resolution)),
                    ("Lora", lora.display().to_string()),
                    ("Captions", self.label.to_string()),
                ];
                let caption = json!({"scene": r.scene, "relation": r.relation,
                                     "elements": r.elements, "text": r.text, "captions": self.label});
                let text = vec![
                    ("parameters", pipeline::a1111_parameters(&prompt, &settings)),
                    ("caption", caption.to_string()),
                    ("Software", self.software.to_string()),
                ];
                // atomic: a temporary file in the same folder, renamed when complete
                strata_image::write_png_with_text(
                    path,
                    px,
                    self.resolution,
                    self.resolution,
                    &text,
                )
                .with_context(|| format!("writing {}", path.display()))?;
                written += 1;
            }
            bar.inc(chunk.len() as u64);
        }
        Ok(json!({
            "images": tests.len(),
            "written_now": written,
            "kept_from_earlier": skipped,
            "steps": self.steps,
            "cfg": self.cfg,
            "lora": lora.display().to_string(),
            "lora_adapters": imported.adapters.len(),
            "fusion": applied.summary,
            "seconds": start.elapsed().as_secs_f64(),
        }))
    }
}
