//! The memory estimate of `strata train`: default resolution from the model, refusal of a run
//! that cannot fit (before anything is written), `--force`, and the estimate checked against
//! the measured peak resident size of real runs in a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::strata;

/// The embedded base model, written into `root`'s cache (as a user's `strata model base`).
fn base_model(root: &Path) -> PathBuf {
    let out = strata()
        .args(["model", "base"])
        .env("STRATA_CACHE_DIR", root.join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn synth(root: &Path, count: usize) -> PathBuf {
    let data = root.join("data");
    let opts = strata_synth::DatasetOptions {
        count,
        size: 64,
        seed: 5,
        classes: vec![],
    };
    strata_synth::write_dataset(&data, &opts, &|| {}).unwrap();
    data
}

fn train(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = strata();
    c.args(["train", "--method", "lora", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

#[test]
fn train_takes_the_models_resolution_and_refuses_what_cannot_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = base_model(tmp.path());
    let data = synth(tmp.path(), 12);

    // the user's command: no --resolution on the 64-px base model
    let out = tmp.path().join("run");
    let o = train(&model, &data, &out, &["--max-steps", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let cfg = strata_train::run::read_run_config(&out).unwrap();
    assert_eq!(cfg.resolution, 64, "{err}");
    assert!(err.contains("lora at 64 px, batch 10"), "{err}");
    assert!(err.contains("memory estimate: "), "{err}");

    // a run that cannot fit: refused at once, naming the estimate and the flags, nothing
    // written
    let big = tmp.path().join("big");
    let t0 = Instant::now();
    let o = train(
        &model,
        &data,
        &big,
        &["--resolution", "4096", "--batch-size", "64"],
    )
    .output()
    .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(secs < 10.0, "took {secs:.1} s");
    for want in [
        "needs about",
        "is available",
        "--batch-size (now 64)",
        "--resolution (now 4096)",
        "--mixed-precision",
        "--force",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    assert!(!big.exists(), "the refused run wrote {}", big.display());

    // --force passes the check (the estimate is printed); a missing dataset then stops the
    // run before anything large is allocated
    let o = train(
        &model,
        &tmp.path().join("no-such-data"),
        &big,
        &["--resolution", "4096", "--batch-size", "64", "--force"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("--force: starting anyway"), "{err}");
    assert!(!err.contains("needs about"), "{err}");
    assert!(err.contains("no-such-data"), "{err}");
}

#[test]
fn a_kohya_or_config_resolution_wins_over_the_models() {
    let tmp = tempfile::tempdir().unwrap();
    let model = base_model(tmp.path());
    let data = synth(tmp.path(), 4);
    let conf = tmp.path().join("c.toml");
    std::fs::write(&conf, "resolution = 32\nbatch_size = 2\n").unwrap();
    let out = tmp.path().join("run");
    let o = train(
        &model,
        &data,
        &out,
        &["--config", conf.to_str().unwrap(), "--max-steps", "1"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        strata_train::run::read_run_config(&out).unwrap().resolution,
        32
    );
}

#[test]
fn generate_prints_its_estimate_and_refuses_what_cannot_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = base_model(tmp.path());
    let gen = |extra: &[&str]| {
        strata()
            .args([
                "generate",
                "--scene",
                "a harbour",
                "--steps",
                "1",
                "--model",
            ])
            .arg(&model)
            .arg("-o")
            .arg(tmp.path().join("g"))
            .args(extra)
            .output()
            .unwrap()
    };
    let o = gen(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("memory estimate: "), "{err}");
    let o = gen(&["--width", "8192", "--height", "8192", "--batch", "4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    for want in [
        "needs about",
        "is available",
        "--batch (now 4)",
        "--width/--height",
        "--dtype",
        "--force",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
}

/// Peak resident size (bytes) of a finished child, from `wait4`.
fn run_measured(mut c: Command) -> (std::process::ExitStatus, u64, Duration) {
    let t0 = Instant::now();
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    std::mem::forget(child);
    use std::os::unix::process::ExitStatusExt;
    (
        std::process::ExitStatus::from_raw(status),
        ru.ru_maxrss as u64 * 1024,
        t0.elapsed(),
    )
}

/// The estimate against real runs: one optimiser step of LoRA and of the full fine-tune on
/// the embedded base model at several sizes, each in its own process. The band: the
/// estimate is never below the measured peak, and at most twice the measured peak plus the
/// model's f32 weights (what a too-generous estimate of every share would reach).
#[test]
fn estimate_bounds_the_measured_peak_of_real_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = base_model(tmp.path());
    let data = synth(tmp.path(), 8);
    let shape = strata_models::memory::ModelShape::read(&model, None).unwrap();
    let weights = (shape.unet_params + shape.vae_params + shape.text_params) * 4;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let cases: &[(&str, usize, usize)] = &[
        ("lora", 64, 2),
        ("lora", 128, 4),
        ("lora", 256, 2),
        ("lora", 384, 1),
        ("full", 64, 2),
        ("full", 128, 4),
    ];
    let mut rows = vec![];
    let mut failures = vec![];
    for (i, &(method, res, batch)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("run{i}"));
        let mut c = strata();
        c.args(["train", "--method", method, "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--max-steps", "1", "--quiet", "--force"])
            .args(["--resolution", &res.to_string()])
            .args(["--batch-size", &batch.to_string()]);
        let (status, measured, took) = run_measured(c);
        assert!(status.success(), "{method} {res} px batch {batch} failed");
        let cfg = strata_train::run::read_run_config(&out).unwrap();
        let est = strata_train::memory::estimate(&cfg).unwrap();
        rows.push(format!(
            "| {method} | {res} | {batch} | {:.0} | {:.0} | {:.2} | {:.1} s |",
            mib(measured),
            mib(est.total),
            est.total as f64 / measured as f64,
            took.as_secs_f64()
        ));
        eprintln!("{}  [{}]", rows.last().unwrap(), est);
        if est.total < measured {
            failures.push(format!(
                "{method} {res} px batch {batch}: estimate {est} below the measured peak {:.0} MiB",
                mib(measured)
            ));
        }
        if est.total > 2 * measured + weights {
            failures.push(format!(
                "{method} {res} px batch {batch}: estimate {est} above 2 × the measured {:.0} MiB + weights {:.0} MiB",
                mib(measured),
                mib(weights)
            ));
        }
    }
    eprintln!("| method | px | batch | measured MiB | estimate MiB | ratio | time |");
    for r in rows {
        eprintln!("{r}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
