//! The embedded base model: `strata generate` without `--model` materialises it into the
//! cache and writes 64-px PNGs; `strata model base` prints the same folder; `strata model init`
//! and `strata model export` write folders the real loader reads; the committed model is at
//! most 30 MB.

use std::path::Path;
use std::process::Command;

fn strata(args: &[&str], cache: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("STRATA_CACHE_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "strata {args:?} failed:\n{err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn png_size(path: &Path) -> (u32, u32) {
    let r = png::Decoder::new(std::fs::File::open(path).unwrap())
        .read_info()
        .unwrap();
    (r.info().width, r.info().height)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                std::fs::metadata(&p).unwrap().len()
            }
        })
        .sum()
}

#[test]
fn committed_base_model_is_at_most_30_mb_and_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/strata-base");
    let bytes = dir_bytes(&dir);
    assert!(
        bytes <= 30 * 1024 * 1024,
        "models/strata-base is {bytes} bytes"
    );
    let m = strata_models::pipeline::load_model(
        &dir,
        None,
        None,
        strata_models::clip::DType::F32,
        &strata_models::clip::Device::Cpu,
    )
    .expect("the committed base model loads through the real loader");
    assert_eq!(m.tokenizer.vocab_size(), 49408);
}

#[test]
fn generate_without_model_uses_the_embedded_base_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    strata(
        &[
            "generate",
            "--prompt",
            "a remote sensing image of park",
            "--steps",
            "2",
            "--batch",
            "2",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    let pngs: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(pngs.len(), 2, "{pngs:?}");
    for p in &pngs {
        assert_eq!(png_size(p), (64, 64));
    }
    // materialised once under the cache; `strata model base` names that folder
    let base = strata(&["model", "base"], &cache);
    let base = Path::new(base.trim());
    assert!(base.starts_with(cache.join("strata")), "{}", base.display());
    assert!(base.join("unet/config.json").is_file());
    let n: Vec<_> = std::fs::read_dir(cache.join("strata")).unwrap().collect();
    assert_eq!(n.len(), 1, "one cache folder, no temporary left: {n:?}");
}

#[test]
fn model_init_and_export_write_loadable_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let m = tmp.path().join("m");
    // tokenizer defaults to the embedded base model's
    strata(
        &[
            "model",
            "init",
            "--preset",
            "tiny",
            "-o",
            m.to_str().unwrap(),
        ],
        &cache,
    );
    let h = tmp.path().join("h");
    let said = strata(
        &[
            "model",
            "export",
            m.to_str().unwrap(),
            "-o",
            h.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(said.contains("MB"), "{said}");
    assert!(h
        .join("unet/diffusion_pytorch_model.fp16.safetensors")
        .is_file());
    assert!(!h.join("unet/diffusion_pytorch_model.safetensors").exists());
    assert!(dir_bytes(&h) < dir_bytes(&m));
    for dir in [&m, &h] {
        strata_models::pipeline::load_model(
            dir,
            None,
            None,
            strata_models::clip::DType::F32,
            &strata_models::clip::Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    // an existing folder is refused, an unknown preset named
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["model", "init", "--preset", "huge", "-o"])
        .arg(tmp.path().join("x"))
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("base64"));
}
