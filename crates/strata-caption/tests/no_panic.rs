//! Randomised no-panic checks (a seeded stand-in for the cargo-fuzz targets in `fuzz/`,
//! which CI does not run): sentence analysis, corrections and every parser must return,
//! never panic, on arbitrary text.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use strata_caption::correct::remove_vertical_clauses;
use strata_caption::dataset::parse_metadata;
use strata_caption::import::{parse_coco, parse_karpathy};
use strata_caption::{analyze, correct, select_golden, Fallback, HierarchicalCaption, Knowledge};

const WORDS: &[&str] = &[
    "a",
    "the",
    "and",
    "between",
    "surrounded",
    "by",
    "next",
    "to",
    "under",
    "over",
    "bridge",
    "river",
    "trees",
    "cars",
    "parking",
    "lot",
    "on",
    "both",
    "sides",
    "of",
    "in",
    "middle",
    ",",
    ".",
    ";",
    "!",
    "?",
    "while",
    "but",
    "é",
    "ß",
    "İ",
    "🚗",
    "\u{0301}",
    "-",
    "'",
    "\n",
    "  ",
    "rail",
    "tracks",
    "lined",
    "with",
    "above",
    "behind",
    "front",
    "ΣΑΣ",
    "\u{200b}",
];

fn random_text(rng: &mut ChaCha8Rng) -> String {
    let n = rng.gen_range(0..30);
    let mut s = String::new();
    for _ in 0..n {
        if rng.gen_bool(0.1) {
            s.push(char::from_u32(rng.gen_range(0..0x3000)).unwrap_or('x'));
        } else {
            s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        }
        if rng.gen_bool(0.7) {
            s.push(' ');
        }
    }
    s
}

#[test]
fn analysis_and_corrections_never_panic() {
    let k = Knowledge::embedded();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..3000 {
        let s = random_text(&mut rng);
        let a = analyze(&k, &s);
        for m in &a.relations {
            assert!(
                s.get(m.span.clone()).is_some(),
                "span off a char boundary in {s:?}"
            );
        }
        let (t, _) = remove_vertical_clauses(&k, &s);
        // Removing vertical clauses is idempotent once nothing vertical is left.
        if analyze(&k, &t).vertical.is_empty() {
            assert_eq!(remove_vertical_clauses(&k, &t).0, t, "{s:?}");
        }
        let mut c = HierarchicalCaption {
            scene: random_text(&mut rng),
            relation: s.clone(),
            elements: vec![random_text(&mut rng), random_text(&mut rng)],
        };
        correct(&k, &mut c);
        let _ = select_golden(&k, [s.clone(), t], Some(3), Fallback::StripVertical);
    }
}

#[test]
fn parsers_never_panic_on_mutated_input() {
    let seeds = [
        r#"{"images":[{"filename":"a_1.jpg","sentences":[{"raw":"a b"}],"split":"train"}]}"#,
        r#"{"images":[{"id":1,"file_name":"a.png"}],"annotations":[{"image_id":1,"caption":"x"}]}"#,
        r#"{"file_name":"a.png","scene":"park","relation":"","elements":[],"text":"","split":"test"}"#,
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..3000 {
        let mut b = seeds[rng.gen_range(0..seeds.len())].as_bytes().to_vec();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..b.len());
            match rng.gen_range(0..3) {
                0 => b[i] = rng.gen(),
                1 => {
                    b.remove(i);
                }
                _ => {
                    let set = b"{}[]\",:0\\/.";
                    b.insert(i, set[rng.gen_range(0..set.len())])
                }
            }
            if b.is_empty() {
                b.push(b'{');
            }
        }
        let text = String::from_utf8_lossy(&b);
        let p = Path::new("x.json");
        let _ = parse_karpathy(&text, p, Path::new("."));
        let _ = parse_coco(&text, p, Path::new("."));
        let _ = parse_metadata(&text, p);
    }
}
