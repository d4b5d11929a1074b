//! GSHPS: the VGG16 path against PyTorch + Pillow (fixture from
//! `tests/fixtures/gen_gshps.py`, closed-form weights written here as safetensors with
//! torchvision's key names), identical sets give 1, and the stand-in classifier's gradients
//! and training.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use strata_eval::backbone::Arch;
use strata_eval::gshps::{gshps, train_scene_cnn, CnnTrainOptions, GshpsNet, SceneCnn};
use strata_eval::images::Rgb;

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

fn write_vgg(dir: &Path) -> std::path::PathBuf {
    let mut m = HashMap::new();
    for (salt, (name, shape)) in Arch::Vgg16.param_spec().into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let fan: usize = shape[1..].iter().product();
        let s = salt as f64;
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let i = i as f64;
                (if name.ends_with("bias") {
                    0.01 * (0.53 * i + 0.7 * s).cos()
                } else {
                    let h = (12.9898 * i + 78.233 * s).sin() * 43758.5453;
                    (2.0 * (h - h.floor()) - 1.0) * (6.0 / fan as f64).sqrt()
                }) as f32
            })
            .collect();
        m.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    }
    // The fine-tuned classifier's last layer (11 scenes), present in a real file, unused.
    m.insert(
        "classifier.6.weight".into(),
        Tensor::zeros((11, 4096), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.join("vgg16_scenes.safetensors");
    candle_core::safetensors::save(&m, &p).unwrap();
    p
}

#[test]
fn vgg16_gshps_matches_pytorch_and_identical_sets_give_one() {
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gshps_vgg.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let imgs = |k: &str| -> Vec<Rgb> {
        fx[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let t: Vec<usize> = serde_json::from_value(t.clone()).unwrap();
                image(t[0], t[1], t[2])
            })
            .collect()
    };
    let (real, gen) = (imgs("real"), imgs("generated"));
    let dir = tempfile::tempdir().unwrap();
    let net = GshpsNet::load_vgg16(&write_vgg(dir.path()), &Device::Cpu).unwrap();
    assert!(!net.is_stand_in());
    let fr = net
        .features(&real.iter().collect::<Vec<_>>(), &Device::Cpu)
        .unwrap();
    let fg = net
        .features(&gen.iter().collect::<Vec<_>>(), &Device::Cpu)
        .unwrap();
    assert_eq!(fr.dims(), &[2, 512 * 7 * 7]);
    // Per-image feature norms and the first 256 values of one vector: Pillow's fixed-point
    // resize may differ from strata's by one 8-bit level on some pixels, so 0.5% relative.
    let norms = |t: &Tensor| -> Vec<f32> {
        t.sqr()
            .unwrap()
            .sum(1)
            .unwrap()
            .sqrt()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    for (got, key) in [(norms(&fr), "real_norms"), (norms(&fg), "gen_norms")] {
        let want: Vec<f32> = serde_json::from_value(fx[key].clone()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 5e-3 * w, "{key}: strata {g}, PyTorch {w}");
        }
    }
    let first: Vec<f32> = fr
        .get(0)
        .unwrap()
        .narrow(0, 0, 256)
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<f32> = serde_json::from_value(fx["real0_first256"].clone()).unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in first.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-2 * scale, "feature[{i}]: {g} vs {w}");
    }
    let g = gshps(&fr, &fg).unwrap();
    let want = fx["gshps"].as_f64().unwrap();
    // 1 − GSHPS ≈ 0.0076 here; agree to 2e-4 absolute (≈ 3% of the distance from 1).
    assert!((g - want).abs() < 2e-4, "GSHPS strata {g}, PyTorch {want}");
    // Identical sets: exactly the same mean vector, GSHPS 1.
    let same = gshps(&fr, &fr).unwrap();
    assert!((same - 1.0).abs() < 1e-12, "{same}");
}

