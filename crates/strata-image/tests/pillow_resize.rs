//! `resize` against Pillow's `Image.resize` on real-content crops, every filter, integer and
//! non-integer shrink factors, enlargements and one-axis resizes. Fixtures:
//! scripts/fixtures/image_pillow.py. Expected: bit-exact (max abs difference 0).

use std::path::{Path, PathBuf};

use strata_image::{read_rgb8, resize, Filter, RgbImage};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pillow")
}

fn manifest() -> serde_json::Value {
    let s = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn filter(name: &str) -> Filter {
    match name {
        "nearest" => Filter::Nearest,
        "box" => Filter::Box,
        "bilinear" => Filter::Bilinear,
        "hamming" => Filter::Hamming,
        "bicubic" => Filter::Bicubic,
        "lanczos" => Filter::Lanczos,
        other => panic!("unknown filter {other}"),
    }
}

fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn resize_matches_pillow_bit_for_bit() {
    let m = manifest();
    let cases = m["resize"].as_array().unwrap();
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let mut failures = vec![];
    for c in cases {
        let input = read_rgb8(&dir().join(c["input"].as_str().unwrap())).unwrap();
        let want = read_rgb8(&dir().join(c["output"].as_str().unwrap())).unwrap();
        let (w, h) = (
            c["width"].as_u64().unwrap() as usize,
            c["height"].as_u64().unwrap() as usize,
        );
        let got = resize(&input, w, h, filter(c["filter"].as_str().unwrap()));
        let d = max_diff(&got, &want);
        if d != 0 {
            let n = got
                .data
                .iter()
                .zip(&want.data)
                .filter(|(a, b)| a != b)
                .count();
            failures.push(format!("{}: max diff {d}, {n} samples differ", c["output"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
