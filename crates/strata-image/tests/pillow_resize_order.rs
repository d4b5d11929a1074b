//! `resize` against Pillow when both axes change: Pillow runs the vertical pass first when the
//! image loses more than twice as many rows as columns, and the 8-bit rounding between the
//! passes shows the order. Fixtures: scripts/fixtures/image_pillow_order.py (which checks that
//! Pillow took the order the rule names). Expected: bit-exact.

use std::path::{Path, PathBuf};

use strata_image::{read_rgb8, resize, Filter};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pillow_order")
}

#[test]
fn resize_takes_pillows_pass_order() {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap())
            .unwrap();
    let cases = m["resize"].as_array().unwrap();
    assert_eq!(cases.len(), 24);
    let vertical = cases.iter().filter(|c| c["vertical_first"] == true).count();
    assert!(
        vertical > 0 && vertical < cases.len(),
        "both orders are covered"
    );
    for c in cases {
        let input = read_rgb8(&dir().join(c["input"].as_str().unwrap())).unwrap();
        let want = read_rgb8(&dir().join(c["output"].as_str().unwrap())).unwrap();
        let filter = match c["filter"].as_str().unwrap() {
            "bicubic" => Filter::Bicubic,
            "bilinear" => Filter::Bilinear,
            "lanczos" => Filter::Lanczos,
            other => panic!("unknown filter {other}"),
        };
        let got = resize(
            &input,
            c["width"].as_u64().unwrap() as usize,
            c["height"].as_u64().unwrap() as usize,
            filter,
        );
        let diff = got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            diff, 0,
            "{}: {diff} samples differ from Pillow",
            c["output"]
        );
    }
}
