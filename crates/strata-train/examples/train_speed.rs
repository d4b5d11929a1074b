//! CPU training speed on the tiny random model (run by hand, not a test):
//!
//!     cargo run -p strata-train --example train_speed
//!
//! Prints optimiser steps per second and images per second for each method at a few
//! resolutions/batch sizes (2 warm-up steps, then the fastest of 8), each measured twice in the
//! same run, alternating step by step: with candle's own matmul/conv backward for the frozen weights (which computes
//! their gradients and throws them away) and with `strata_models::ops`' frozen-weight ops
//! (the default), and the ratio.

use std::time::Instant;

use strata_train::{Captions, FusionKind, Method, TrainConfig, Trainer};

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    strata_models::testing::write_tiny_model(&model, 3).expect("model");
    let data = tmp.path().join("data");
    let opts = strata_synth::dataset::DatasetOptions {
        count: 16,
        size: 64,
        seed: 1,
        classes: vec![],
    };
    strata_synth::dataset::write_dataset(&data, &opts, &|| {}).expect("data");
    println!("| method | captions | resolution | batch | img/s candle ops | img/s frozen ops | speed-up |");
    println!("|---|---|---|---|---|---|---|");
    let cases = [
        (
            Method::Lora,
            Captions::Hierarchical,
            FusionKind::Fixed,
            32,
            4,
        ),
        (
            Method::Lora,
            Captions::Hierarchical,
            FusionKind::Learned,
            32,
            4,
        ),
        (Method::Lora, Captions::Flat, FusionKind::Fixed, 32, 4),
        (
            Method::Lora,
            Captions::Hierarchical,
            FusionKind::Fixed,
            64,
            4,
        ),
        (
            Method::Full,
            Captions::Hierarchical,
            FusionKind::Fixed,
            32,
            4,
        ),
        (
            Method::TextualInversion,
            Captions::Hierarchical,
            FusionKind::Fixed,
            32,
            4,
        ),
    ];
    for (method, captions, fusion, res, bs) in cases {
        let cfg = TrainConfig {
            method,
            captions,
            fusion,
            model: model.clone(),
            data: data.clone(),
            out: tmp.path().join("run"),
            resolution: res,
            batch_size: bs,
            max_steps: Some(1000),
            ..TrainConfig::default()
        };
        // Two trainers, stepped alternately (candle's ops, then ours) so that load changes on
        // a shared machine hit both; img/s from the fastest step of each (interference only
        // adds time).
        let mk = || Trainer::new(cfg.clone(), &mut |_| {}).expect("trainer");
        let (mut a, mut b) = (mk(), mk());
        let step = |t: &mut Trainer, frozen: bool| -> f64 {
            strata_models::ops::set_frozen_ops(frozen);
            let start = Instant::now();
            t.train_step("-").expect("step");
            start.elapsed().as_secs_f64()
        };
        for _ in 0..2 {
            step(&mut a, false);
            step(&mut b, true);
        }
        let (mut ta, mut tb) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..8 {
            ta = ta.min(step(&mut a, false));
            tb = tb.min(step(&mut b, true));
        }
        let (before, after) = (bs as f64 / ta, bs as f64 / tb);
        println!(
            "| {method:?}{} | {captions:?} | {res} | {bs} | {before:.1} | {after:.1} | {:.2}x |",
            if fusion == FusionKind::Learned {
                " + learned fusion"
            } else {
                ""
            },
            after / before
        );
    }
}
