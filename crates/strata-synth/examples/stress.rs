//! Run the checker on many scenes (positives and constructed negatives) and list every
//! disagreement: `cargo run --release -p strata-synth --example stress -- SEEDS SIZE...`
use strata_synth::{check, generate, negative, MaskView, SceneClass};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = a.first().and_then(|s| s.parse().ok()).unwrap_or(50);
    let sizes: Vec<u32> = a.iter().skip(1).filter_map(|s| s.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![64, 128, 256]
    } else {
        sizes
    };
    let (mut n, mut bad) = (0, 0);
    for &size in &sizes {
        for seed in 0..seeds {
            for class in SceneClass::ALL {
                let scene = generate(class, size, 77_000 + seed);
                for t in &scene.triples {
                    n += 2;
                    let v = check(&scene.mask_view(), t).unwrap();
                    if !v.holds {
                        bad += 1;
                        println!(
                            "POS {class:?} {size} {} {} {} {}: {}",
                            77_000 + seed,
                            t.relation,
                            t.subject,
                            t.object,
                            v.detail
                        );
                    }
                    let neg = negative(&scene.mask_view(), t).unwrap();
                    let v = check(
                        &MaskView::new(size as usize, size as usize, &neg).unwrap(),
                        t,
                    )
                    .unwrap();
                    if v.holds {
                        bad += 1;
                        println!(
                            "NEG {class:?} {size} {} {} {} {}: {}",
                            77_000 + seed,
                            t.relation,
                            t.subject,
                            t.object,
                            v.detail
                        );
                    }
                }
            }
        }
    }
    println!("{bad} disagreements in {n} decisions");
}
