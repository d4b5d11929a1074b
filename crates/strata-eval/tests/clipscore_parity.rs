//! CLIPScore against transformers' `CLIPModel` / `CLIPTokenizer` / `CLIPImageProcessor`
//! (fixtures from `tests/fixtures/gen_clip.py`): a tiny CLIP whose formula weights are
//! written here as `model.safetensors` with the transformers key names, next to the
//! script's `config.json`, `vocab.json` and `merges.txt`, and loaded by the real loader.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use strata_eval::clipscore::{clip_score, cosine_rows, ClipScorer};
use strata_eval::images::Rgb;

fn fx_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fx_dir().join("clip_tiny.json")).unwrap())
        .unwrap()
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The tiny model folder in transformers' layout, formula weights.
fn write_model(fx: &serde_json::Value, dir: &Path) {
    let mut m = HashMap::new();
    for (s, item) in fx["spec"].as_array().unwrap().iter().enumerate() {
        let name = item[0].as_str().unwrap().to_string();
        let shape: Vec<usize> = item[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        let sf = s as f64;
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let i = i as f64;
                (if shape.len() >= 2 {
                    let fan: usize = shape[1..].iter().product();
                    (0.37 * i + 1.1 * sf).sin() / (fan as f64).sqrt()
                } else if (name.contains("norm") || name.contains("layrnorm"))
                    && name.ends_with("weight")
                {
                    1.0 + 0.1 * (0.53 * i + 0.7 * sf).sin()
                } else {
                    0.1 * (0.53 * i + 0.7 * sf).cos()
                }) as f32
            })
            .collect();
        m.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    }
    m.insert(
        "logit_scale".into(),
        Tensor::new(2.6592f32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&m, dir.join("model.safetensors")).unwrap();
    for f in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(fx_dir().join("clip_tiny").join(f), dir.join(f)).unwrap();
    }
}

fn image(salt: usize, h: usize, w: usize) -> Rgb {
    let s = salt as f64;
    let mut data = vec![0u8; h * w * 3];
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (cf, yf, xf) = (c as f64, y as f64, x as f64);
                let v = 0.5
                    + 0.3
                        * (0.21 * xf * (1.0 + 0.1 * s) + 0.9 * cf + s).sin()
                        * (0.17 * yf + 0.4 * cf).cos()
                    + 0.15 * (1.7 * xf + 2.3 * yf + 0.5 * s).sin();
                data[(y * w + x) * 3 + c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    Rgb {
        width: w,
        height: h,
        data,
    }
}

fn assert_close(got: &[f32], want: &[f32], rel: f32, abs: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "{what}[{i}]: strata {g}, transformers {w}"
        );
    }
}

#[test]
fn clip_towers_tokenizer_and_score_match_transformers() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    write_model(&fx, dir.path());
    let dev = Device::Cpu;
    let clip = ClipScorer::load(dir.path(), &dev).unwrap();
    let captions: Vec<String> = fx["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    // Tokenizer: identical ids.
    let ids = clip.token_ids(&captions);
    let want_ids: Vec<Vec<u32>> = serde_json::from_value(fx["input_ids"].clone()).unwrap();
    assert_eq!(ids, want_ids);
    // Towers on the reference pixels: 1e-4 relative + 1e-5 absolute (f32).
    let n = captions.len();
    let pixels = Tensor::from_vec(f32s(&fx["pixels"]), (n, 3, 32, 32), &dev).unwrap();
    let img = clip.image_features(&pixels).unwrap();
    let txt = clip.text_features(&captions, &dev).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_close(
        &flat(&img),
        &f32s(&fx["image_features"]),
        1e-4,
        1e-5,
        "image features",
    );
    assert_close(
        &flat(&txt),
        &f32s(&fx["text_features"]),
        1e-4,
        1e-5,
        "text features",
    );
    let cos = cosine_rows(&img, &txt).unwrap();
    assert_close(&cos, &f32s(&fx["cosines"]), 0.0, 1e-5, "cosines");
    let s = clip_score(&cos);
    let want = fx["torchmetrics_clipscore"].as_f64().unwrap();
    assert!(
        (s.torchmetrics - want).abs() < 1e-3,
        "{} vs {want}",
        s.torchmetrics
    );
    assert!((s.cosine * 100.0 - s.torchmetrics).abs() < 1e-9);

    // Preprocessing of odd-sized images against CLIPImageProcessor: Pillow rounds through
    // fixed-point weights, strata through f64, so pixels may differ by one 8-bit level
    // (≤ 1/255/std ≈ 0.015 after normalisation); most are identical.
    let sizes: Vec<(usize, usize)> = serde_json::from_value(fx["sizes"].clone()).unwrap();
    let imgs: Vec<Rgb> = sizes
        .iter()
        .enumerate()
        .map(|(k, &(h, w))| image(k, h, w))
        .collect();
    let mine = flat(&clip.preprocess(&imgs, &dev).unwrap());
    let want = f32s(&fx["pixels"]);
    assert_close(&mine, &want, 0.0, 0.016, "preprocessed pixels");
    let same = mine
        .iter()
        .zip(&want)
        .filter(|(a, b)| (*a - *b).abs() < 1e-5)
        .count();
    assert!(
        same * 10 >= mine.len() * 9,
        "only {same}/{} pixels identical",
        mine.len()
    );
    // End to end through strata's own preprocessing.
    let cos2 = clip.cosines(&imgs, &captions, &dev).unwrap();
    assert_close(
        &cos2,
        &f32s(&fx["cosines"]),
        0.0,
        5e-3,
        "end-to-end cosines",
    );
}

#[test]
fn a_file_that_is_not_clip_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = HashMap::new();
    m.insert(
        "features.0.weight".to_string(),
        Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&m, dir.path().join("model.safetensors")).unwrap();
    let e = ClipScorer::load(dir.path(), &Device::Cpu)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("text_model.embeddings"),
        "{e}"
    );
    // A CLIP folder without its tokenizer files.
    let fx = fixture();
    let d2 = tempfile::tempdir().unwrap();
    write_model(&fx, d2.path());
    std::fs::remove_file(d2.path().join("merges.txt")).unwrap();
    let e = ClipScorer::load(d2.path(), &Device::Cpu)
        .err()
        .expect("must fail")
        .to_string();
    assert!(e.contains("merges.txt"), "{e}");
}

#[test]
fn transformers_pickle_checkpoint_reads_as_data_and_matches() {
    // The fixture script's torch.save(model.state_dict()) of the same formula weights.
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "pytorch_model.bin",
        "config.json",
        "vocab.json",
        "merges.txt",
    ] {
        std::fs::copy(fx_dir().join("clip_tiny").join(f), dir.path().join(f)).unwrap();
    }
    let dev = Device::Cpu;
    let clip = ClipScorer::load(dir.path(), &dev).unwrap();
    let n = fx["captions"].as_array().unwrap().len();
    let pixels = Tensor::from_vec(f32s(&fx["pixels"]), (n, 3, 32, 32), &dev).unwrap();
    let img = clip.image_features(&pixels).unwrap();
    let got = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_close(
        &got,
        &f32s(&fx["image_features"]),
        1e-4,
        1e-5,
        "image features (.bin)",
    );
}
