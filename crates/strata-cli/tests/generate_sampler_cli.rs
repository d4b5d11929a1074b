//! `strata generate --sampler`: each sampler runs and is recorded in the PNG, the model's
//! `scheduler/scheduler_config.json` is honoured, and bad choices are clear errors.

use std::path::Path;
use std::process::Command;

fn strata(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// (pixels, `parameters` text) of the one PNG in `dir`.
fn read_png(dir: &Path) -> (Vec<u8>, String) {
    let p: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(p.len(), 1, "{p:?}");
    let dec = png::Decoder::new(std::fs::File::open(&p[0]).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let f = r.next_frame(&mut buf).unwrap();
    buf.truncate(f.buffer_size());
    let info = r.info();
    let params = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .unwrap_or_default();
    (buf, params)
}

#[test]
fn samplers_run_and_the_model_scheduler_config_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    strata_models::testing::write_tiny_model(&model, 3).unwrap();
    let m = model.to_str().unwrap();
    let gen = |name: &str, extra: &[&str]| -> (bool, String) {
        let out = tmp.path().join(name);
        let mut args = vec![
            "generate",
            "--model",
            m,
            "--prompt",
            "a harbour",
            "--steps",
            "3",
            "--width",
            "16",
            "--height",
            "16",
            "--seed",
            "2",
            "--quiet",
            "-o",
        ];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        strata(&args)
    };
    let mut seen = vec![];
    for (arg, shown) in [
        ("ddim", "DDIM"),
        ("euler-a", "Euler a"),
        ("dpmpp-2m-karras", "DPM++ 2M Karras"),
        ("unipc", "UniPC"),
    ] {
        let (ok, log) = gen(arg, &["--sampler", arg]);
        assert!(ok, "--sampler {arg}: {log}");
        let (px, params) = read_png(&tmp.path().join(arg));
        assert!(params.contains(&format!("Sampler: {shown},")), "{params}");
        seen.push(px);
    }
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
    // default is DDIM
    let (ok, log) = gen("default", &[]);
    assert!(ok, "{log}");
    assert_eq!(read_png(&tmp.path().join("default")).0, seen[0]);

    // the model's scheduler config is honoured: v-prediction changes the image
    let mut cfg = strata_models::schedulers::SchedulerConfig::sd15();
    cfg.prediction_type = strata_models::schedulers::PredictionType::VPrediction;
    strata_models::schedulers::write_scheduler_config(&model, &cfg).unwrap();
    let (ok, log) = gen("v", &["--sampler", "ddim"]);
    assert!(ok, "{log}");
    assert_ne!(read_png(&tmp.path().join("v")).0, seen[0]);

    // an unsupported scheduler class names the file, the field and the supported classes
    std::fs::write(
        model.join("scheduler/scheduler_config.json"),
        r#"{"_class_name": "FlowMatchEulerDiscreteScheduler"}"#,
    )
    .unwrap();
    let (ok, log) = gen("bad", &[]);
    assert!(!ok);
    assert!(
        log.contains("scheduler_config.json")
            && log.contains("_class_name")
            && log.contains("DPMSolverMultistepScheduler"),
        "{log}"
    );
}

#[test]
fn sampler_choices_and_default_are_in_the_help() {
    let (ok, help) = strata(&["generate", "--help"]);
    assert!(ok);
    for s in [
        "ddim",
        "ddpm",
        "euler-a",
        "dpmpp-2m",
        "dpmpp-2m-karras",
        "unipc",
    ] {
        assert!(help.contains(s), "{s} missing from:\n{help}");
    }
    assert!(help.contains("[default: ddim]"), "{help}");
    let (ok, err) = strata(&["generate", "--sampler", "euler", "-o", "x"]);
    assert!(!ok);
    assert!(err.contains("euler-a"), "{err}");
}
