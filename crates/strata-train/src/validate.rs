//! Validation images: a few fixed prompts sampled with the current weights (DDIM, CFG) into
//! the run folder, `validation/step-NNNNNNNN-P.png`, prompt and settings in PNG text chunks.

use std::path::Path;

use strata_models::conditioning::Conditioning;
use strata_models::pipeline::{
    ConditioningSource, FixedConditioning, FusedSegments, GenerateOptions, Pipeline,
};
use strata_models::segments::SegmentTexts;

use crate::error::{ce, Result, TrainError};
use crate::trainer::Trainer;

/// Samples every validation prompt of `t.cfg` once (seed = run seed + prompt index).
pub fn validation_images(t: &Trainer, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
        path: dir.to_path_buf(),
        what: "creating",
        source: e,
    })?;
    let mut out = vec![];
    for (i, prompt) in t.cfg.validation_prompts.iter().enumerate() {
        let source: Box<dyn ConditioningSource> = match &t.fusion {
            Some(f) => {
                let seg = strata_models::segments::encode_segments(
                    &t.text,
                    &t.tokenizer,
                    &[SegmentTexts::parse(prompt)],
                )
                .map_err(ce("validation prompt"))?;
                let un = strata_models::segments::encode_segments(
                    &t.text,
                    &t.tokenizer,
                    &[SegmentTexts::unconditional()],
                )
                .map_err(ce("validation prompt"))?;
                Box::new(FusedSegments {
                    segments: seg,
                    uncond_segments: un,
                    fusion: f.clone(),
                })
            }
            None => {
                let c =
                    strata_models::segments::encode_flat(&t.text, &t.tokenizer, &[prompt.as_str()])
                        .map_err(ce("validation prompt"))?;
                let u = strata_models::segments::encode_flat(&t.text, &t.tokenizer, &[""])
                    .map_err(ce("validation prompt"))?;
                Box::new(FixedConditioning {
                    cond: Conditioning::Context(c),
                    uncond: Conditioning::Context(u),
                })
            }
        };
        let opts = GenerateOptions {
            steps: t.cfg.validation_steps.max(1),
            seed: t.cfg.seed.wrapping_add(i as u64),
            width: t.cfg.resolution,
            height: t.cfg.resolution,
            ..GenerateOptions::default()
        };
        let pipe = Pipeline {
            unet: &t.unet,
            vae: &t.vae,
        };
        let img = pipe
            .generate(source.as_ref(), &opts, None, &mut |_, _| {})
            .map_err(ce("validation sampling"))?;
        let rgb = strata_models::pipeline::to_rgb8(&img).map_err(ce("validation image"))?;
        let p = dir.join(format!("step-{:08}-{i}.png", t.step));
        let params = strata_models::pipeline::a1111_parameters(
            prompt,
            &[
                ("Steps", opts.steps.to_string()),
                ("CFG scale", opts.guidance_scale.to_string()),
                ("Seed", opts.seed.to_string()),
                ("Training step", t.step.to_string()),
            ],
        );
        strata_image::write_png_with_text(
            &p,
            &rgb[0],
            opts.width,
            opts.height,
            &[("parameters", params)],
        )?;
        out.push(p);
    }
    Ok(out)
}
