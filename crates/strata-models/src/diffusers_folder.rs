//! The parts of a diffusers `StableDiffusionPipeline` folder that strata writes besides the
//! weights: `model_index.json` with every component `from_pretrained` looks up, and the
//! scheduler configuration. A folder that strata writes (a model from `strata init`, the
//! output of a full or DreamBooth run) loads in diffusers as it is.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{io, ModelError, Result};

/// The pipeline class recorded in `model_index.json`.
pub const PIPELINE_CLASS: &str = "StableDiffusionPipeline";

/// `(component, library, class)` of the components strata's folders hold, as diffusers
/// records them.
pub const COMPONENTS: [(&str, &str, &str); 4] = [
    ("unet", "diffusers", "UNet2DConditionModel"),
    ("vae", "diffusers", "AutoencoderKL"),
    ("text_encoder", "transformers", "CLIPTextModel"),
    ("tokenizer", "transformers", "CLIPTokenizer"),
];

/// Optional components of a `StableDiffusionPipeline` that strata's folders leave out:
/// recorded as `[null, null]`, which `from_pretrained` reads as "none".
pub const ABSENT_COMPONENTS: [&str; 3] = ["safety_checker", "feature_extractor", "image_encoder"];

/// The scheduler class named by `scheduler/scheduler_config.json` (`_class_name`), if any.
fn scheduler_class(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("scheduler/scheduler_config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("_class_name")?.as_str().map(str::to_string)
}

/// Makes `dir` a complete `StableDiffusionPipeline` folder for diffusers: writes
/// `scheduler/scheduler_config.json` when missing (SD-1.5's schedule), and adds to
/// `model_index.json` (created when missing) every component entry it lacks: `unet`, `vae`,
/// `text_encoder`, `tokenizer`, `scheduler` (the class of the scheduler configuration),
/// `[null, null]` for the absent safety checker, feature extractor and image encoder, and
/// `requires_safety_checker = false`. Entries already present are kept. Written atomically.
pub fn complete_model_index(dir: &Path) -> Result<()> {
    crate::schedulers::ensure_scheduler_config(dir).map_err(io(dir, "writing scheduler/"))?;
    let path = dir.join("model_index.json");
    let mut index: serde_json::Map<String, Value> = if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(io(&path, "reading"))?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                return Err(ModelError::Format {
                    path: path.clone(),
                    what: "not a JSON object; a diffusers model_index.json maps component names to [library, class]".into(),
                })
            }
        }
    } else {
        serde_json::Map::new()
    };
    index
        .entry("_class_name")
        .or_insert_with(|| json!(PIPELINE_CLASS));
    index
        .entry("_diffusers_version")
        .or_insert_with(|| json!("0.35.2"));
    for (name, lib, class) in COMPONENTS {
        index.entry(name).or_insert_with(|| json!([lib, class]));
    }
    let sched = scheduler_class(dir).unwrap_or_else(|| "PNDMScheduler".to_string());
    index
        .entry("scheduler")
        .or_insert_with(|| json!(["diffusers", sched]));
    for name in ABSENT_COMPONENTS {
        index.entry(name).or_insert_with(|| json!([null, null]));
    }
    index
        .entry("requires_safety_checker")
        .or_insert_with(|| json!(false));
    let text = serde_json::to_string_pretty(&Value::Object(index)).expect("json");
    crate::safetensors_io::write_atomic(&path, text.as_bytes())
}
