//! What training learns about the text side reaches generation: after a few training steps
//! on a tiny model, the conditioning generation builds from the written output (LoRA file +
//! its recorded fusion, or a full fine-tune's model folder) for a training caption at a
//! timestep equals the one the trainer hands the UNet for that caption and timestep, tensor
//! for tensor. Each case also checks that the defaults (fixed schedule with default
//! parameters, concat) would give a different conditioning, so the record is what makes the
//! two agree.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use strata_models::conditioning::Conditioning;
use strata_models::fusion::record::{
    self, conditioning_source, CaptionMode, CaptionText, FusionOverrides, ScheduleChoice,
};
use strata_models::fusion::{FusionMode, Schedule};
use strata_train::{Captions, FusionKind, Method, TrainConfig, Trainer};

#[allow(dead_code)]
mod common;

/// A tiny model folder and a synthetic dataset (6 train images). `blank_text`: empty the
/// one-sentence captions, so a flat run trains on the segments joined.
fn setup(root: &Path, blank_text: bool) -> (PathBuf, PathBuf) {
    let (model, data) = common::tiny_model_and_scenes(root, 6);
    let mut recs = strata_caption::dataset::read_dataset(&data).unwrap();
    for r in recs.iter_mut() {
        r.split = Some(strata_caption::dataset::Split::Train);
        if blank_text {
            r.text = String::new();
        }
    }
    strata_caption::dataset::write_metadata(&data.join("metadata.jsonl"), &recs).unwrap();
    (model, data)
}

fn cfg(model: &Path, data: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        method: Method::Lora,
        model: model.into(),
        data: data.into(),
        out: out.into(),
        resolution: 16,
        batch_size: 2,
        max_steps: Some(3),
        lr: 5e-2,
        lr_schedule: strata_train::optim::LrSchedule::Constant,
        lora_rank: 2,
        lora_alpha: 2.0,
        caption_dropout: 0.0,
        // not the defaults, so a generator ignoring the record would differ
        fusion_centers: [0.9, 0.4, 0.15],
        fusion_widths: [0.25, 0.35, 0.3],
        fusion_floor: 0.1,
        ..TrainConfig::default()
    }
}

/// Trains `cfg` a few steps with a [`Trainer`] and writes its output into `cfg.out`.
fn train(cfg: TrainConfig) -> (Trainer, PathBuf) {
    let out = cfg.out.clone();
    std::fs::create_dir_all(&out).unwrap();
    let mut t = Trainer::new(cfg, &mut |_| {}).unwrap();
    while t.step < t.total_steps {
        t.train_step("(none)").unwrap();
    }
    let written = strata_train::run::write_output(&t, &out).unwrap();
    (t, written)
}

fn parts(c: &Conditioning) -> Vec<(&'static str, Tensor)> {
    match c {
        Conditioning::Context(x) => vec![("context", x.clone())],
        Conditioning::Decoupled { segments, weights } => {
            vec![("segments", segments.clone()), ("weights", weights.clone())]
        }
    }
}

