//! Captions image files with the embedded default captioner and prints scene, elements and
//! the candidate relation sentences (a quick look; `strata caption` is the real tool).
//!
//! `cargo run --release -p strata-captioner --example caption_image -- IMAGE...`

use std::path::Path;

use strata_captioner::{EmbeddedCaptioner, ImageCaptioner, ImageScene, ImageTagger};

fn main() {
    let mut cap = EmbeddedCaptioner::load_default().unwrap_or_else(|e| panic!("{e}"));
    let mut failed = 0;
    for arg in std::env::args().skip(1) {
        let img = match strata_image::read_rgb8(Path::new(&arg)) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{arg}: {e}");
                failed += 1;
                continue;
            }
        };
        let scene = cap.classify(&img).expect("scene");
        let tags = cap.tag(&img).expect("elements");
        println!("{arg} ({}×{})", img.width, img.height);
        match scene {
            Some(s) => println!("  scene: {} ({:.2})", s.scene, s.score),
            None => println!("  scene: none above the threshold"),
        }
        let names: Vec<String> = tags
            .iter()
            .map(|t| format!("{} {:.2}", t.element, t.score))
            .collect();
        println!("  elements: {}", names.join(", "));
        for c in cap.candidates(&img, 0).expect("candidates") {
            let c = c.expect("candidate");
            println!("  {}  [{}]", c.text, c.decoding);
        }
    }
    if failed > 0 {
        eprintln!("{failed} image(s) could not be read");
        std::process::exit(1);
    }
}
