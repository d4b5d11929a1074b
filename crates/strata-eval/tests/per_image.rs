//! Per-image values of `evaluate` give back the set values of the table: relation counts
//! checked independently (the saved segmenter's masks through `strata_synth::check`),
//! sFID*/sKID* recomputed from the per-image segmenter features, GSHPS from the per-image
//! classifier features; the rows are aligned with the folders' image files.

use std::path::Path;

use strata_eval::images::{list_images, pair_key, read_image};
use strata_eval::seg::{SegNet, TrainOptions, SEG_SIZE};
use strata_eval::{
    evaluate, frechet_distance_features, kid, EvalOptions, Features, GeneratedSet, Metric,
    WeightPaths,
};
use strata_synth::{check, write_dataset, DatasetOptions, MaskView, Triple};

fn dataset(dir: &Path, count: usize, seed: u64) {
    write_dataset(
        dir,
        &DatasetOptions {
            count,
            size: 64,
            seed,
            classes: vec![],
        },
        &|| {},
    )
    .unwrap();
}

#[test]
fn per_image_values_add_up_to_the_set_values() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(&tmp.path().join("real"), 22, 71);
    dataset(&tmp.path().join("gen"), 22, 72);
    let seg_path = tmp.path().join("seg.safetensors");
    let opts = EvalOptions {
        real: tmp.path().join("real"),
        generated: vec![GeneratedSet::parse(&format!(
            "other/hierarchical={}",
            tmp.path().join("gen/images").display()
        ))],
        captions: None,
        metrics: vec![
            Metric::RelationFidelity,
            Metric::SynthFid,
            Metric::SynthKid,
            Metric::Gshps,
        ],
        out: tmp.path().join("out"),
        segmenter: Some(seg_path.clone()),
        segmenter_net: None,
        train: TrainOptions {
            steps: 60,
            train_scenes: 88,
            held_out_scenes: 22,
            ..TrainOptions::default()
        },
        kid_subsets: 5,
        kid_subset_size: 10,
        seed: 3,
        weights: WeightPaths {
            gshps_train: strata_eval::gshps::CnnTrainOptions {
                steps: 20,
                ..Default::default()
            },
            ..WeightPaths::default()
        },
        grid_scenes: 2,
        device: candle_core::Device::Cpu,
    };
    let r = evaluate(&opts, &mut |_| {}).unwrap();
    let set = &r.sets[0];
    let gen_dir = tmp.path().join("gen/images");

    // aligned with the folders' files
    let files = list_images(&gen_dir).unwrap();
    assert_eq!(
        set.per_image
            .iter()
            .map(|v| v.file.clone())
            .collect::<Vec<_>>(),
        files
    );
    assert_eq!(r.real_per_image.len(), 22);
    assert!(set.per_image.iter().all(|v| v.real_file.is_some()));

    // relation counts: independently, the saved segmenter's masks through the checker
    let net = SegNet::load(&seg_path).unwrap();
    let meta =
        strata_caption::dataset::read_metadata(&tmp.path().join("real/metadata.jsonl")).unwrap();
    let (mut honoured, mut requested) = (0usize, 0usize);
    for v in &set.per_image {
        let img = read_image(&gen_dir.join(&v.file)).unwrap();
        let mask = net.predict(&[&img]).unwrap().remove(0).mask;
        let rec = meta
            .iter()
            .find(|m| pair_key(&m.file_name).ends_with(&v.key))
            .unwrap();
        let triples: Vec<Triple> = serde_json::from_value(rec.extra["relations"].clone()).unwrap();
        let view = MaskView::new(SEG_SIZE, SEG_SIZE, &mask).unwrap();
        let h = triples
            .iter()
            .filter(|t| check(&view, t).unwrap().holds)
            .count();
        assert_eq!(v.relations, Some((h, triples.len())), "{}", v.file);
        honoured += h;
        requested += triples.len();
    }
    assert!(requested > 0);
    let share = set.metrics["relation-fidelity"].value.unwrap();
    assert!((share - honoured as f64 / requested as f64).abs() < 1e-12);
    // weighted mean of the per-image shares
    let weighted: f64 = set
        .per_image
        .iter()
        .filter_map(|v| v.relations)
        .filter(|r| r.1 > 0)
        .map(|(h, n)| (h as f64 / n as f64) * n as f64)
        .sum::<f64>()
        / requested as f64;
    assert!((share - weighted).abs() < 1e-12);

    // sFID*/sKID* from the per-image segmenter features
    let rows = |vs: &[strata_eval::ImageValues]| {
        Features::from_rows(
            &vs.iter()
                .map(|v| v.seg_features.clone().unwrap())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let (fr, fg) = (rows(&r.real_per_image), rows(&set.per_image));
    let sfid = frechet_distance_features(&fr, &fg).unwrap();
    assert!((sfid - set.metrics["synth-fid"].value.unwrap()).abs() < 1e-9 * (1.0 + sfid));
    let k = kid(&fr, &fg, 5, 10, 3).unwrap();
    assert!((k.mean - set.metrics["synth-kid"].value.unwrap()).abs() < 1e-12);

    // GSHPS: cosine of the mean per-image classifier features of the pairs
    let g = set.metrics["gshps"].value.unwrap();
    let d = set.per_image[0].gshps_features.as_ref().unwrap().len();
    let mut a = vec![0.0; d];
    let mut b = vec![0.0; d];
    for v in &set.per_image {
        let real = r
            .real_per_image
            .iter()
            .find(|x| Some(&x.file) == v.real_file.as_ref())
            .unwrap();
        for i in 0..d {
            a[i] += real.gshps_features.as_ref().unwrap()[i];
            b[i] += v.gshps_features.as_ref().unwrap()[i];
        }
    }
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let n = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((g - dot / (n(&a) * n(&b))).abs() < 1e-9, "{g}");

    // per_image.jsonl: one line per image, real first
    strata_eval::report::write_outputs(&r, &opts).unwrap();
    let text = std::fs::read_to_string(opts.out.join("per_image.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 44);
    assert_eq!(lines[0]["set"], "real");
    assert_eq!(lines[22]["set"], "other/hierarchical");
    assert_eq!(lines[22]["file"], files[0].as_str());
    assert!(lines[22]["relations"].is_array());
}
