//! PNG writing: text chunks as A1111 reads them (`tEXt` for ASCII, `iTXt` for UTF-8), read
//! back with the `png` crate; atomic writes; the deterministic encoder read back by Pillow's
//! counterpart here (our decoder is checked against Pillow in decode.rs).

use std::path::Path;

use strata_image::{encode_png_grey8, encode_png_rgb8, read_rgb8, write_png_with_text};

#[test]
fn text_chunks_round_trip_and_write_is_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sub/x.png");
    let rgb: Vec<u8> = (0..4 * 4 * 3).map(|i| i as u8).collect();
    let params =
        "a harbour; ships beside a pier\nNegative prompt: \nSteps: 30, Seed: 7".to_string();
    write_png_with_text(
        &path,
        &rgb,
        4,
        4,
        &[
            ("parameters", params.clone()),
            ("caption", "{\"scene\":\"é\"}".into()),
        ],
    )
    .unwrap();
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["x.png"], "no temporary file left");
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    r.next_frame(&mut buf).unwrap();
    assert_eq!(&buf[..rgb.len()], rgb.as_slice());
    let info = r.info();
    let t = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .unwrap();
    assert_eq!(t.text, params);
    let it = info
        .utf8_text
        .iter()
        .find(|c| c.keyword == "caption")
        .unwrap();
    assert_eq!(it.get_text().unwrap(), "{\"scene\":\"é\"}");
    assert_eq!(read_rgb8(&path).unwrap().data, rgb);
}

#[test]
fn failed_write_leaves_the_old_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.png");
    std::fs::write(&path, b"old").unwrap();
    // wrong pixel count: refused before anything is written
    let e = write_png_with_text(&path, &[0; 5], 2, 2, &[]).unwrap_err();
    assert!(e.to_string().contains("x.png"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
}

#[test]
fn deterministic_encoders_fixed_bytes() {
    let rgb: Vec<u8> = (0..32 * 8 * 3).map(|i| ((i * 31) % 251) as u8).collect();
    let a = encode_png_rgb8(Path::new("a"), 32, 8, &rgb).unwrap();
    assert_eq!(a, encode_png_rgb8(Path::new("b"), 32, 8, &rgb).unwrap());
    // every row uses the Sub filter (filter byte 1), whatever the content
    let dec = png::Decoder::new(std::io::Cursor::new(&a));
    let r = dec.read_info().unwrap();
    assert_eq!(r.info().color_type, png::ColorType::Rgb);
    let grey: Vec<u8> = (0..16u8).collect();
    let g = encode_png_grey8(Path::new("m"), 4, 4, &grey).unwrap();
    let dec = png::Decoder::new(std::io::Cursor::new(&g));
    let mut r = dec.read_info().unwrap();
    assert_eq!(r.info().color_type, png::ColorType::Grayscale);
    let mut buf = vec![0; r.output_buffer_size()];
    r.next_frame(&mut buf).unwrap();
    assert_eq!(buf, grey);
    // no chunk besides IHDR, IDAT, IEND (no time or text chunk)
    let mut kinds = vec![];
    let mut i = 8;
    while i < g.len() {
        let n = u32::from_be_bytes(g[i..i + 4].try_into().unwrap()) as usize;
        kinds.push(String::from_utf8_lossy(&g[i + 4..i + 8]).into_owned());
        i += 12 + n;
    }
    assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
}
