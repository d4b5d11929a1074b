//! `strata generate --lora` applies the fusion the LoRA records it was trained with: a
//! learned schedule in decoupled mode is applied (and said so on one line), overriding it
//! gives a different image; `strata encode --fusion-weights` reads the schedule file the run
//! wrote; `strata train` takes the fixed schedule's parameters and refuses ones out of range.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap()
}

fn strata(args: &[&str]) -> (String, String) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "strata {args:?} failed:\n{err}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

fn png_pixels(path: &Path) -> Vec<u8> {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let f = r.next_frame(&mut buf).unwrap();
    buf.truncate(f.buffer_size());
    buf
}

fn only_png(dir: &Path) -> std::path::PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

fn fusion_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("fusion: "))
        .collect();
    assert_eq!(lines.len(), 1, "one fusion line expected:\n{stderr}");
    lines[0].to_string()
}

#[test]
fn generate_applies_the_recorded_fusion() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    strata_models::testing::write_tiny_model(&model, 3).unwrap();
    let data = tmp.path().join("data");
    let opts = strata_synth::DatasetOptions {
        count: 6,
        size: 64,
        seed: 5,
        classes: vec![],
    };
    strata_synth::write_dataset(&data, &opts, &|| {}).unwrap();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let train = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "train",
            "--model",
            m,
            "--data",
            d,
            "--out",
            out,
            "--resolution",
            "16",
            "--batch-size",
            "2",
            "--lr",
            "0.05",
            "--max-steps",
            "4",
            "--quiet",
        ];
        a.extend_from_slice(extra);
        strata(&a);
    };
    let run_l = tmp.path().join("learned");
    train(
        run_l.to_str().unwrap(),
        &["--fusion", "learned", "--fusion-mode", "decoupled"],
    );
    let lora = run_l.join("lora.safetensors");
    let sidecar = run_l.join("lora.fusion.safetensors");
    assert!(lora.is_file() && sidecar.is_file());
    let l = lora.to_str().unwrap();

    let gen = |name: &str, extra: &[&str]| -> (Vec<u8>, String) {
        let out = tmp.path().join(name);
        let mut args = vec![
            "generate",
            "--model",
            m,
            "--scene",
            "park",
            "--relation",
            "a pond surrounded by trees",
            "--elements",
            "pond;tree",
            "--steps",
            "4",
            "--width",
            "16",
            "--height",
            "16",
            "--seed",
            "3",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (_, err) = strata(&args);
        (png_pixels(&only_png(&out)), fusion_line(&err))
    };
    let (recorded, line) = gen("recorded", &["--lora", l]);
    assert_eq!(
        line,
        "fusion: learned schedule from lora.fusion.safetensors, decoupled mode (recorded in the LoRA)"
    );
    let (over, line) = gen(
        "override",
        &[
            "--lora",
            l,
            "--fusion-schedule",
            "fixed",
            "--fusion-mode",
            "concat",
        ],
    );
    assert_eq!(
        line,
        "fusion: default fixed schedule (centers 1,0.5,0, widths 0.3,0.3,0.3, floor 0.05), concat mode (mode and schedule from the command line, the rest recorded in the LoRA)"
    );
    assert_ne!(recorded, over, "the recorded fusion changes the image");
    // --fusion-weights with the sidecar and the same mode is the recorded fusion
    let (explicit, line) = gen(
        "explicit",
        &["--lora", l, "--fusion-weights", sidecar.to_str().unwrap()],
    );
    assert!(line.starts_with("fusion: learned schedule from lora.fusion.safetensors, decoupled mode (schedule from the command line"), "{line}");
    assert_eq!(recorded, explicit);
    // without the sidecar the LoRA says what is missing, unless the schedule is overridden
    let moved = tmp.path().join("moved.safetensors");
    std::fs::rename(&sidecar, &moved).unwrap();
    let o = run(&[
        "generate",
        "--model",
        m,
        "--lora",
        l,
        "--scene",
        "park",
        "--steps",
        "1",
        "--width",
        "16",
        "--height",
        "16",
        "--quiet",
        "-o",
        tmp.path().join("missing").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("lora.fusion.safetensors") && err.contains("missing"),
        "{err}"
    );
    let (fixed_again, _) = gen(
        "fixed-again",
        &[
            "--lora",
            l,
            "--fusion-schedule",
            "fixed",
            "--fusion-mode",
            "concat",
        ],
    );
    assert_eq!(fixed_again, over);
    std::fs::rename(&moved, &sidecar).unwrap();

    // strata encode reads the file the run wrote
    let (out, _) = strata(&[
        "encode",
        "--plot",
        tmp.path().join("w.svg").to_str().unwrap(),
        "--fusion-weights",
        sidecar.to_str().unwrap(),
    ]);
    assert!(out.contains("learned schedule"), "{out}");

    // fixed parameters from the command line are recorded and applied
    let run_f = tmp.path().join("fixed");
    train(
        run_f.to_str().unwrap(),
        &["--fusion-centers", "0.9,0.4,0.1", "--fusion-floor", "0.1"],
    );
    let lf = run_f.join("lora.safetensors");
    assert!(!run_f.join("lora.fusion.safetensors").exists());
    let (_, line) = gen("fixed", &["--lora", lf.to_str().unwrap()]);
    assert_eq!(
        line,
        "fusion: fixed schedule (centers 0.9,0.4,0.1, widths 0.3,0.3,0.3, floor 0.1), concat mode (recorded in the LoRA)"
    );
    // out of range: refused with the range, before anything is written
    let bad = tmp.path().join("bad");
    let o = run(&[
        "train",
        "--model",
        m,
        "--data",
        d,
        "--out",
        bad.to_str().unwrap(),
        "--fusion-centers",
        "1.5,0.5,0",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("fusion-centers") && err.contains("[0, 1]"),
        "{err}"
    );
    assert!(!bad.exists());
    let o = run(&[
        "train",
        "--model",
        m,
        "--data",
        d,
        "--out",
        bad.to_str().unwrap(),
        "--fusion-widths",
        "0.3,0.2",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("three"), "{err}");
}
