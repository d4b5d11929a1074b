//! The raster reader (`strata_raster::source::open_file`: GeoTIFF, PNG, JPEG): open the file,
//! then read row blocks of every band as `strata prepare` does. Arbitrary bytes must give a
//! value or an error, never a panic, an abort or an allocation the file does not justify.
//!
//! The row buffers a caller asks for are `width × rows` floats per band; rasters wider than
//! the cap below are opened but not read (that allocation is the caller's, not the file's).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_raster::source::open_file;

/// Largest `width × bands × BLOCK` samples read per block.
const MAX_BLOCK_SAMPLES: u64 = 1 << 22;
const BLOCK: u32 = 16;
/// Blocks read at most (the first ones and the last).
const MAX_BLOCKS: u32 = 8;

/// The file the reader opens; one per process, rewritten for each input.
fn file(data: &[u8]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temporary folder"));
    let p = dir.path().join("fuzz.tif");
    std::fs::write(&p, data).expect("write the input");
    p
}

fuzz_target!(|data: &[u8]| {
    let p = file(data);
    let Ok(mut r) = open_file(&p) else {
        return;
    };
    let info = r.info().clone();
    let bands: Vec<usize> = (0..info.bands).collect();
    if info.width as u64 * info.bands as u64 * BLOCK as u64 > MAX_BLOCK_SAMPLES {
        return;
    }
    let blocks = info.height.div_ceil(BLOCK);
    let mut ys: Vec<u32> = (0..blocks.min(MAX_BLOCKS - 1)).map(|b| b * BLOCK).collect();
    if blocks > 0 {
        ys.push((blocks - 1) * BLOCK);
    }
    for y0 in ys {
        let h = BLOCK.min(info.height - y0);
        match r.read_rows(y0, h, &bands) {
            Ok(planes) => {
                assert_eq!(planes.len(), bands.len());
                for p in &planes {
                    assert_eq!(p.len(), info.width as usize * h as usize);
                }
            }
            Err(_) => return,
        }
    }
});
