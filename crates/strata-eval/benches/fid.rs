//! Benchmark: the Fréchet distance (FID's formula) on 10 000 × 2048 features against numpy /
//! scipy in the same run.
//!
//! The features are two sets of non-negative, correlated vectors shaped like Inception pool3
//! features (ReLU of a shared low-rank factor model plus noise; the second set has other
//! loadings and a shifted mean, so the covariances differ), written once as raw
//! little-endian f64 files that both sides read. Timed: means, covariances and the distance
//! (reading the files is not). The peer is `scripts/bench/fid_peer.py` run with the Python
//! of `.venv` (or `$STRATA_PYTHON`): pytorch-fid's own `calculate_frechet_distance`
//! (scipy.linalg.sqrtm), numpy's eigvals shortcut and scipy's symmetric `eigh` with the same
//! formulation as strata. BLAS gets as many threads as strata's rayon pool.
//!
//! Run: `cargo bench -p strata-eval --bench fid`. `STRATA_FID_N=2000` for a smaller set;
//! `STRATA_FID_SKIP_SQRTM=1` leaves out the slow sqrtm row.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_eval::fid::{frechet_distance, Features};

const D: usize = 2048;
/// Latent factors of the feature model.
const K: usize = 96;

fn main() {
    let n: usize = std::env::var("STRATA_FID_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let threads = rayon::current_num_threads();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fid-bench");
    std::fs::create_dir_all(&work).unwrap();
    let pa = work.join(format!("features_a_{n}x{D}.f64"));
    let pb = work.join(format!("features_b_{n}x{D}.f64"));
    if !pa.exists() || !pb.exists() {
        eprintln!("writing two {n}×{D} feature sets…");
        write_features(&pa, &pb, n);
    }
    let a = read_features(&pa, n);
    let b = read_features(&pb, n);

    let t = Instant::now();
    let sa = a.stats().unwrap();
    let sb = b.stats().unwrap();
    let t_stats = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let fid = frechet_distance(&sa, &sb).unwrap();
    let t_dist = t.elapsed().as_secs_f64();
    let ours = t_stats + t_dist;
    drop((a, b, sa, sb));

    println!("Fréchet distance, two sets of {n} × {D} features, {threads} threads");
    println!(
        "{:<34} {:>9} {:>11} {:>9} {:>20} {:>12}",
        "implementation", "stats s", "distance s", "total s", "FID", "peer/strata"
    );
    println!(
        "{:<34} {:>9.2} {:>11.2} {:>9.2} {:>20.9} {:>12}",
        "strata (faer)", t_stats, t_dist, ours, fid, "1.0×"
    );

    let Some(python) = find_python() else {
        println!("peer skipped: no .venv/bin/python at the repository root and STRATA_PYTHON unset (python3 -m venv .venv; .venv/bin/pip install scipy pytorch-fid)");
        return;
    };
    let script = repo_root().join("scripts/bench/fid_peer.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(&pa)
        .arg(&pb)
        .arg(n.to_string())
        .arg(D.to_string());
    if std::env::var_os("STRATA_FID_SKIP_SQRTM").is_some() {
        cmd.arg("--skip-sqrtm");
    }
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
        cmd.env(var, threads.to_string());
    }
    let out = cmd.output().expect("run the FID peer script");
    if !out.status.success() {
        println!(
            "peer failed ({}): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let mut best: Option<(String, f64)> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let method = v["method"].as_str().unwrap_or("?").to_string();
        let total = v["total_s"].as_f64().unwrap();
        let peer_fid = v["fid"].as_f64().unwrap();
        println!(
            "{:<34} {:>9.2} {:>11.2} {:>9.2} {:>20.9} {:>11.1}×   (FID relative difference {:.1e})",
            format!("numpy + {method}"),
            v["stats_s"].as_f64().unwrap(),
            v["distance_s"].as_f64().unwrap(),
            total,
            peer_fid,
            total / ours,
            (peer_fid - fid).abs() / peer_fid.abs()
        );
        if best.as_ref().is_none_or(|(_, t)| total < *t) {
            best = Some((method, total));
        }
    }
    if let Some((method, total)) = best {
        println!(
            "strata is {:.1}× faster than the fastest peer (numpy + {method}, {total:.2} s vs {ours:.2} s)",
            total / ours
        );
    }
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

fn read_features(path: &Path, n: usize) -> Features {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len(), n * D * 8, "{}", path.display());
    let data = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Features::new(n, D, data).unwrap()
}

/// Standard normal samples by Box–Muller.
fn normals(rng: &mut ChaCha8Rng, out: &mut [f64]) {
    for pair in out.chunks_mut(2) {
        let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        pair[0] = r * t.cos();
        if let Some(x) = pair.get_mut(1) {
            *x = r * t.sin();
        }
    }
}

/// Two sets of `n` rows: `max(0, μ + W z + 0.35 e)` with `z ~ N(0, I_K)`, `e ~ N(0, I_D)`;
/// set B uses loadings `1.1 W + 0.3 W'` and a mean shifted by up to 0.05.
fn write_features(pa: &Path, pb: &Path, n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(2048);
    let mut w = vec![0.0; D * K];
    normals(&mut rng, &mut w);
    let mut w2 = vec![0.0; D * K];
    normals(&mut rng, &mut w2);
    let scale = 0.45 / (K as f64).sqrt();
    let wa: Vec<f64> = w.iter().map(|v| v * scale).collect();
    let wb: Vec<f64> = w
        .iter()
        .zip(&w2)
        .map(|(v, u)| (1.1 * v + 0.3 * u) * scale)
        .collect();
    let mu_a: Vec<f64> = (0..D).map(|_| 0.15 + 0.35 * rng.gen::<f64>()).collect();
    let mu_b: Vec<f64> = mu_a.iter().map(|m| m + 0.05 * rng.gen::<f64>()).collect();
    for (path, wl, mu) in [(pa, &wa, &mu_a), (pb, &wb, &mu_b)] {
        let tmp = path.with_extension("part");
        let mut f = BufWriter::new(std::fs::File::create(&tmp).unwrap());
        let mut z = vec![0.0; K];
        let mut e = vec![0.0; D];
        for _ in 0..n {
            normals(&mut rng, &mut z);
            normals(&mut rng, &mut e);
            for ((row, m), ej) in wl.chunks_exact(K).zip(mu.iter()).zip(&e) {
                let s: f64 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
                let v = (m + s + 0.35 * ej).max(0.0);
                f.write_all(&v.to_le_bytes()).unwrap();
            }
        }
        f.flush().unwrap();
        drop(f);
        std::fs::rename(tmp, path).unwrap();
    }
}
