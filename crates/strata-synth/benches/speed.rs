//! Scene generation speed on one core (the caller's thread; no rayon).
//! `cargo bench -p strata-synth --bench speed`
use std::path::Path;
use std::time::{Duration, Instant};

use strata_image::{encode_png_grey8, encode_png_rgb8};
use strata_synth::{generate, SceneClass};

fn rate(size: u32, encode: bool, min_time: Duration) -> (f64, usize) {
    let start = Instant::now();
    let mut n = 0usize;
    let mut sink = 0usize;
    while start.elapsed() < min_time || n < 22 {
        let class = SceneClass::ALL[n % SceneClass::ALL.len()];
        let scene = generate(class, size, n as u64);
        if encode {
            let p = Path::new("bench.png");
            sink += encode_png_rgb8(p, size as usize, size as usize, &scene.rgb)
                .unwrap()
                .len();
            sink += encode_png_grey8(p, size as usize, size as usize, &scene.mask)
                .unwrap()
                .len();
        } else {
            sink += scene.rgb[0] as usize;
        }
        n += 1;
    }
    std::hint::black_box(sink);
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments
    let t = Duration::from_secs(3);
    println!("strata-synth speed, one core, all 11 classes in turn");
    println!(
        "| size | scenes/s (image + mask + caption) | scenes/s (+ PNG encode of both) | target |"
    );
    println!("|---:|---:|---:|---:|");
    for (size, target) in [(64u32, 100.0), (128, 0.0), (256, 0.0), (512, 10.0)] {
        let (g, _) = rate(size, false, t);
        let (e, _) = rate(size, true, t);
        let tgt = if target > 0.0 {
            format!("≥ {target}")
        } else {
            "".into()
        };
        println!("| {size}×{size} | {g:.1} | {e:.1} | {tgt} |");
    }
}
