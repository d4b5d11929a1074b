//! LPIPS and the AlexNet/VGG16 backbones against the lpips 0.1.4 package and PyTorch
//! (fixtures from `tests/fixtures/gen_lpips_vgg.py`). Backbone weights follow the script's
//! closed-form formula; they are written to disk as safetensors with torchvision's key names
//! and read back through the real loader. The LPIPS heads are the real v0.1 files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use strata_eval::backbone::{Arch, Backbone};
use strata_eval::lpips::Lpips;

fn fixture() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lpips_vgg.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn formula(shape: &[usize], salt: usize, bias: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let fan_in: usize = shape[1..].iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let i = i as f64;
            if bias {
                (0.1 * (0.53 * i + 0.7 * salt as f64).cos()) as f32
            } else {
                ((0.37 * i + 1.1 * salt as f64).sin() / (fan_in as f64).sqrt()) as f32
            }
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Formula weights for `arch`, written as safetensors in torchvision's layout.
pub fn write_backbone(arch: Arch, dir: &Path) -> std::path::PathBuf {
    let mut m = HashMap::new();
    for (salt, (name, shape)) in arch.param_spec().into_iter().enumerate() {
        let t = formula(&shape, salt, name.ends_with("bias"));
        m.insert(name, t);
    }
    // A classifier tensor as in the real file: ignored by the loader.
    m.insert(
        "classifier.1.weight".into(),
        Tensor::zeros((4, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.join(format!("{}.safetensors", arch.name()));
    candle_core::safetensors::save(&m, &p).unwrap();
    p
}

fn image(salt: usize, h: usize, w: usize) -> Vec<f32> {
    let s = salt as f64;
    let mut v = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (c, y, x) = (c as f64, y as f64, x as f64);
                let p = 0.5
                    + 0.3
                        * (0.21 * x * (1.0 + 0.1 * s) + 0.9 * c + s).sin()
                        * (0.17 * y + 0.4 * c).cos()
                    + 0.15 * (1.7 * x + 2.3 * y + 0.5 * s).sin();
                v.push(p.clamp(0.0, 1.0) as f32);
            }
        }
    }
    v
}

fn batch(salts: &[usize], s: usize) -> Tensor {
    let data: Vec<f32> = salts.iter().flat_map(|&k| image(k, s, s)).collect();
    Tensor::from_vec(data, (salts.len(), 3, s, s), &Device::Cpu).unwrap()
}

fn close(got: &[f32], want: &[f64], rel: f64, abs: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = *g as f64;
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "{what}[{i}]: strata {g}, reference {w}"
        );
    }
}

fn vec_f64(v: &serde_json::Value) -> Vec<f64> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().unwrap()),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

#[test]
fn lpips_alex_and_vgg_match_the_lpips_package() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let a = batch(&[0, 2, 0], 48);
    let b = batch(&[1, 3, 0], 48);
    for (arch, key) in [(Arch::AlexNet, "lpips_alex"), (Arch::Vgg16, "lpips_vgg")] {
        let p = write_backbone(arch, dir.path());
        let net = Lpips::load(&p, None, &Device::Cpu).unwrap();
        assert_eq!(net.backbone.arch, arch);
        let d = net.distance(&a, &b).unwrap();
        let want = vec_f64(&fx[key]);
        // f32 through 5–13 convolutions: 1e-4 relative, 1e-6 absolute.
        close(&d, &want, 1e-4, 1e-6, key);
        // LPIPS(x, x) = 0 exactly (the third pair is an image with itself).
        assert_eq!(d[2], 0.0, "{key}: LPIPS(x,x)");
        assert!(d[0] > 1e-3, "{key}: distinct images must differ");
    }
}

#[test]
fn vgg16_and_alexnet_features_match_pytorch() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let vp = write_backbone(Arch::Vgg16, dir.path());
    let vgg = Backbone::load(&vp, None, &Device::Cpu).unwrap();
    let x = batch(&[0, 1], 48)
        .narrow(2, 0, 32)
        .unwrap()
        .narrow(3, 0, 32)
        .unwrap();
    let f = vgg
        .features(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    close(
        &f,
        &vec_f64(&fx["vgg16_pool5_32"]),
        1e-4,
        1e-6,
        "vgg16 pool5",
    );
    let ap = write_backbone(Arch::AlexNet, dir.path());
    let alex = Backbone::load(&ap, None, &Device::Cpu).unwrap();
    let f = alex
        .forward_taps(&batch(&[0], 48), &[11])
        .unwrap()
        .remove(0)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    close(
        &f,
        &vec_f64(&fx["alex_relu5_48"]),
        1e-4,
        1e-6,
        "alexnet relu5",
    );
}

#[test]
fn pth_checkpoints_in_both_formats_read_without_pickle_execution() {
    let fx = fixture();
    let fdir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for f in ["tiny_heads_zip.pth", "tiny_heads_legacy.pth"] {
        let t = strata_eval::weights::read_tensors(&fdir.join(f), &Device::Cpu).unwrap();
        assert_eq!(t.len(), 5, "{f}");
        for (k, want) in fx["tiny_heads"].as_object().unwrap() {
            let got = t[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want: Vec<f32> = vec_f64(want).iter().map(|&x| x as f32).collect();
            assert_eq!(got, want, "{f} {k}");
        }
    }
    // The real lpips heads (legacy format) carry the published shapes.
    let heads = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/lpips/vgg.pth");
    let t = strata_eval::weights::read_tensors(&heads, &Device::Cpu).unwrap();
    assert_eq!(t["lin3.model.1.weight"].dims(), &[1, 512, 1, 1]);
}

#[test]
fn wrong_files_are_refused_with_the_tensors_named() {
    let dir = tempfile::tempdir().unwrap();
    // AlexNet weights with one conv mis-shaped and one missing.
    let mut m = HashMap::new();
    for (salt, (name, shape)) in Arch::AlexNet.param_spec().into_iter().enumerate() {
        if name == "features.8.bias" {
            continue;
        }
        let shape = if name == "features.3.weight" {
            vec![192, 64, 3, 3]
        } else {
            shape
        };
        m.insert(name.clone(), formula(&shape, salt, name.ends_with("bias")));
    }
    let p = dir.path().join("alex.safetensors");
    candle_core::safetensors::save(&m, &p).unwrap();
    let e = Backbone::load(&p, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("features.8.bias"), "{e}");
    assert!(
        e.contains("features.3.weight: expected [192, 64, 5, 5]"),
        "{e}"
    );
    // VGG heads with an AlexNet backbone: the head shapes are named.
    let good = write_backbone(Arch::AlexNet, dir.path());
    let heads = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/lpips/vgg.pth");
    let e = Lpips::load(&good, Some(&heads), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lin1.model.1.weight"), "{e}");
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"not weights at all").unwrap();
    let e = Backbone::load(&junk, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.pth"), "{e}");
}
