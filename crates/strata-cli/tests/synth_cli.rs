//! `strata synth` end to end.

mod common;
use common::strata;

#[test]
fn synth_writes_a_reproducible_dataset_that_verifies() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [a.path(), b.path()] {
        let out = strata()
            .args([
                "synth",
                "--count",
                "6",
                "--size",
                "64",
                "--seed",
                "5",
                "--classes",
                "park,square,dense_residential",
                "--out",
            ])
            .arg(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta_a = std::fs::read_to_string(a.path().join("metadata.jsonl")).unwrap();
    assert_eq!(
        meta_a,
        std::fs::read_to_string(b.path().join("metadata.jsonl")).unwrap()
    );
    assert_eq!(meta_a.lines().count(), 6);
    for line in meta_a.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let scene = v["scene"].as_str().unwrap();
        assert!(
            ["park", "square", "dense residential"].contains(&scene),
            "{scene}"
        );
        let f = v["file_name"].as_str().unwrap();
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap()
        );
    }
    let out = strata()
        .args(["synth", "--verify"])
        .arg(a.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 problem(s)"));
}

#[test]
fn synth_verify_fails_on_a_broken_mask() {
    let d = tempfile::tempdir().unwrap();
    let out = strata()
        .args([
            "synth",
            "--count",
            "2",
            "--size",
            "64",
            "--classes",
            "square",
            "--out",
        ])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    // blank every mask: no relation can hold any more
    let meta = std::fs::read_to_string(d.path().join("metadata.jsonl")).unwrap();
    for line in meta.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let m = d.path().join(v["mask_file_name"].as_str().unwrap());
        let bytes = strata_image::encode_png_grey8(&m, 64, 64, &[0u8; 64 * 64]).unwrap();
        std::fs::write(&m, bytes).unwrap();
    }
    let out = strata()
        .args(["synth", "--verify"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not hold"));
}

#[test]
fn synth_grid_and_bad_options() {
    let d = tempfile::tempdir().unwrap();
    let grid = d.path().join("grid.png");
    let out = strata()
        .args(["synth", "--grid"])
        .arg(&grid)
        .args(["--size", "64", "--seed", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&grid).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let be = |o: usize| u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    // IHDR: 4 columns and 11 rows of 64 px tiles with 4 px gaps
    assert_eq!((be(16), be(20)), (4 * 64 + 5 * 4, 11 * 64 + 12 * 4));

    let out = strata()
        .args(["synth", "--classes", "harbour", "--out"])
        .arg(d.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scene class"));
    let out = strata()
        .args(["synth", "--size", "8", "--out"])
        .arg(d.path().join("y"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}
