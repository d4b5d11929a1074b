//! Inputs the `raster` fuzz target found crashing the raster reader (fuzz/, docs/fuzz.md):
//! each must now give an error naming the file and the fault, not a panic or an allocation
//! of gigabytes.

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
