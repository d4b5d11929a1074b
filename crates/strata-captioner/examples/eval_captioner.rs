//! Prints the embedded captioner's figures on held-out synthetic scenes: segmenter pixel
//! accuracy, mIoU and scene accuracy, then the caption accuracy of [`evaluate`], and the
//! caption of the first few scenes.
//!
//! `cargo run --release -p strata-captioner --example eval_captioner -- [COUNT] [SEED] [WEIGHTS]`
//! (defaults: 440 scenes, seed 3000, the compiled-in weights).

use std::path::Path;
use std::time::Instant;

use strata_captioner::embedded::{
    evaluate, evaluate_thresholds, train, EmbeddedCaptioner, Thresholds,
};
use strata_captioner::{ImageCaptioner, ImageScene, ImageTagger};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = args
        .first()
        .map_or(440, |a| a.parse().expect("COUNT: a number"));
    let seed: u64 = args
        .get(1)
        .map_or(3000, |a| a.parse().expect("SEED: a number"));
    let mut cap = match args.get(2) {
        Some(p) => EmbeddedCaptioner::load(Path::new(p)),
        None => EmbeddedCaptioner::load_default(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let mut meta: Vec<_> = cap.metadata().iter().collect();
    meta.sort();
    for (k, v) in meta {
        println!("{k}: {v}");
    }
    let t = Instant::now();
    let held = train::samples(count, seed);
    let seg = train::evaluate(cap.net(), &held).expect("segmenter figures");
    println!(
        "segmenter on {} held-out scenes (seed {seed}): pixel accuracy {:.4}, mIoU {:.4}, scene accuracy {:.4}",
        seg.scenes, seg.pixel_accuracy, seg.mean_iou, seg.scene_accuracy
    );
    let acc = evaluate(&cap, count, seed).expect("caption accuracy");
    println!("{acc:#?}");
    println!("({:.1} s)", t.elapsed().as_secs_f64());
    if std::env::var_os("SWEEP").is_some() {
        // the threshold choice (run on the validation seed, never on the test seed)
        let mut settings = Vec::new();
        for conf in [0.3f32, 0.4, 0.5, 0.6] {
            for area in [0.004f32, 0.008, 0.012] {
                settings.push(Thresholds {
                    min_confidence: conf,
                    min_area: area,
                    ..Thresholds::default()
                });
            }
        }
        let accs = evaluate_thresholds(&cap, count, seed, &settings).expect("sweep");
        for (th, a) in settings.iter().zip(accs) {
            println!(
                "conf {:.2} area {:.3}: elements P {:.3} R {:.3} F1 {:.3} | triples P {:.3} R {:.3}",
                th.min_confidence, th.min_area, a.element_precision, a.element_recall, a.element_f1,
                a.triple_precision, a.triple_recall
            );
        }
    }
    for s in held.iter().take(11) {
        let scene = cap.classify(&s.rgb).expect("scene");
        let tags = cap.tag(&s.rgb).expect("tags");
        let cands: Vec<_> = cap
            .candidates(&s.rgb, 0)
            .expect("candidates")
            .collect::<Result<_, _>>()
            .expect("candidate");
        println!("\n{} (truth) -> {:?}", s.scene.name(), scene);
        println!(
            "  elements {:?}",
            tags.iter()
                .map(|t| format!("{} {:.2}", t.element, t.score))
                .collect::<Vec<_>>()
        );
        println!("  truth elements {:?}", s.elements);
        for c in cands {
            println!("  {} [{}]", c.text, c.decoding);
        }
    }
}
