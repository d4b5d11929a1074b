//! End to end: the `strata generate` flow (load model → tokenizer + text encoder → segment
//! fusion → DDIM with CFG → images) on a tiny random model written to disk in both layouts
//! (diffusers folder and single-file LDM checkpoint); both must give identical images.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strata_models::clip::{ClipTextConfig, ClipTextTransformer};
use strata_models::fusion::{FixedSchedule, Fusion, FusionMode, Schedule};
use strata_models::pipeline::*;
use strata_models::segments::{encode_segments, SegmentTexts};
use strata_models::tokenizer::bytes_to_unicode;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusion")
}

/// A byte-level CLIP-format tokenizer (vocab.json + merges.txt) with a few merges.
fn write_tokenizer(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = bytes_to_unicode()
        .iter()
        .map(|(_, c)| c.to_string())
        .collect();
    let w: Vec<String> = vocab.iter().map(|v| format!("{v}</w>")).collect();
    vocab.extend(w);
    vocab.extend([
        "th".to_string(),
        "the</w>".to_string(),
        "<|startoftext|>".to_string(),
        "<|endoftext|>".to_string(),
    ]);
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::Value::Object(map).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\nt h\nth e</w>\n").unwrap();
    vocab.len()
}

/// Random text-encoder tensors (names `text_model.*`).
fn random_text_encoder(cfg: &ClipTextConfig) -> HashMap<String, Tensor> {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    ClipTextTransformer::new(cfg, vb.pp("text_model")).unwrap();
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let dims = data[n].dims().to_vec();
            let t = (seeded_normal(&dims, 1000 + i as u64, &Device::Cpu).unwrap() * 0.2).unwrap();
            let t = if dims.len() == 1 && n.contains("norm") && n.ends_with("weight") {
                (t + 1.0).unwrap()
            } else {
                t
            };
            (n.clone(), t)
        })
        .collect()
}

fn write_models(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    // diffusers folder: the UNet/VAE fixtures plus a text encoder and tokenizer
    let dif = root.join("tiny-diffusers");
    for c in ["unet", "vae"] {
        let d = dif.join(c);
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(fixtures().join("tiny_model").join(c)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
    }
    let vocab = write_tokenizer(&dif.join("tokenizer"));
    let cfg = ClipTextConfig {
        vocab_size: vocab,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        ..ClipTextConfig::tiny()
    };
    let te = random_text_encoder(&cfg);
    std::fs::create_dir_all(dif.join("text_encoder")).unwrap();
    candle_core::safetensors::save(&te, dif.join("text_encoder/model.safetensors")).unwrap();
    std::fs::write(
        dif.join("text_encoder/config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    // single file: the LDM fixture plus cond_stage_model.transformer.text_model.*
    let mut all =
        candle_core::safetensors::load(fixtures().join("tiny_ldm.safetensors"), &Device::Cpu)
            .unwrap();
    for (k, v) in te {
        all.insert(format!("cond_stage_model.transformer.{k}"), v);
    }
    let single = root.join("tiny.safetensors");
    candle_core::safetensors::save(&all, &single).unwrap();
    (dif.clone(), single, dif.join("tokenizer"))
}

fn generate(
    model: &Path,
    tok: Option<&Path>,
    configs: Option<&Path>,
    mode: FusionMode,
) -> Vec<Vec<u8>> {
    let m = load_model(model, tok, configs, DType::F32, &Device::Cpu).unwrap();
    let caption = SegmentTexts::new(
        "the harbour",
        "ships beside the pier",
        &["three ships".to_string(), "a pier".to_string()],
    );
    let s = encode_segments(&m.text, &m.tokenizer, &[caption]).unwrap();
    let u = encode_segments(&m.text, &m.tokenizer, &[SegmentTexts::unconditional()]).unwrap();
    let src = FusedSegments {
        segments: s,
        uncond_segments: u,
        fusion: Fusion::new(Schedule::Fixed(FixedSchedule::default()), mode),
    };
    let opts = GenerateOptions {
        steps: 3,
        guidance_scale: 7.0,
        seed: 42,
        batch: 2,
        width: 16,
        height: 16,
        ..Default::default()
    };
    let p = Pipeline {
        unet: &m.models.unet,
        vae: &m.models.vae,
    };
    to_rgb8(&p.generate(&src, &opts, None, &mut |_, _| {}).unwrap()).unwrap()
}

#[test]
fn generate_on_tiny_model_in_both_layouts_gives_identical_images() {
    let tmp = tempfile::tempdir().unwrap();
    // STRATA_TINY_MODEL_OUT=DIR keeps the two models (for trying `strata generate` by hand)
    let root = std::env::var_os("STRATA_TINY_MODEL_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let (dif, single, tok) = write_models(&root);
    let configs = dif.clone();
    for mode in [FusionMode::Concat, FusionMode::Decoupled] {
        let a = generate(&dif, None, None, mode);
        let b = generate(&single, Some(&tok), Some(&configs), mode);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].len(), 16 * 16 * 3);
        assert_eq!(a, b, "{mode:?}: layouts disagree");
        // not a constant image
        assert!(a[0].iter().any(|&x| x != a[0][0]));
    }
    // a single file without a tokenizer is a clear error
    let e = load_model(&single, None, Some(&configs), DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("tokenizer"), "{e}");
    // the single file with SD-1.5 configs does not fit: the error lists tensors
    let e = load_model(&single, Some(&tok), None, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("mis-shaped") || msg.contains("missing"),
        "{msg}"
    );
}
