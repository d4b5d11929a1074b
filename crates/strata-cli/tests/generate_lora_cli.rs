//! `strata train` writes a kohya-layout LoRA that `strata generate --lora` loads: the LoRA
//! changes the image, `--lora-scale 0` gives back the base model's image.

use std::path::Path;
use std::process::Command;

fn strata(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "strata {args:?} failed:\n{err}");
    err
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

#[test]
fn trained_lora_loads_in_generate() {
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
    let run = tmp.path().join("run");
    let (m, d, r) = (
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    strata(&[
        "train",
        "--method",
        "lora",
        "--model",
        m,
        "--data",
        d,
        "--out",
        r,
        "--captions",
        "hierarchical",
        "--resolution",
        "16",
        "--batch-size",
        "2",
        "--lr",
        "0.05",
        "--max-steps",
        "6",
        "--quiet",
    ]);
    let lora = run.join("lora.safetensors");
    assert!(lora.is_file());

    let gen = |name: &str, extra: &[&str]| -> Vec<u8> {
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
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        strata(&args);
        png_pixels(&only_png(&out))
    };
    let base = gen("base", &[]);
    let l = lora.to_str().unwrap();
    let with = gen("with", &["--lora", l]);
    let zero = gen("zero", &["--lora", l, "--lora-scale", "0"]);
    assert_ne!(base, with, "the LoRA changes the image");
    assert_eq!(base, zero, "scale 0 gives the base model's image");
}
