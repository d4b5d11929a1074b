//! Decoding against Pillow: one picture saved by Pillow (and, for 16-bit RGB, by the fixture
//! script by hand) as PNG 8/16-bit in every colour type, TIFF 8/16-bit uncompressed and LZW,
//! JPEG (4:2:0, 4:4:4, greyscale, CMYK), WebP lossless and lossy, BMP 24-bit and indexed.
//! Fixtures: scripts/fixtures/image_pillow.py.
//!
//! Tolerances (max abs difference per sample, measured values in the asserts' messages):
//! - lossless formats, 8-bit: 0 (exact);
//! - 16-bit: exact against `(v·255 + 32767) / 65535` computed by the script from the samples;
//!   against Pillow ≤ 1 for RGB (Pillow keeps the high byte), and Pillow's grey I;16 → RGB
//!   clips to 255 (documented difference, asserted below);
//! - JPEG: zune-jpeg vs libjpeg-turbo (Pillow 13) differ in IDCT and chroma upsampling;
//!   measured max 3 / mean 0.30 (4:2:0, q90), 2 / 0.025 (4:4:4), 1 / 0.011 (grey),
//!   1 / 0.012 (CMYK): bound `JPEG_TOL` = 3, mean < 0.5;
//! - lossy WebP: image-webp decodes exactly as libwebp on the fixture (0).

use std::path::{Path, PathBuf};

use strata_image::{decode_rgb8, read_rgb8, read_rgb8_with_limits, ImageError, Limits};

/// Max abs difference allowed between our JPEG decode and Pillow's (libjpeg-turbo).
const JPEG_TOL: u8 = 3;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pillow")
}

fn stats(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let mean = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64;
    (max, mean)
}

#[test]
fn every_fixture_decodes_like_pillow() {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap())
            .unwrap();
    let cases = m["decode"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut report = vec![];
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let img = read_rgb8(&dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            (img.width as u64, img.height as u64),
            (c["width"].as_u64().unwrap(), c["height"].as_u64().unwrap()),
            "{file}"
        );
        let pillow = std::fs::read(dir().join(c["pillow"].as_str().unwrap())).unwrap();
        let (max, mean) = stats(&img.data, &pillow);
        report.push(format!("{file}: max {max}, mean {mean:.3}"));
        if let Some(s) = c.get("scaled").and_then(|s| s.as_str()) {
            let scaled = std::fs::read(dir().join(s)).unwrap();
            assert_eq!(
                img.data, scaled,
                "{file}: 16-bit samples not scaled with rounding"
            );
            if c["mode"] == "I;16" {
                // Pillow's I;16 -> RGB clips; we scale instead (documented difference)
                assert!(pillow.iter().all(|&v| v == 255), "{file}");
            } else {
                assert!(max <= 1, "{file}: {max} from Pillow's high byte");
            }
        } else if file.ends_with(".jpg") {
            assert!(max <= JPEG_TOL, "{file}: max {max} mean {mean}");
            assert!(mean < 0.5, "{file}: mean {mean}");
        } else {
            assert_eq!(max, 0, "{file}: decode differs from Pillow");
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn format_comes_from_content_not_extension() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("actually_png.jpg");
    std::fs::copy(dir().join("pic_rgb8.png"), &p).unwrap();
    let a = read_rgb8(&p).unwrap();
    let b = read_rgb8(&dir().join("pic_rgb8.png")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn in_memory_decode_matches_file_decode_for_every_format() {
    for f in [
        "pic_rgb8.png",
        "pic_rgb8_lzw.tif",
        "pic_q90.jpg",
        "pic_lossless.webp",
        "pic_rgb24.bmp",
    ] {
        let bytes = std::fs::read(dir().join(f)).unwrap();
        let a = decode_rgb8(Path::new(f), &bytes, &Limits::default()).unwrap();
        assert_eq!(a, read_rgb8(&dir().join(f)).unwrap(), "{f}");
    }
}

#[test]
fn size_is_checked_before_decoding() {
    for f in [
        "pic_rgb8.png",
        "pic_rgb8.tif",
        "pic_q90.jpg",
        "pic_lossless.webp",
        "pic_rgb24.bmp",
    ] {
        let e = read_rgb8_with_limits(&dir().join(f), &Limits { max_pixels: 1000 }).unwrap_err();
        let s = e.to_string();
        assert!(
            matches!(
                e,
                ImageError::TooLarge {
                    width: 40,
                    height: 30,
                    pixels: 1200,
                    max_pixels: 1000,
                    ..
                }
            ),
            "{f}: {s}"
        );
        assert!(
            s.contains(f) && s.contains("40×30") && s.contains("1000"),
            "{s}"
        );
    }
    // a PNG header claiming 100000 x 100000 is refused without allocating 30 GB
    let mut png = std::fs::read(dir().join("pic_rgb8.png")).unwrap();
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = decode_rgb8(Path::new("bomb.png"), &png, &Limits::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("bomb.png: the PNG image is 100000×100000"),
        "{e}"
    );
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn bad_files_are_named_with_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let s = read_rgb8(&empty).unwrap_err().to_string();
    assert!(s.contains("empty.png") && s.contains("empty"), "{s}");

    let gif = t.path().join("anim.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00").unwrap();
    let s = read_rgb8(&gif).unwrap_err().to_string();
    assert!(
        s.contains("anim.gif: not a PNG/JPEG/TIFF/WebP/BMP image") && s.contains("47 49 46 38"),
        "{s}"
    );

    for f in [
        "pic_rgb8.png",
        "pic_q90.jpg",
        "pic_lossless.webp",
        "pic_rgb8.tif",
        "pic_rgb24.bmp",
    ] {
        let bytes = std::fs::read(dir().join(f)).unwrap();
        let p = t.path().join(format!("cut_{f}"));
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let s = strata_image::error_chain(&read_rgb8(&p).unwrap_err());
        assert!(s.contains(&format!("cut_{f}")), "{s}");
    }

    let s = read_rgb8(&t.path().join("missing.png")).unwrap_err();
    assert!(
        s.to_string().contains("missing.png: cannot open the image"),
        "{s}"
    );
    let s = read_rgb8(t.path()).unwrap_err().to_string();
    assert!(s.contains("is a folder"), "{s}");
}

#[test]
fn geotiff_tile_written_by_the_raster_writer_reads_like_its_png_tile() {
    use strata_raster::write::{commit, write_geotiff, write_png, TiffCompression};
    let pic = read_rgb8(&dir().join("pic_rgb8.png")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let png = t.path().join("tile.png");
    write_png(&png, 40, 30, &pic.data).unwrap();
    commit(&png).unwrap();
    for (i, comp) in [
        TiffCompression::None,
        TiffCompression::Lzw,
        TiffCompression::Deflate,
    ]
    .into_iter()
    .enumerate()
    {
        let tif = t.path().join(format!("tile{i}.tif"));
        write_geotiff(&tif, 40, 30, &pic.data, None, comp).unwrap();
        commit(&tif).unwrap();
        assert_eq!(read_rgb8(&tif).unwrap(), pic, "{comp:?}");
    }
    assert_eq!(read_rgb8(&png).unwrap(), pic);
}
