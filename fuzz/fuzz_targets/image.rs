//! Image decoding (`strata_image::decode_rgb8`: PNG, JPEG, TIFF, WebP, BMP to RGB8) with a
//! small pixel limit so that declared sizes beyond it are refused before decoding. Arbitrary
//! bytes must give an image of the declared size or an error, never a panic, an abort or an
//! allocation the limit does not allow.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_image::decode::{decode_rgb8, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_pixels: 1 << 20,
    };
    if let Ok(img) = decode_rgb8(Path::new("fuzz.img"), data, &limits) {
        assert!((img.width * img.height) as u64 <= limits.max_pixels);
        assert_eq!(img.data.len(), img.width * img.height * 3);
    }
});
