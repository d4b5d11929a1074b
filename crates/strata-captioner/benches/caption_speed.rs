//! Captioning speed against transformers on the same weights and images.
//!
//! `scripts/bench/caption_peer.py` builds a base-size BLIP (`Salesforce/blip-image-captioning-base`'s
//! configuration: ViT-B/16 at 384 px, BERT-base decoder; random weights) and a base-size CLIP
//! (ViT-B/32 at 224 px) with transformers, saves both and N images of 384×384 into a folder,
//! times transformers on them (`torch.set_num_threads(2)`) and writes `peer.json`. This bench
//! loads the same folders and times:
//!
//! * BLIP greedy captioning, one image at a time: preprocessing, ViT, 20 new tokens, decoding.
//!   `[SEP]` is suppressed for the whole length on both sides (`min_length` = `[DEC]` + 20,
//!   `max_new_tokens` = 20), so every caption costs the same 20 decoder steps;
//! * the CLIP image tower (`strata_eval::clipscore::ClipScorer`: preprocessing and
//!   `image_features`), one image at a time;
//!
//! and prints images/s for both implementations and the ratio.
//!
//! Run: `.venv/bin/python scripts/bench/caption_peer.py --out DIR --images 200 --rust`
//! (which runs this bench afterwards), or the script without `--rust`, then
//! `RAYON_NUM_THREADS=2 cargo bench -p strata-captioner --bench caption_speed -- --dir DIR [--images N]`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use strata_captioner::blip::{DecodePlan, Draw, Strategy};
use strata_captioner::BlipCaptioner;
use strata_eval::clipscore::ClipScorer;

const NEW_TOKENS: usize = 20;

fn usage() -> ! {
    eprintln!(
        "caption_speed: needs --dir DIR made by scripts/bench/caption_peer.py (blip/, clip/, images/, peer.json); optional --images N"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut dir: Option<PathBuf> = None;
    let mut limit: Option<usize> = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--dir" => {
                dir = args.get(i + 1).map(PathBuf::from);
                i += 1;
            }
            "--images" => {
                limit = args.get(i + 1).and_then(|s| s.parse().ok());
                if limit.is_none() {
                    usage();
                }
                i += 1;
            }
            // cargo bench passes --bench
            _ => {}
        }
        i += 1;
    }
    let Some(dir) = dir else {
        eprintln!("caption_speed: no --dir given; nothing measured");
        usage()
    };
    let images = load_images(&dir.join("images"), limit);
    let n = images.len();
    let threads = rayon_threads();
    println!(
        "{n} images of {}x{}, candle on the CPU with {threads} threads",
        images[0].width, images[0].height
    );
    let dev = Device::Cpu;

    // BLIP: greedy, exactly NEW_TOKENS new tokens
    let plan = DecodePlan {
        steps: vec![Strategy::Greedy],
        prompts: vec![None],
        max_new_tokens: NEW_TOKENS,
        min_length: 1 + NEW_TOKENS,
    };
    let cap = BlipCaptioner::load(&dir.join("blip"), &dev)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_plan(plan);
    let draw = Draw {
        strategy: Strategy::Greedy,
        prompt: None,
        seed: None,
    };
    let caption = |img| {
        let p = cap.prepare(img).expect("prepare");
        let ids = cap.generate(&p, &draw).expect("generate");
        assert_eq!(ids.len(), 1 + NEW_TOKENS, "every caption runs 20 steps");
        cap.tokenizer.decode(&ids).expect("decode")
    };
    let _ = caption(&images[0]); // warm-up (allocations, thread pool)
    let t = Instant::now();
    let mut first = String::new();
    for (k, img) in images.iter().enumerate() {
        let s = caption(img);
        if k == 0 {
            first = s;
        }
    }
    let blip_s = t.elapsed().as_secs_f64();
    let blip_ips = n as f64 / blip_s;
    println!(
        "strata BLIP base greedy ({NEW_TOKENS} tokens): {blip_ips:.3} images/s ({blip_s:.1} s); first caption {:?}",
        first.chars().take(60).collect::<String>()
    );

    // CLIP image tower
    let clip = ClipScorer::load(&dir.join("clip"), &dev).unwrap_or_else(|e| panic!("{e}"));
    let embed = |img: &strata_image::RgbImage| {
        let px = clip
            .preprocess(std::slice::from_ref(img), &dev)
            .expect("preprocess");
        clip.image_features(&px).expect("features")
    };
    let _ = embed(&images[0]);
    let t = Instant::now();
    for img in &images {
        let _ = embed(img);
    }
    let clip_s = t.elapsed().as_secs_f64();
    let clip_ips = n as f64 / clip_s;
    println!("strata CLIP ViT-B/32 image tower: {clip_ips:.3} images/s ({clip_s:.1} s)");

    match std::fs::read_to_string(dir.join("peer.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
    {
        Some(peer) => {
            let pn = peer["images"].as_u64().unwrap_or(0);
            let pb = peer["blip_images_per_s"].as_f64().unwrap_or(f64::NAN);
            let pc = peer["clip_images_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "transformers {} (torch {}, {} threads, {pn} images): BLIP {pb:.3} images/s, CLIP {pc:.3} images/s",
                peer["transformers"].as_str().unwrap_or("?"),
                peer["torch"].as_str().unwrap_or("?"),
                peer["threads"]
            );
            println!(
                "ratio strata / transformers: BLIP {:.2}x, CLIP {:.2}x",
                blip_ips / pb,
                clip_ips / pc
            );
            if let Some(pf) = peer["first_caption"].as_str() {
                println!(
                    "first caption the same as transformers' (same weights, greedy): {}",
                    if pf == first { "yes" } else { "NO" }
                );
            }
        }
        None => println!(
            "no peer.json in {}: run scripts/bench/caption_peer.py first",
            dir.display()
        ),
    }
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    })
}

fn load_images(dir: &Path, limit: Option<usize>) -> Vec<strata_image::RgbImage> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/bench/caption_peer.py first",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    files.sort();
    if let Some(n) = limit {
        files.truncate(n);
    }
    assert!(!files.is_empty(), "no PNG images in {}", dir.display());
    files
        .iter()
        .map(|p| strata_image::read_rgb8(p).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}
