//! pytorch-fid Inception-v3 parity: closed-form weights written to disk in the published
//! key layout and loaded through the real loader, compared with pytorch-fid 0.3.0's
//! `InceptionV3([3])` on the same weights (fixtures from `tests/fixtures/gen_inception.py`);
//! FID / KID on the network's features against scipy / numpy; the `.pth` readers on tiny
//! real-layout files written by `torch.save` in both formats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use strata_eval::inception::{InceptionV3, FEATURE_DIM};
use strata_eval::weights::read_tensors;
use strata_eval::{frechet_distance_features, kid_with_subsets, Features};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(fixtures().join("inception_fid.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The per-tensor salt of the fixture formula.
fn salt(name: &str) -> f64 {
    let s: u64 = name
        .bytes()
        .enumerate()
        .map(|(k, b)| (k as u64 + 1) * b as u64)
        .sum();
    (s % 9973) as f64
}

/// `gen_inception.py`'s `formula`: v(i) = sin(0.7548776662 i + 1.3 s)·cos(0.5698402910 i +
/// 0.7 s), scaled per tensor kind.
fn formula_value(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let s = salt(name);
    (0..n)
        .map(|i| {
            let i = i as f64;
            let v = (0.7548776662 * i + 1.3 * s).sin() * (0.5698402910 * i + 0.7 * s).cos();
            let v = if name.ends_with("conv.weight") || name == "fc.weight" {
                v * (8.0 / (n / shape[0]) as f64).sqrt()
            } else if name.ends_with("bn.weight") {
                1.0 + 0.2 * v
            } else if name.ends_with("bn.running_var") {
                1.0 + 0.5 * v
            } else if name.ends_with("bn.bias") || name.ends_with("bn.running_mean") {
                0.1 * v
            } else if name == "fc.bias" {
                0.01 * v
            } else {
                panic!("no formula for {name}")
            };
            v as f32
        })
        .collect()
}

/// Every tensor of the published state dict (keys, shapes and dtypes from the fixture),
/// holding the formula values.
fn formula_state_dict(fx: &Value) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for entry in fx["state_dict"].as_array().unwrap() {
        let name = entry[0].as_str().unwrap();
        let shape: Vec<usize> = entry[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let t = if entry[2].as_str().unwrap() == "int64" {
            Tensor::zeros(shape.as_slice(), DType::I64, &Device::Cpu).unwrap()
        } else {
            Tensor::from_vec(formula_value(name, &shape), shape.as_slice(), &Device::Cpu).unwrap()
        };
        out.insert(name.to_string(), t);
    }
    out
}

/// `gen_inception.py`'s `image`: a smooth closed-form N×3×H×W image in [0.05, 0.95].
fn image(n: usize, h: usize, w: usize, seed: usize) -> Tensor {
    let mut v = Vec::with_capacity(n * 3 * h * w);
    for b in 0..n {
        let k = (seed + b) as f64;
        for c in 0..3 {
            let c = c as f64;
            for y in 0..h {
                for x in 0..w {
                    let (x, y) = (x as f64, y as f64);
                    let p = 0.5
                        + 0.45
                            * (0.11 * x * (c + 1.0) + 0.07 * y + 0.9 * k).sin()
                            * (0.05 * y * (c + 2.0) - 0.04 * x + 0.3 * k).cos();
                    v.push(p as f32);
                }
            }
        }
    }
    Tensor::from_vec(v, (n, 3, h, w), &Device::Cpu).unwrap()
}

/// (max |Δ|, max |Δ| / max |reference|)
fn compare(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let max_diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (max_diff, max_diff / scale)
}

fn features(v: &[f32], n: usize) -> Features {
    Features::new(n, FEATURE_DIM, v.iter().map(|&x| x as f64).collect()).unwrap()
}

#[test]
fn pool_features_and_fid_match_pytorch_fid() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pt_inception-formula.safetensors");
    candle_core::safetensors::save(&formula_state_dict(&fx), &path).unwrap();
    let model = InceptionV3::load(&path, &Device::Cpu).unwrap();
    assert!(model
        .protocol()
        .contains("pt_inception-formula.safetensors"));
    // grey or 3-d input: an error naming the shape, not a panic
    let grey = Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap();
    let err = model.pool_features(&grey).err().unwrap().to_string();
    assert!(err.contains("[1, 1, 64, 64]"), "{err}");
    assert!(model.pool_features(&grey.squeeze(0).unwrap()).is_err());

    // 64×64 (batch of 2), 80×100 and 320×300 (shrinking): resize + network.
    for case in fx["cases"].as_array().unwrap() {
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        let (n, h, w) = (get("n"), get("h"), get("w"));
        let got = model.pool_features(&image(n, h, w, get("seed"))).unwrap();
        assert_eq!(got.dims(), &[n, FEATURE_DIM]);
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let (abs, rel) = compare(&got, &floats(&case["features"]));
        eprintln!("{n}x3x{h}x{w}: max |Δ| {abs:.3e}, relative {rel:.3e}");
        assert!(rel < 2e-5, "{n}x3x{h}x{w}: max |Δ| {abs}, relative {rel}");
    }

    // FID / KID end to end: our features of two 6-image sets against scipy / numpy.
    let f = &fx["fid"];
    let n = f["n"].as_u64().unwrap() as usize;
    let model = model.with_batch_size(3);
    let ours_a: Vec<f32> = model
        .pool_features(&image(n, 64, 64, 100))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let ours_b: Vec<f32> = model
        .pool_features(&image(n, 64, 64, 200))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (ref_a, ref_b) = (floats(&f["features_a"]), floats(&f["features_b"]));
    let (abs_a, rel_a) = compare(&ours_a, &ref_a);
    let (abs_b, rel_b) = compare(&ours_b, &ref_b);
    assert!(rel_a < 2e-5 && rel_b < 2e-5, "{abs_a} {abs_b}");

    let scipy = f["fid_scipy_sqrtm"].as_f64().unwrap();
    let svd = f["fid_svd"].as_f64().unwrap();
    // On the reference's own features, our Fréchet distance is the numpy SVD value to
    // rounding, and scipy's sqrtm (less accurate on these singular covariances) to 1e-5.
    let exact = |v: &Value| {
        let v: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        Features::new(n, FEATURE_DIM, v).unwrap()
    };
    let on_ref =
        frechet_distance_features(&exact(&f["features_a"]), &exact(&f["features_b"])).unwrap();
    assert!(
        (on_ref - svd).abs() < 1e-9 * svd.abs().max(1.0),
        "{on_ref} vs {svd}"
    );
    assert!(
        (on_ref - scipy).abs() < 1e-5 * scipy.abs(),
        "{on_ref} vs {scipy}"
    );
    // On our features (network error included).
    let fid = frechet_distance_features(&features(&ours_a, n), &features(&ours_b, n)).unwrap();
    let fid_rel = (fid - scipy).abs() / scipy.abs();
    eprintln!("FID ours {fid:.8} vs scipy {scipy:.8} (relative {fid_rel:.2e}), svd {svd:.8}");
    assert!(fid_rel < 1e-3, "FID {fid} vs scipy {scipy}");
    let all: Vec<usize> = (0..n).collect();
    let (kid, _) = kid_with_subsets(
        &features(&ours_a, n),
        &features(&ours_b, n),
        std::slice::from_ref(&all),
        std::slice::from_ref(&all),
    )
    .unwrap();
    let kid_ref = f["kid_full_sets"].as_f64().unwrap();
    eprintln!("KID ours {kid:.6e} vs numpy {kid_ref:.6e}");
    assert!(
        (kid - kid_ref).abs() < 1e-3 * kid_ref.abs() + 1e-7,
        "KID {kid} vs {kid_ref}"
    );
    // identical sets: FID 0
    let same = frechet_distance_features(&features(&ours_a, n), &features(&ours_a, n)).unwrap();
    assert!(same.abs() < 1e-9, "{same}");
}

#[test]
fn reads_the_published_pth_layout_in_both_torch_formats() {
    for file in ["inception_tiny_zip.pth", "inception_tiny_legacy.pth"] {
        let path = fixtures().join(file);
        let tensors = read_tensors(&path, &Device::Cpu).unwrap();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "Conv2d_1a_3x3.bn.bias",
                "Conv2d_1a_3x3.bn.num_batches_tracked",
                "Conv2d_1a_3x3.bn.running_mean",
                "Conv2d_1a_3x3.bn.running_var",
                "Conv2d_1a_3x3.bn.weight",
                "Conv2d_1a_3x3.conv.weight",
                "fc.bias",
            ],
            "{file}"
        );
        for (name, t) in &tensors {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let want = formula_value(name, t.dims());
            let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let (abs, _) = compare(&got, &want);
            assert!(abs < 1e-6, "{file} {name}: {abs}");
        }
        assert_eq!(tensors["Conv2d_1a_3x3.conv.weight"].dims(), &[32, 3, 3, 3]);
        assert_eq!(tensors["fc.bias"].dims(), &[1008]);

        // a partial file is refused with the missing tensors listed
        let err = InceptionV3::load(&path, &Device::Cpu)
            .err()
            .expect("partial file must be refused")
            .to_string();
        assert!(err.contains(file), "{err}");
        assert!(err.contains("missing"), "{err}");
        assert!(err.contains("Conv2d_2a_3x3.conv.weight"), "{err}");
        assert!(!err.contains("Conv2d_1a_3x3.conv.weight ["), "{err}");
    }
}