/// Max |a − b| over every tensor of two conditionings; panics on a kind or shape mismatch.
fn max_diff(a: &Conditioning, b: &Conditioning) -> f32 {
    let (pa, pb) = (parts(a), parts(b));
    assert_eq!(
        pa.iter().map(|p| p.0).collect::<Vec<_>>(),
        pb.iter().map(|p| p.0).collect::<Vec<_>>(),
        "conditioning kinds differ"
    );
    let mut m = 0f32;
    for ((name, x), (_, y)) in pa.iter().zip(&pb) {
        assert_eq!(x.dims(), y.dims(), "{name} shapes differ");
        let d = (x.to_dtype(DType::F32).unwrap() - y.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        m = m.max(d);
    }
    m
}

/// Generation's conditioning for training item `i` at `t`, from the model (`lora` applied
/// when given) as `strata generate` builds it, with `ov` overriding the record.
fn generated(
    model: &Path,
    lora: Option<&Path>,
    caption: CaptionText,
    t: f64,
    ov: &FusionOverrides,
) -> (Conditioning, String) {
    let dev = Device::Cpu;
    let loaded = strata_models::pipeline::load_model(model, None, None, DType::F32, &dev).unwrap();
    let applied = record::resolve(lora, Some(model), ov, &dev).unwrap();
    let src = conditioning_source(
        &applied.record,
        &loaded.text,
        &loaded.tokenizer,
        &Default::default(),
        &[caption],
    )
    .unwrap();
    (src.at(t, 1).unwrap().0, applied.summary)
}

const TIMESTEPS: [f64; 3] = [999.0, 480.0, 17.0];
/// Agreement required between the trainer's and generation's conditioning. Both run the
/// same text encoder and fusion on the same weights; the only possible difference is the
/// text encoder seeing the caption in a batch (training) or alone (generation).
const TOL: f32 = 1e-5;

fn check_lora(kind: FusionKind, mode: FusionMode) {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path(), false);
    let mut c = cfg(&model, &data, &tmp.path().join("run"));
    c.fusion = kind;
    c.fusion_mode = mode;
    let (t, lora) = train(c);
    assert!(lora.is_file());
    let sidecar = record::sidecar_path(&lora);
    assert_eq!(
        sidecar.is_file(),
        kind == FusionKind::Learned,
        "{sidecar:?}"
    );
    if kind == FusionKind::Learned {
        // the schedule trained: it no longer reproduces its fixed starting point
        let Some(f) = &t.fusion else { panic!() };
        let Schedule::Learned(l) = &f.schedule else {
            panic!()
        };
        let fixed = t.cfg.fixed_schedule();
        let moved = (0..1000)
            .step_by(37)
            .map(|s| {
                let a = l.weights(s as f64).unwrap();
                let b = fixed.weights(s as f64);
                (0..3).map(|i| (a[i] - b[i]).abs()).fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        assert!(moved > 1e-3, "learned weights moved by {moved}");
    }
    let mut worst = 0f32;
    for (i, &ts) in [0usize, 3, 5].iter().zip(&TIMESTEPS) {
        let item = &t.data.items[*i];
        let caption = CaptionText::segments(item.segments.clone());
        let want = t.item_conditioning(*i, ts).unwrap();
        let (got, summary) = generated(
            &model,
            Some(lora.as_path()),
            caption.clone(),
            ts,
            &Default::default(),
        );
        assert!(summary.contains("recorded in the LoRA"), "{summary}");
        let d = max_diff(&got, &want);
        worst = worst.max(d);
        assert!(d <= TOL, "{kind:?}/{mode:?} item {i} t={ts}: max |Δ| = {d}");
        // the defaults give something else
        let ov = FusionOverrides {
            mode: Some(FusionMode::Concat),
            schedule: Some(ScheduleChoice::Fixed),
            centers: Some([1.0, 0.5, 0.0]),
            widths: Some([0.3; 3]),
            floor: Some(0.05),
            ..Default::default()
        };
        let (dflt, _) = generated(&model, Some(lora.as_path()), caption, ts, &ov);
        let differs = match (&dflt, &want) {
            (Conditioning::Context(_), Conditioning::Context(_)) => max_diff(&dflt, &want) > 1e-4,
            _ => true,
        };
        assert!(differs, "defaults would agree too: the test would not fail");
    }
    eprintln!("{kind:?}/{mode:?}: max |Δ| trainer vs generation = {worst:e}");
}

#[test]
fn lora_fixed_concat_round_trip() {
    check_lora(FusionKind::Fixed, FusionMode::Concat);
}

#[test]
fn lora_fixed_decoupled_round_trip() {
    check_lora(FusionKind::Fixed, FusionMode::Decoupled);
}

#[test]
fn lora_learned_concat_round_trip() {
    check_lora(FusionKind::Learned, FusionMode::Concat);
}

#[test]
fn lora_learned_decoupled_round_trip() {
    check_lora(FusionKind::Learned, FusionMode::Decoupled);
}

/// A flat-caption LoRA: generation from segments takes the flat path with the segments
/// joined, which is what the trainer trains on when a record has no one-sentence caption.
#[test]
fn lora_flat_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path(), true);
    let mut c = cfg(&model, &data, &tmp.path().join("run"));
    c.captions = Captions::Flat;
    c.fusion_mode = FusionMode::Decoupled;
    let (t, lora) = train(c);
    let h = record::read_lora_header(&lora).unwrap().unwrap();
    assert_eq!(h.captions, CaptionMode::Flat);
    for (i, &ts) in [1usize, 4].iter().zip(&TIMESTEPS) {
        let item = &t.data.items[*i];
        assert_eq!(item.flat, item.segments.joined());
        let want = t.item_conditioning(*i, ts).unwrap();
        let (got, summary) = generated(
            &model,
            Some(lora.as_path()),
            CaptionText::segments(item.segments.clone()),
            ts,
            &Default::default(),
        );
        assert!(summary.contains("flat captions"), "{summary}");
        let d = max_diff(&got, &want);
        assert!(d <= TOL, "flat item {i}: max |Δ| = {d}");
        // the hierarchical path would give a 231-token context instead
        let (hier, _) = generated(
            &model,
            Some(lora.as_path()),
            CaptionText::segments(item.segments.clone()),
            ts,
            &FusionOverrides {
                captions: Some(CaptionMode::Hierarchical),
                mode: Some(FusionMode::Concat),
                ..Default::default()
            },
        );
        let Conditioning::Context(x) = hier else {
            panic!("concat mode gives one context")
        };
        assert_eq!(x.dim(1).unwrap(), 3 * 77);
    }
}

/// A full fine-tune with a learned schedule in decoupled mode: the model folder's
/// `fusion/` record gives generation the trained schedule.
#[test]
fn full_learned_decoupled_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path(), false);
    let mut c = cfg(&model, &data, &tmp.path().join("run"));
    c.method = Method::Full;
    c.fusion = FusionKind::Learned;
    c.fusion_mode = FusionMode::Decoupled;
    c.max_steps = Some(2);
    c.lr = 1e-2;
    let (t, out) = train(c);
    assert!(out.join("fusion/config.json").is_file());
    assert!(out.join("fusion/schedule.safetensors").is_file());
    for (i, &ts) in [2usize, 5].iter().zip(&TIMESTEPS) {
        let item = &t.data.items[*i];
        let want = t.item_conditioning(*i, ts).unwrap();
        let (got, summary) = generated(
            &out,
            None,
            CaptionText::segments(item.segments.clone()),
            ts,
            &Default::default(),
        );
        assert!(
            summary.contains("learned schedule from schedule.safetensors, decoupled mode (recorded in the model folder)"),
            "{summary}"
        );
        let d = max_diff(&got, &want);
        assert!(d <= TOL, "full item {i}: max |Δ| = {d}");
    }
}