#[test]
fn stand_in_gradients_match_finite_differences() {
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let net = SceneCnn::new(classes, 3, DType::F64).unwrap();
    let imgs: Vec<Rgb> = (0..3).map(|k| image(k, 40, 52)).collect();
    let x = net
        .input(&imgs.iter().collect::<Vec<_>>(), &[false, true, false])
        .unwrap();
    let labels = [0usize, 2, 1];
    let f = || {
        let (_, logits) = net.forward(&x).unwrap();
        SceneCnn::loss(&logits, &labels).unwrap()
    };
    let l = f();
    let grads = l.backward().unwrap();
    let vars = net.varmap.data().lock().unwrap().clone();
    let mut bad = Vec::new();
    let mut checked = 0;
    for name in [
        "c1.weight",
        "c2.bias",
        "c3.weight",
        "head.weight",
        "head.bias",
    ] {
        let var = &vars[name];
        let g = grads
            .get(var.as_tensor())
            .expect(name)
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for &i in &[0usize, base.len() / 3, base.len() - 1] {
            // Small step: a ReLU pre-activation within eps of its kink spoils the difference.
            let eps = 1e-7;
            let mut p = base.clone();
            p[i] += eps;
            var.set(&Tensor::from_vec(p.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let lp = f().to_scalar::<f64>().unwrap();
            p[i] -= 2.0 * eps;
            var.set(&Tensor::from_vec(p, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let lm = f().to_scalar::<f64>().unwrap();
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let fd = (lp - lm) / (2.0 * eps);
            if (fd - g[i]).abs() > 1e-6 + 1e-4 * fd.abs() {
                bad.push(format!(
                    "{name}[{i}]: analytic {} vs finite difference {fd}",
                    g[i]
                ));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn stand_in_learns_scene_labels_and_round_trips() {
    // Synthetic scenes of 4 classes (labels from the generator): 16 images, 3 held out.
    let samples = strata_eval::seg::synth_samples(44, 11);
    let data: Vec<(&Rgb, String)> = samples
        .iter()
        .filter(|s| (s.scene as usize) < 4)
        .map(|s| (&s.rgb, format!("{:?}", s.scene)))
        .collect();
    let pairs: Vec<(&Rgb, &str)> = data.iter().map(|(r, s)| (*r, s.as_str())).collect();
    let opts = CnnTrainOptions {
        steps: 80,
        batch: 8,
        ..CnnTrainOptions::default()
    };
    let mut first = f64::NAN;
    let (net, q) = train_scene_cnn(&pairs, &opts, &mut |s, l| {
        if s == 1 {
            first = l;
        }
    })
    .unwrap();
    assert_eq!(q.classes.len(), 4);
    assert!(
        q.final_loss < 0.5 * first,
        "loss {first} → {}",
        q.final_loss
    );
    let acc = q.held_out_accuracy.unwrap();
    assert!(acc > 0.5, "held-out accuracy {acc} (chance 0.25)");
    // Round trip through the file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gshps_cnn.safetensors");
    net.save(&p).unwrap();
    let back = SceneCnn::load(&p).unwrap();
    let imgs: Vec<&Rgb> = pairs.iter().take(3).map(|(r, _)| *r).collect();
    let a = net.forward(&net.input(&imgs, &[]).unwrap()).unwrap().0;
    let b = back.forward(&back.input(&imgs, &[]).unwrap()).unwrap().0;
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
    let stand_in = GshpsNet::StandIn(net, q);
    assert!(stand_in
        .protocol()
        .contains("GSHPS (stand-in), not the paper's GSHPS"));
    let f = stand_in.features(&imgs, &Device::Cpu).unwrap();
    assert!((gshps(&f, &f).unwrap() - 1.0).abs() < 1e-12);
}

fn synth_dataset(dir: &Path, count: usize, seed: u64) {
    strata_synth::write_dataset(
        dir,
        &strata_synth::DatasetOptions {
            count,
            size: 64,
            seed,
            classes: vec![],
        },
        &|| {},
    )
    .unwrap();
}

fn gshps_opts(tmp: &Path, gen: &Path) -> strata_eval::EvalOptions {
    strata_eval::EvalOptions {
        real: tmp.join("real"),
        generated: vec![strata_eval::GeneratedSet::parse(&format!(
            "other/hierarchical={}",
            gen.display()
        ))],
        captions: None,
        metrics: vec![strata_eval::Metric::Gshps],
        out: tmp.join("out"),
        segmenter: None,
        segmenter_net: None,
        train: strata_eval::seg::TrainOptions::default(),
        kid_subsets: 2,
        kid_subset_size: 2,
        seed: 0,
        weights: strata_eval::WeightPaths {
            gshps_classifier: Some(tmp.join("standin.safetensors")),
            gshps_train: CnnTrainOptions {
                steps: 20,
                ..Default::default()
            },
            ..Default::default()
        },
        grid_scenes: 2,
        device: Device::Cpu,
    }
}

#[test]
fn stand_in_trains_on_images_disjoint_from_the_scored_ones_and_refuses_overlap() {
    let tmp = tempfile::tempdir().unwrap();
    synth_dataset(&tmp.path().join("real"), 22, 1);
    synth_dataset(&tmp.path().join("gen"), 22, 2);
    let gen = tmp.path().join("gen/images");
    let opts = gshps_opts(tmp.path(), &gen);
    let r = strata_eval::evaluate(&opts, &mut |_| {}).unwrap();
    let v = &r.sets[0].metrics["gshps"];
    assert!(v.value.is_some(), "{}", v.note);
    assert!(v.note.starts_with("GSHPS (stand-in)"), "{}", v.note);
    assert_eq!(r.heading(strata_eval::Metric::Gshps), "GSHPS (stand-in)↑");
    let table = strata_eval::report::table_text(&r, &opts.metrics);
    assert!(table.contains("GSHPS (stand-in)↑"), "{table}");

    // the training scenes, regenerated independently, share no pixels with a scored image
    let scored: Vec<Vec<u8>> = [tmp.path().join("real/images"), gen.clone()]
        .iter()
        .flat_map(|d| {
            strata_eval::images::list_images(d)
                .unwrap()
                .into_iter()
                .map(|f| strata_eval::images::read_image(&d.join(f)).unwrap().data)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(scored.len(), 44);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("standin.train.json")).unwrap(),
    )
    .unwrap();
    let n = record["images"].as_array().unwrap().len();
    assert_eq!(n, 110);
    let base = strata_eval::metrics::gshps::GSHPS_TRAIN_SEED;
    let training: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let class = strata_synth::SceneClass::ALL[i % 11];
            strata_synth::generate(class, 64, strata_synth::dataset::scene_seed(base, i)).rgb
        })
        .collect();
    for t in &training {
        assert!(!scored.contains(t));
    }

    // a generated set holding one of the training scenes is refused, also when the saved
    // classifier is loaded instead of trained
    let leak = tmp.path().join("leak");
    std::fs::create_dir_all(&leak).unwrap();
    std::fs::write(
        leak.join("park_00000.png"),
        strata_image::encode::encode_png_rgb8(Path::new("x.png"), 64, 64, &training[3]).unwrap(),
    )
    .unwrap();
    let e = strata_eval::evaluate(&gshps_opts(tmp.path(), &leak), &mut |_| {}).unwrap_err();
    let msg = strata_eval::error::chain(&e);
    assert!(
        msg.contains("park_00000.png") && msg.contains("same pixels"),
        "{msg}"
    );
    // an explicit training folder that is the real folder itself is refused
    let mut own = gshps_opts(tmp.path(), &gen);
    own.weights.gshps_classifier = Some(tmp.path().join("own.safetensors"));
    own.weights.gshps_train_dir = Some(tmp.path().join("real"));
    let e = strata_eval::evaluate(&own, &mut |_| {}).unwrap_err();
    let msg = strata_eval::error::chain(&e);
    assert!(msg.contains("same pixels") && msg.contains("real"), "{msg}");
    assert!(!tmp.path().join("own.safetensors").exists());
}
