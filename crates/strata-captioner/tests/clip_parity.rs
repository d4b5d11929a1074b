//! CLIP embeddings against transformers and open_clip (scripts/fixtures/clip_tiny.py):
//! the tiny transformers CLIP shared with strata-eval, and a tiny open_clip CLIP in the hub
//! layout (safetensors + open_clip_config.json) and as a torch training checkpoint (.pt).
//! Tolerance: 1e-4 absolute on every embedding component.

use std::path::{Path, PathBuf};

use candle_core::Device;
use strata_captioner::open_clip::{ClipLayout, ClipModel, ClipOptions};
use strata_image::RgbImage;

fn fx() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip")
}

fn hf_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../strata-eval/tests/fixtures/clip_tiny")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fx().join("expected.json")).unwrap()).unwrap()
}

fn images(exp: &serde_json::Value) -> Vec<RgbImage> {
    exp["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| strata_image::read_rgb8(&fx().join("labelled").join(n.as_str().unwrap())).unwrap())
        .collect()
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{what}: columns");
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("{what}: max |diff| {worst:.2e}");
    assert!(worst < 1e-4, "{what}: max |diff| {worst}");
}

fn check(model: &ClipModel, exp: &serde_json::Value, key: &str) {
    let imgs = images(exp);
    assert_eq!(
        model.embed_dim,
        exp[key]["image"][0].as_array().unwrap().len()
    );
    let got = model
        .image_embeddings(&imgs)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_close(&got, &matrix(&exp[key]["image"]), &format!("{key} image"));
    let prompts: Vec<String> = exp["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let got = model
        .text_embeddings(&prompts)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_close(&got, &matrix(&exp[key]["text"]), &format!("{key} text"));
}

#[test]
fn transformers_folder_matches_transformers() {
    let exp = expected();
    let m = ClipModel::load(&hf_dir(), &Device::Cpu, &ClipOptions::default()).unwrap();
    assert_eq!(m.layout, ClipLayout::Transformers);
    check(&m, &exp, "hf");
}

#[test]
fn open_clip_hub_folder_matches_open_clip() {
    let exp = expected();
    let m = ClipModel::load(
        &fx().join("open_clip"),
        &Device::Cpu,
        &ClipOptions::default(),
    )
    .unwrap();
    assert_eq!(m.layout, ClipLayout::OpenClip);
    assert!(
        m.notes.iter().any(|n| n.contains("quick_gelu=false")),
        "{:?}",
        m.notes
    );
    check(&m, &exp, "open_clip");
}

#[test]
fn open_clip_torch_checkpoint_matches_open_clip() {
    let exp = expected();
    // A training checkpoint ({"epoch", "state_dict"}, `module.` prefixes) without a config
    // beside it: the tiny model's head counts come from the config given as an option.
    let opts = ClipOptions {
        config: Some(fx().join("open_clip/open_clip_config.json")),
        ..Default::default()
    };
    let m = ClipModel::load(
        &fx().join("open_clip_pt/tiny-open-clip.pt"),
        &Device::Cpu,
        &opts,
    )
    .unwrap();
    assert_eq!(m.layout, ClipLayout::OpenClip);
    check(&m, &exp, "open_clip");
}

#[test]
fn quick_gelu_option_against_the_config_is_refused() {
    let opts = ClipOptions {
        quick_gelu: Some(true),
        ..Default::default()
    };
    let e = ClipModel::load(&fx().join("open_clip"), &Device::Cpu, &opts)
        .err()
        .expect("conflict")
        .to_string();
    assert!(
        e.contains("open_clip_config.json") && e.contains("quick_gelu"),
        "{e}"
    );
}

#[test]
fn quick_gelu_changes_the_open_clip_embeddings() {
    // Without the config's answer the option decides, and it matters: the wrong activation
    // moves the embeddings well past the tolerance.
    let exp = expected();
    let opts = ClipOptions {
        quick_gelu: Some(true),
        config: None,
        tokenizer: None,
    };
    let dir = tempfile::tempdir().unwrap();
    for f in ["open_clip_model.safetensors", "vocab.json", "merges.txt"] {
        std::fs::copy(fx().join("open_clip").join(f), dir.path().join(f)).unwrap();
    }
    // head counts of the tiny model are not width / 64: give them through a model config
    let cfg = fx().join("open_clip/open_clip_config.json");
    let m = ClipModel::load(
        dir.path(),
        &Device::Cpu,
        &ClipOptions {
            config: Some(cfg),
            quick_gelu: None,
            ..opts.clone()
        },
    )
    .unwrap();
    let imgs = images(&exp);
    let good = m.image_embeddings(&imgs).unwrap().to_vec2::<f32>().unwrap();
    assert_close(
        &good,
        &matrix(&exp["open_clip"]["image"]),
        "copied hub folder",
    );
    let cfg_text = std::fs::read_to_string(fx().join("open_clip/open_clip_config.json")).unwrap();
    let stripped = cfg_text.replace("\"quick_gelu\": false,", "");
    assert_ne!(stripped, cfg_text);
    let cfg2 = dir.path().join("model.json");
    std::fs::write(&cfg2, stripped).unwrap();
    let m = ClipModel::load(
        dir.path(),
        &Device::Cpu,
        &ClipOptions {
            config: Some(cfg2),
            ..opts
        },
    )
    .unwrap();
    let bad = m.image_embeddings(&imgs).unwrap().to_vec2::<f32>().unwrap();
    let worst = bad
        .iter()
        .flatten()
        .zip(good.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst > 1e-3, "quick GELU made no difference ({worst})");
}

#[test]
fn neither_layout_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("other.safetensors");
    let t = candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &[("unet.conv_in.weight".to_string(), t)]
            .into_iter()
            .collect(),
        &f,
    )
    .unwrap();
    let e = ClipModel::load(&f, &Device::Cpu, &ClipOptions::default())
        .err()
        .expect("not a CLIP")
        .to_string();
    assert!(
        e.contains("other.safetensors") && e.contains("neither"),
        "{e}"
    );
    let e = ClipModel::load(
        Path::new("/nonexistent/clip"),
        &Device::Cpu,
        &ClipOptions::default(),
    )
    .err()
    .expect("missing")
    .to_string();
    assert!(e.contains("/nonexistent/clip"), "{e}");
}

