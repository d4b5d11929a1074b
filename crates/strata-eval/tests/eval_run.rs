//! `evaluate` with pytorch-fid Inception weights wired in: FID/KID rows compute from a
//! weights file in the published key layout (keys and shapes from the Inception fixture;
//! closed-form values, so the numbers are plumbing checks, not metrics): an identical copy
//! gives FID ≈ 0, other scenes a positive FID, and the protocol is declared.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use strata_eval::seg::TrainOptions;
use strata_eval::{evaluate, EvalOptions, GeneratedSet, Metric, WeightPaths};
use strata_synth::{write_dataset, DatasetOptions};

fn inception_weights(path: &Path) {
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inception_fid.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut m = HashMap::new();
    for (s, e) in fx["state_dict"].as_array().unwrap().iter().enumerate() {
        let name = e[0].as_str().unwrap().to_string();
        let shape: Vec<usize> = serde_json::from_value(e[1].clone()).unwrap();
        if e[2].as_str().unwrap() == "int64" {
            m.insert(
                name,
                Tensor::zeros(shape, DType::I64, &Device::Cpu).unwrap(),
            );
            continue;
        }
        let n: usize = shape.iter().product();
        let fan = (n / shape[0]).max(1) as f64;
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let h = (12.9898 * i as f64 + 78.233 * s as f64).sin() * 43758.5453;
                let u = 2.0 * (h - h.floor()) - 1.0;
                (if name.ends_with("conv.weight") || name == "fc.weight" {
                    u * (6.0 / fan).sqrt()
                } else if name.ends_with("bn.weight") || name.ends_with("running_var") {
                    1.0 + 0.1 * u
                } else {
                    0.01 * u
                }) as f32
            })
            .collect();
        m.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&m, path).unwrap();
}

#[test]
fn fid_and_kid_rows_compute_from_inception_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = |dir: &str, seed| {
        write_dataset(
            &tmp.path().join(dir),
            &DatasetOptions {
                count: 4,
                size: 64,
                seed,
                classes: vec![],
            },
            &|| {},
        )
        .unwrap();
    };
    ds("real", 1);
    ds("other", 2);
    let w = tmp.path().join("pt_inception.safetensors");
    inception_weights(&w);
    let opts = EvalOptions {
        real: tmp.path().join("real"),
        generated: vec![
            GeneratedSet::parse(&format!(
                "copy/hierarchical={}",
                tmp.path().join("real/images").display()
            )),
            GeneratedSet::parse(&format!(
                "other/traditional={}",
                tmp.path().join("other/images").display()
            )),
        ],
        captions: None,
        metrics: vec![Metric::Fid, Metric::Kid, Metric::PieApp],
        out: tmp.path().join("out"),
        segmenter: None,
        segmenter_net: None,
        train: TrainOptions::default(),
        kid_subsets: 3,
        kid_subset_size: 3,
        seed: 0,
        weights: WeightPaths {
            inception: Some(w),
            ..WeightPaths::default()
        },
        grid_scenes: 2,
        device: candle_core::Device::Cpu,
    };
    let r = evaluate(&opts, &mut |_| {}).unwrap();
    let fid = |i: usize| r.sets[i].metrics["fid"].value.unwrap();
    assert!(fid(0).abs() < 1e-6 * (1.0 + fid(1)), "copy FID {}", fid(0));
    assert!(fid(1) > 1e-6, "other FID {}", fid(1));
    let kid = &r.sets[1].metrics["kid"];
    assert!(
        kid.value.is_some() && kid.note.contains("3 subsets of 3"),
        "{}",
        kid.note
    );
    assert!(r.sets[0].metrics["fid"].note.contains("pytorch-fid"));
    assert!(r.protocol["inception"].contains("299"));
    assert!(r.protocol["samples"].contains("4 name-matched"));
    // PieAPP without weights says what to pass.
    let p = &r.sets[0].metrics["pieapp"];
    assert!(
        p.value.is_none() && p.note.contains("--pieapp-weights"),
        "{}",
        p.note
    );
}

#[test]
fn kid_with_fewer_images_than_the_subset_size_is_not_computed() {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, seed) in [("real", 5), ("other", 6)] {
        write_dataset(
            &tmp.path().join(dir),
            &DatasetOptions {
                count: 3,
                size: 64,
                seed,
                classes: vec![],
            },
            &|| {},
        )
        .unwrap();
    }
    let w = tmp.path().join("pt_inception.safetensors");
    inception_weights(&w);
    let opts = EvalOptions {
        real: tmp.path().join("real"),
        generated: vec![GeneratedSet::parse(&format!(
            "other/traditional={}",
            tmp.path().join("other/images").display()
        ))],
        captions: None,
        metrics: vec![Metric::Fid, Metric::Kid],
        out: tmp.path().join("out"),
        segmenter: None,
        segmenter_net: None,
        train: TrainOptions::default(),
        kid_subsets: 10,
        kid_subset_size: 50,
        seed: 0,
        weights: WeightPaths {
            inception: Some(w),
            ..WeightPaths::default()
        },
        grid_scenes: 2,
        device: candle_core::Device::Cpu,
    };
    let r = evaluate(&opts, &mut |_| {}).unwrap();
    let k = &r.sets[0].metrics["kid"];
    assert_eq!(k.value, None);
    assert_eq!(k.std, None);
    assert!(
        k.note
            .starts_with("not computed: 3 images, fewer than the subset size 50"),
        "{}",
        k.note
    );
    // FID is still computed from the same features
    assert!(r.sets[0].metrics["fid"].value.is_some());
    let table = strata_eval::report::table_text(&r, &opts.metrics);
    assert!(table.contains("fewer than the subset size 50"), "{table}");
}
