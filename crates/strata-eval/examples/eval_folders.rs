//! The `strata eval` library path without the CLI: writes a synthetic "real" dataset, two
//! stand-in generated folders (the real images with noise; other scenes under the same
//! names), and the report.
//!
//! cargo run -p strata-eval --example eval_folders -- OUT_DIR [SEG_STEPS]

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use strata_eval::images::{list_images, read_image};
use strata_eval::seg::TrainOptions;
use strata_eval::{evaluate, EvalOptions, GeneratedSet, Metric, WeightPaths};
use strata_synth::png_io::write_atomic;
use strata_synth::{write_dataset, DatasetOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("eval-demo"));
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(150);
    let ds = |dir: &str, seed| {
        write_dataset(
            &out.join(dir),
            &DatasetOptions {
                count: 44,
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
    // noisy copy of the real images
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for rel in list_images(&out.join("real/images")).unwrap() {
        let img = read_image(&out.join("real/images").join(&rel)).unwrap();
        let noisy: Vec<u8> = img
            .data
            .iter()
            .map(|&v| (v as i32 + rng.gen_range(-12..=12)).clamp(0, 255) as u8)
            .collect();
        let p = out.join("noisy").join(&rel);
        write_atomic(
            &p,
            &strata_image::encode_png_rgb8(&p, img.width, img.height, &noisy).unwrap(),
        )
        .unwrap();
    }
    let opts = EvalOptions {
        real: out.join("real"),
        generated: vec![
            GeneratedSet::parse(&format!(
                "noisy-copy/hierarchical={}",
                out.join("noisy").display()
            )),
            GeneratedSet::parse(&format!(
                "other-scenes/traditional={}",
                out.join("other/images").display()
            )),
        ],
        captions: None,
        metrics: Metric::ALL.to_vec(),
        out: out.join("report"),
        segmenter: Some(out.join("segmenter.safetensors")),
        segmenter_net: None,
        train: TrainOptions {
            steps,
            ..TrainOptions::default()
        },
        kid_subsets: 50,
        kid_subset_size: 1000,
        seed: 0,
        weights: WeightPaths::default(),
        grid_scenes: 11,
        device: candle_core::Device::Cpu,
    };
    let t = std::time::Instant::now();
    let r = evaluate(&opts, &mut |m| eprintln!("eval: {m}")).unwrap();
    let table = strata_eval::report::write_outputs(&r, &opts).unwrap();
    println!("{table}");
    eprintln!("evaluate + report: {:.1} s", t.elapsed().as_secs_f64());
}
