//! safetensors files through every strata reader of them: the plain reader
//! (`safetensors_io::load`), textual-inversion embeddings, LoRA import in the kohya and the
//! diffusers / PEFT layouts (resolved against a tiny UNet and a tiny text encoder), and the
//! single-file LDM checkpoint loader (key mapping and the checked model build). Arbitrary
//! bytes must give a value or an error, never a panic, an abort or an allocation the file
//! does not justify.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use libfuzzer_sys::fuzz_target;
use strata_models::clip::{ClipTextConfig, ClipTextTransformer};
use strata_models::unet::{UNet2DConditionModel, UNetConfig};
use strata_models::vae::VaeConfig;
use strata_models::{embeddings, loading, lora_file, safetensors_io};

struct Models {
    unet: UNet2DConditionModel,
    text: ClipTextTransformer,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        Models {
            unet: UNet2DConditionModel::new(UNetConfig::tiny(), vb.clone()).expect("tiny UNet"),
            text: ClipTextTransformer::new(&ClipTextConfig::tiny(), vb.pp("text_model"))
                .expect("tiny text encoder"),
        }
    })
}

/// The file the readers open (they take paths); one per process, rewritten for each input.
fn file(data: &[u8]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temporary folder"));
    let p = dir.path().join("fuzz.safetensors");
    std::fs::write(&p, data).expect("write the input");
    p
}

fuzz_target!(|data: &[u8]| {
    let m = models();
    let p = file(data);
    let dev = Device::Cpu;
    if safetensors_io::load(&p, &dev).is_err() {
        // every reader below starts with the same parse
        return;
    }
    let _ = embeddings::load_embedding(&p, None, &dev);
    let _ = lora_file::import_with_text(&m.unet, Some(&m.text), &p, &dev);
    let _ = loading::load_single_file(&p, UNetConfig::tiny(), VaeConfig::tiny(), DType::F32, &dev);
});
