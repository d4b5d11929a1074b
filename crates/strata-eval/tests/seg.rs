//! The segmenter: gradients against finite differences, training improves held-out
//! accuracy, weights round-trip, predictions feed relation fidelity.

use candle_core::{DType, Device, Tensor};
use strata_eval::seg::{
    evaluate, loss, synth_samples, train, SegNet, TrainOptions, NUM_CLASSES, NUM_SCENES,
};

#[test]
fn loss_gradient_matches_finite_differences() {
    let net = SegNet::new(5, DType::F64).unwrap();
    let dev = Device::Cpu;
    let (b, s) = (2, 8);
    let x: Vec<f64> = (0..b * 3 * s * s)
        .map(|i| (i * 37 % 101) as f64 / 50.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(x, (b, 3, s, s), &dev).unwrap();
    let mut oh = vec![0f64; b * NUM_CLASSES * s * s];
    for bi in 0..b {
        for p in 0..s * s {
            let k = (p * 7 + bi * 3) % 5;
            oh[(bi * NUM_CLASSES + k) * s * s + p] = 1.0;
        }
    }
    let oh = Tensor::from_vec(oh, (b, NUM_CLASSES, s, s), &dev).unwrap();
    let mut sc = vec![0f64; b * NUM_SCENES];
    sc[1] = 1.0;
    sc[NUM_SCENES + 4] = 1.0;
    let sc = Tensor::from_vec(sc, (b, NUM_SCENES), &dev).unwrap();
    let cw = Tensor::from_vec(
        (0..NUM_CLASSES)
            .map(|k| 0.5 + (k % 3) as f64 * 0.5)
            .collect::<Vec<_>>(),
        (1, NUM_CLASSES, 1, 1),
        &dev,
    )
    .unwrap();
    let f = || {
        let out = net.forward(&x).unwrap();
        loss(&out, &oh, &sc, &cw).unwrap()
    };
    let l = f();
    let grads = l.backward().unwrap();
    let vars = net.varmap.data().lock().unwrap().clone();
    let mut checked = 0;
    let mut bad = Vec::new();
    for name in [
        "e1a.weight",
        "e2b.weight",
        "mid.weight",
        "d1.weight",
        "head.bias",
        "scene.weight",
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
        for &i in &[0usize, base.len() / 2, base.len() - 1] {
            let eps = 1e-5;
            let mut p = base.clone();
            p[i] += eps;
            var.set(&Tensor::from_vec(p.clone(), var.shape(), &dev).unwrap())
                .unwrap();
            let lp = f().to_scalar::<f64>().unwrap();
            p[i] -= 2.0 * eps;
            var.set(&Tensor::from_vec(p, var.shape(), &dev).unwrap())
                .unwrap();
            let lm = f().to_scalar::<f64>().unwrap();
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap())
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
    assert_eq!(checked, 18);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn short_training_learns_and_round_trips() {
    let opts = TrainOptions {
        train_scenes: 44,
        held_out_scenes: 11,
        steps: 30,
        batch: 4,
        lr: 1e-2,
        seed: 1,
    };
    let held = synth_samples(11, 4);
    let untrained = evaluate(&SegNet::new(1, DType::F32).unwrap(), &held, f64::NAN).unwrap();
    let mut losses = Vec::new();
    let (net, q) = train(&opts, &mut |_, l| losses.push(l)).unwrap();
    assert_eq!(losses.len(), 30);
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[25..].iter().sum::<f64>() / 5.0;
    assert!(last < first, "loss {first} -> {last}");
    let trained = evaluate(&net, &held, f64::NAN).unwrap();
    assert!(
        trained.pixel_accuracy > untrained.pixel_accuracy,
        "{trained:?} vs untrained {untrained:?}"
    );
    assert!(q.mean_iou > 0.0 && q.mean_iou <= 1.0);
    assert_eq!(
        q.relations_on_truth, 1.0,
        "the checker accepts every built relation"
    );
    // save, load, same predictions
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("seg.safetensors");
    net.save(&p).unwrap();
    let back = SegNet::load(&p).unwrap();
    let imgs: Vec<_> = held.iter().take(3).map(|s| &s.rgb).collect();
    let a = net.predict(&imgs).unwrap();
    let b = back.predict(&imgs).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.mask, y.mask);
        assert_eq!(x.features, y.features);
    }
    // same seed, same weights
    let small = TrainOptions {
        steps: 2,
        train_scenes: 11,
        held_out_scenes: 2,
        ..opts
    };
    let (n2, _) = train(&small, &mut |_, _| {}).unwrap();
    let (n3, _) = train(&small, &mut |_, _| {}).unwrap();
    assert_eq!(
        n2.predict(&imgs).unwrap()[0].features,
        n3.predict(&imgs).unwrap()[0].features
    );
    assert!(SegNet::load(&dir.path().join("missing.safetensors")).is_err());
}

#[test]
fn upsample2x_is_nearest_neighbour() {
    let x = Tensor::arange(0f32, 8.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 2, 2, 2))
        .unwrap();
    let u = strata_eval::seg::upsample2x(&x).unwrap();
    let r = u.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    assert_eq!(r[0][0], vec![0.0, 0.0, 1.0, 1.0]);
    assert_eq!(r[0][3], vec![2.0, 2.0, 3.0, 3.0]);
    assert_eq!(r[1][1], vec![4.0, 4.0, 5.0, 5.0]);
    let reference = x.upsample_nearest2d(4, 4).unwrap();
    assert_eq!(
        u.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        reference.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}
