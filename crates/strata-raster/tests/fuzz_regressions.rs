//! Inputs that crashed the raster reader, found by the `raster` fuzz target (fuzz/,
//! docs/fuzz.md) or made by hand after reviewing it: each must now give an error naming the
//! file and the fault, not a panic or an allocation of gigabytes.

use std::path::PathBuf;

use strata_raster::source::open_file;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name)
}

/// Opens `name` and reads every row of every band as `strata prepare` does; the error text.
fn read_all(name: &str) -> String {
    let p = fixture(name);
    let mut r = match open_file(&p) {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    let info = r.info().clone();
    let bands: Vec<usize> = (0..info.bands).collect();
    let mut y0 = 0;
    while y0 < info.height {
        let h = 16.min(info.height - y0);
        if let Err(e) = r.read_rows(y0, h, &bands) {
            return e.to_string();
        }
        y0 += h;
    }
    panic!("{name}: read whole")
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
