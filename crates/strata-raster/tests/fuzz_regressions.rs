//! Inputs that crashed the raster reader, found by the `raster` fuzz target (fuzz/,
//! docs/fuzz.md) or made by hand after reviewing it: each must now give an error naming the
//! file and the fault, not a panic or an allocation of gigabytes.

use std::path::{Path, PathBuf};

use strata_raster::source::open_file;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name)
}

/// Opens `p` and reads every row of every band as `strata prepare` does, 16 rows at a time.
fn read_whole(p: &Path) -> Result<(), String> {
    let mut r = open_file(p).map_err(|e| e.to_string())?;
    let info = r.info().clone();
    let bands: Vec<usize> = (0..info.bands).collect();
    let mut y0 = 0;
    while y0 < info.height {
        let h = 16.min(info.height - y0);
        let planes = r.read_rows(y0, h, &bands).map_err(|e| e.to_string())?;
        assert_eq!(planes.len(), bands.len());
        y0 += h;
    }
    Ok(())
}

/// The error text of reading fixture `name`.
fn read_all(name: &str) -> String {
    match read_whole(&fixture(name)) {
        Ok(()) => panic!("{name}: read whole"),
        Err(e) => e,
    }
}

/// The fuzz seeds are valid files written by GDAL (stripped, tiled, planar, LZW, Deflate,
/// PackBits, 8 to 32 bits, BigTIFF) and Pillow: the limits must not refuse any of them.
#[test]
fn the_valid_fuzz_seeds_still_read_whole() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/raster");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        read_whole(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        n += 1;
    }
    assert!(n >= 10, "{n} seeds in {}", dir.display());
}

/// `(file, words the error must hold)`.
const CASES: &[(&str, &[&str])] = &[
    // a GeoTIFF tag (ModelPixelScale, DOUBLE) whose count claims 84 GB of values
    (
        "huge_tag_count.tif",
        &["declares more data than the reader accepts", "MiB per tag"],
    ),
    // headers declaring images of 12 GB and 30 GB decoded, in files of a few hundred bytes
    // (made by scripts/fixtures/fuzz_hostile.py)
    (
        "jpeg_declares_65535x65535.jpg",
        &[
            "JPEG header declares 65535×65535 pixels",
            "more than the reader accepts",
        ],
    ),
    (
        "png_declares_100000x100000.png",
        &[
            "PNG header declares 100000×100000 pixels",
            "more than the reader accepts",
        ],
    ),
];

#[test]
fn fuzz_found_rasters_give_errors() {
    for (name, words) in CASES {
        let e = read_all(name);
        assert!(
            e.contains(name),
            "{name}: error does not name the file: {e}"
        );
        for w in *words {
            assert!(e.contains(w), "{name}: error lacks {w:?}: {e}");
        }
    }
}
