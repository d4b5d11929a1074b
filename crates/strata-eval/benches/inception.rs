//! Benchmark: FID Inception-v3 feature extraction (pool3, 2048-d) against pytorch-fid's
//! `InceptionV3` on CPU, in the same run, on the same images and weights.
//!
//! `scripts/bench/inception_peer.py prepare` writes random weights in the layout of
//! pytorch-fid's published `.pth` and N random 299×299 images (raw f32) once; strata loads
//! the same `.pth` and images. Both run one warm-up batch, then the timed forward over all N
//! images in batches of B, with the same thread count (strata's rayon pool;
//! `torch.set_num_threads` for the peer). The features of both are compared, so the row
//! also shows the two networks compute the same thing.
//!
//! Run: `cargo bench -p strata-eval --bench inception` (needs `.venv` with torch and
//! pytorch-fid, or `$STRATA_PYTHON`). `STRATA_INCEPTION_N=64` and `STRATA_INCEPTION_BATCH=16`
//! are the defaults.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use strata_eval::inception::{InceptionV3, FEATURE_DIM, INPUT_SIZE};

/// The allocator the `strata` binary (and so `strata eval`) uses, with the same purge delay
/// (see its `main.rs`), so that the figures are the binary's: with the system allocator a
/// third of strata's time here went to zeroing fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: a process-wide allocator option (15 is `mi_option_purge_delay`), as `strata` sets
    unsafe { libmimalloc_sys::mi_option_set(15, 1000) };
    let n = env_usize("STRATA_INCEPTION_N", 64);
    let batch = env_usize("STRATA_INCEPTION_BATCH", 16);
    let threads = rayon::current_num_threads();
    let Some(python) = find_python() else {
        println!("skipped: the weights and images are written by the peer script, which needs .venv/bin/python at the repository root or STRATA_PYTHON (python3 -m venv .venv; .venv/bin/pip install torch torchvision pytorch-fid)");
        return Ok(());
    };
    let script = repo_root().join("scripts/bench/inception_peer.py");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inception-bench");
    std::fs::create_dir_all(&work)?;
    let weights = work.join("inception_random.pth");
    let images = work.join(format!("images_{n}x3x{INPUT_SIZE}x{INPUT_SIZE}.f32"));
    if !weights.exists() || !images.exists() {
        eprintln!("writing random weights and {n} images…");
        let st = Command::new(&python)
            .arg(&script)
            .arg("prepare")
            .arg(&weights)
            .arg(&images)
            .arg(n.to_string())
            .arg("2015")
            .status()?;
        assert!(st.success(), "inception_peer.py prepare failed");
    }

    // strata
    let model = InceptionV3::load(&weights, &Device::Cpu)?.with_batch_size(batch);
    let x = read_f32(&images, n * 3 * INPUT_SIZE * INPUT_SIZE);
    let x = Tensor::from_vec(x, (n, 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu)?;
    model.pool_features(&x.narrow(0, 0, batch.min(n))?)?; // warm-up
    let t = Instant::now();
    let ours_f: Vec<f32> = model.pool_features(&x)?.flatten_all()?.to_vec1()?;
    let ours = t.elapsed().as_secs_f64();
    drop((model, x));

    // pytorch-fid
    let feats = work.join("features_pytorch_fid.f32");
    let out = Command::new(&python)
        .arg(&script)
        .arg("run")
        .arg(&weights)
        .arg(&images)
        .arg(n.to_string())
        .arg(batch.to_string())
        .arg(threads.to_string())
        .arg(&feats)
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()?;
    if !out.status.success() {
        println!(
            "peer failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )?;
    let peer = v["seconds"].as_f64().ok_or("peer printed no time")?;
    let peer_f = read_f32(&feats, n * FEATURE_DIM);
    let scale = peer_f.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = ours_f
        .iter()
        .zip(&peer_f)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));

    println!(
        "FID Inception-v3 pool3, {n} images {INPUT_SIZE}², batch {batch}, {threads} threads, CPU"
    );
    println!(
        "{:<28} {:>9} {:>10} {:>12}",
        "implementation", "seconds", "images/s", "peer/strata"
    );
    println!(
        "{:<28} {:>9.2} {:>10.2} {:>12}",
        "strata (candle)",
        ours,
        n as f64 / ours,
        "1.0×"
    );
    println!(
        "{:<28} {:>9.2} {:>10.2} {:>11.2}×",
        "pytorch-fid (torch)",
        peer,
        n as f64 / peer,
        peer / ours
    );
    println!(
        "features: max |strata − pytorch-fid| = {max_diff:.2e} (largest feature {scale:.3}, relative {:.1e})",
        max_diff / scale.max(f32::MIN_POSITIVE)
    );
    Ok(())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$STRATA_PYTHON`, else `.venv/bin/python` at the repository root.
fn find_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = repo_root().join(".venv/bin/python");
    p.exists().then_some(p)
}

fn read_f32(path: &Path, len: usize) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len(), len * 4, "{}", path.display());
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