#[test]
fn mis_shaped_weights_are_named() {
    let fx = fixture();
    let mut sd: HashMap<String, Tensor> = formula_state_dict(&fx)
        .into_iter()
        .filter(|(k, _)| k.starts_with("Conv2d_") || k.starts_with("Mixed_5b."))
        .collect();
    sd.insert(
        "Conv2d_2a_3x3.conv.weight".into(),
        Tensor::zeros((32, 32, 1, 9), DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.safetensors");
    candle_core::safetensors::save(&sd, &path).unwrap();
    let err = InceptionV3::load(&path, &Device::Cpu)
        .err()
        .expect("must be refused")
        .to_string();
    assert!(
        err.contains("Conv2d_2a_3x3.conv.weight: expected [32, 32, 3, 3]"),
        "{err}"
    );
    assert!(err.contains("Mixed_5c.branch1x1.conv.weight"), "{err}");
    assert!(!err.contains("Mixed_5b.branch1x1.conv.weight ["), "{err}");
    // an empty file is neither format: refused with the path named
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let err = InceptionV3::load(&empty, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("empty.safetensors"), "{err}");
}

/// The sample-space Fréchet distance (used when n_a + n_b ≤ d, as with a few hundred
/// 2048-d Inception features) equals the d×d eigendecomposition path.
#[test]
fn sample_space_frechet_equals_the_covariance_path() {
    let d = 24;
    let make = |n: usize, salt: f64| {
        let v: Vec<f64> = (0..n * d)
            .map(|i| ((i as f64) * 0.37 + salt).sin() * ((i as f64) * 0.11 - salt).cos().abs())
            .collect();
        Features::new(n, d, v).unwrap()
    };
    for (na, nb) in [(5, 7), (12, 12), (2, 3)] {
        let (a, b) = (make(na, 0.3), make(nb, 1.7));
        let small = strata_eval::fid::frechet_distance_sample_space(&a, &b).unwrap();
        let full = strata_eval::frechet_distance(&a.stats().unwrap(), &b.stats().unwrap()).unwrap();
        assert!(
            (small - full).abs() < 1e-9 * full.abs().max(1.0),
            "{na},{nb}: {small} vs {full}"
        );
        // and the dispatching entry point picks the same value
        let auto = frechet_distance_features(&a, &b).unwrap();
        assert!((auto - full).abs() < 1e-9 * full.abs().max(1.0));
    }
}