/// A full-size ViT-B-32 open_clip state dict with random weights, saved RemoteCLIP-style
/// (plain state dict, no config, no vocabulary): made by scripts/fixtures/clip_full_size.py
/// (about 600 MB, not committed). Run with
/// `STRATA_CLIP_FULL_DIR=<folder> cargo test -p strata-captioner --test clip_parity -- --ignored`.
/// Tolerance: 1e-4 of the embedding norm.
#[test]
#[ignore = "needs the 600 MB checkpoint of scripts/fixtures/clip_full_size.py"]
fn full_size_open_clip_checkpoint() {
    let dir = PathBuf::from(
        std::env::var("STRATA_CLIP_FULL_DIR")
            .expect("set STRATA_CLIP_FULL_DIR (see the doc comment)"),
    );
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let t0 = std::time::Instant::now();
    let m = ClipModel::load(
        &dir.join("random-ViT-B-32.pt"),
        &Device::Cpu,
        &ClipOptions::default(),
    )
    .unwrap();
    eprintln!("load {:.1}s; {:?}", t0.elapsed().as_secs_f32(), m.notes);
    assert!(m.notes.iter().any(|n| n.contains("built-in CLIP BPE")));
    let prompts: Vec<String> = exp["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    // token ids: open_clip's tokenizer, up to its end token (it pads with 0 after it)
    let ours = m.scorer.token_ids(&prompts);
    for (o, w) in ours.iter().zip(matrix(&exp["token_ids"])) {
        let w: Vec<u32> = w.iter().map(|&x| x as u32).collect();
        let end = w.iter().position(|&x| x == 49407).unwrap() + 1;
        assert_eq!(&o[..end], &w[..end]);
    }
    let imgs: Vec<RgbImage> = exp["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| strata_image::read_rgb8(&fx().join("labelled").join(n.as_str().unwrap())).unwrap())
        .collect();
    let t0 = std::time::Instant::now();
    let got = m.image_embeddings(&imgs).unwrap().to_vec2::<f32>().unwrap();
    eprintln!("2 images {:.2}s", t0.elapsed().as_secs_f32());
    let rel = |got: &[Vec<f32>], want: &[Vec<f32>], what: &str| {
        for (g, w) in got.iter().zip(want) {
            let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
            let d = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("{what}: max |diff| {d:.2e}, norm {norm:.1}");
            assert!(d < 1e-4 * norm, "{what}: {d}");
        }
    };
    rel(&got, &matrix(&exp["image"]), "ViT-B-32 image");
    let t0 = std::time::Instant::now();
    let got = m
        .text_embeddings(&prompts)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    eprintln!("3 prompts {:.2}s", t0.elapsed().as_secs_f32());
    rel(&got, &matrix(&exp["text"]), "ViT-B-32 text");
    // what a zero-shot tagger over the SRKC knowledge costs to build and run on this CPU
    let t0 = std::time::Instant::now();
    let mut t = strata_captioner::ClipTagger::from_model(
        m,
        &strata_caption::Knowledge::embedded(),
        &Default::default(),
    )
    .unwrap();
    eprintln!(
        "class embeddings (all prompts) {:.1}s",
        t0.elapsed().as_secs_f32()
    );
    let t0 = std::time::Instant::now();
    use strata_captioner::ImageTagger;
    t.tag(&imgs[0]).unwrap();
    eprintln!("one image tagged {:.2}s", t0.elapsed().as_secs_f32());
}
