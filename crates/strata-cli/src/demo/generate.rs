//! Stage: generate every test caption with a trained LoRA — the flat caption for the flat
//! run, the three segments fused per timestep for the hierarchical run, as the LoRA records
//! it was trained — as `strata generate` does, in batches. Each image is written under a
//! temporary name and renamed; a batch whose images all exist is skipped, so an interrupted
//! stage resumes.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};
use strata_caption::dataset::Split;
use strata_models::clip::{DType, Device};
use strata_models::fusion::record::{conditioning_source, CaptionMode, CaptionText};
use strata_models::pipeline::{self, GenerateOptions};
use strata_models::schedulers::{self, Sampler};
use strata_models::segments::SegmentTexts;

use super::{stage_bar, Plan};

fn batch_seed(seed: u64, batch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(batch as u64 + 1)
}

/// Generates the test split of `run/dataset` with `run/runs/<kind>/lora.safetensors` into
/// `run/gen/<kind>`.
pub fn generate(
    run: &Path,
    plan: &Plan,
    kind: &str,
    dev: &Device,
    k: usize,
    n: usize,
) -> anyhow::Result<Value> {
    let start = std::time::Instant::now();
    let dataset = run.join("dataset");
    let mut tests: Vec<_> = strata_caption::read_dataset(&dataset)
        .with_context(|| format!("reading {}/metadata.jsonl", dataset.display()))?
        .into_iter()
        .filter(|r| r.split == Some(Split::Test))
        .collect();
    tests.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    let out = run.join("gen").join(kind);
    let bar = stage_bar(
        k,
        n,
        &format!("generate {kind}"),
        tests.len() as u64,
        "images",
    );
    bar.set_message("loading the model");
    let loaded = pipeline::load_model(&plan.model, None, None, DType::F32, dev)
        .with_context(|| format!("loading {}", plan.model.display()))?;
    let mut unet = loaded.models.unet;
    let lora = run.join("runs").join(kind).join("lora.safetensors");
    let imported = strata_models::lora_file::import(&unet, &lora, dev)
        .with_context(|| format!("reading {}", lora.display()))?;
    strata_models::lora_file::install(&mut unet, &imported, 1.0)
        .with_context(|| format!("installing {}", lora.display()))?;
    strata_models::lora::set_multiplier(&mut unet, 1.0);
    // the caption mode and fusion the LoRA records it was trained with
    let applied = strata_models::fusion::record::resolve(
        Some(lora.as_path()),
        None,
        &Default::default(),
        dev,
    )
    .with_context(|| format!("reading the fusion recorded in {}", lora.display()))?;
    let flat_run = applied.record.captions == CaptionMode::Flat;
    let pipe = pipeline::Pipeline {
        unet: &unet,
        vae: &loaded.models.vae,
    };
    let sched_cfg = schedulers::read_model_scheduler_config(&plan.model)?.unwrap_or_default();
    let mut written = 0usize;
    let mut skipped = 0usize;
    for (bi, chunk) in tests.chunks(plan.gen_batch.max(1)).enumerate() {
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
                flat: Some(r.text.clone()),
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
            steps: plan.gen_steps,
            guidance_scale: plan.gen_cfg,
            seed: batch_seed(plan.seed, bi),
            batch: chunk.len(),
            width: plan.resolution,
            height: plan.resolution,
            // the demo samples with DDIM (η = 0) on the model's noise schedule
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
                r.text.clone()
            } else {
                SegmentTexts::new(&r.scene, &r.relation, &r.elements).joined()
            };
            let settings: Vec<(&str, String)> = vec![
                ("Steps", plan.gen_steps.to_string()),
                ("Sampler", Sampler::Ddim.display_name().into()),
                ("CFG scale", plan.gen_cfg.to_string()),
                ("Seed", opts.seed.to_string()),
                ("Size", format!("{0}x{0}", plan.resolution)),
                ("Lora", lora.display().to_string()),
                ("Captions", kind.to_string()),
            ];
            let caption = json!({"scene": r.scene, "relation": r.relation,
                                 "elements": r.elements, "text": r.text, "captions": kind});
            let text = vec![
                ("parameters", pipeline::a1111_parameters(&prompt, &settings)),
                ("caption", caption.to_string()),
                ("Software", "strata demo".to_string()),
            ];
            // atomic: a temporary file in the same folder, renamed when complete
            strata_image::write_png_with_text(path, px, plan.resolution, plan.resolution, &text)
                .with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(json!({
        "images": tests.len(),
        "written_now": written,
        "kept_from_earlier": skipped,
        "steps": plan.gen_steps,
        "cfg": plan.gen_cfg,
        "lora": lora.display().to_string(),
        "lora_adapters": imported.adapters.len(),
        "fusion": applied.summary,
        "seconds": start.elapsed().as_secs_f64(),
    }))
}
