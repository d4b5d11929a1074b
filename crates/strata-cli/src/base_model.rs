//! The embedded default base model: a small SD-1.5-layout model pretrained by
//! `strata train` on synthetic scenes (`models/strata-base/`, reproduced by
//! `scripts/train-base-model.sh`, described in `docs/base-model.md`), used when `--model` is
//! not given. Its files are compiled into the binary and written out once, atomically, under
//! `$XDG_CACHE_HOME/strata/base-<hash>/` (or `~/.cache/strata/...`; `STRATA_CACHE_DIR`
//! overrides the root).

use std::path::{Path, PathBuf};

use anyhow::Context;

macro_rules! embed {
    ($($p:literal),* $(,)?) => {
        &[$(($p, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/strata-base/", $p)) as &[u8])),*]
    };
}

/// Every file of the base model: (path inside the diffusers folder, bytes).
pub const FILES: &[(&str, &[u8])] = embed!(
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
);

/// FNV-1a over every path and byte: names the cache folder, so a new build with other weights
/// never reuses an old folder.
pub fn content_hash() -> u64 {
    let mut h = strata_io::hash::Fnv1a64::new();
    for (p, b) in FILES {
        h.update(p.as_bytes());
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    }
    h.finish()
}

fn cache_root() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("STRATA_CACHE_DIR").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(d).join("strata"));
    }
    match std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("strata")),
        None => anyhow::bail!(
            "no cache folder for the embedded base model: set XDG_CACHE_HOME, HOME or STRATA_CACHE_DIR, or pass --model"
        ),
    }
}

fn complete(dir: &Path) -> bool {
    FILES.iter().all(|(p, b)| {
        std::fs::metadata(dir.join(p))
            .map(|m| m.is_file() && m.len() == b.len() as u64)
            .unwrap_or(false)
    })
}

/// Writes the embedded files into `dir` (a new folder, via a temporary sibling and a rename).
pub fn materialise(dir: &Path) -> anyhow::Result<()> {
    if complete(dir) {
        return Ok(());
    }
    let parent = dir.parent().context("cache folder has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating the cache folder {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|s| s.to_str()).unwrap_or("base"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    for (p, bytes) in FILES {
        let f = tmp.join(p);
        std::fs::create_dir_all(f.parent().expect("file has a folder"))
            .with_context(|| format!("creating {}", f.display()))?;
        std::fs::write(&f, bytes).with_context(|| format!("writing {}", f.display()))?;
    }
    if dir.exists() {
        // an incomplete folder (interrupted by something other than us): replace it
        if complete(dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(());
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the incomplete {}", dir.display()))?;
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // another process won the race
        Err(_) if complete(dir) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("renaming into {}", dir.display())),
    }
}

/// Returns a diffusers folder holding the base model, materialising it on first use.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let dir = cache_root()?.join(format!("base-{:012x}", content_hash() >> 16));
    materialise(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_model_is_small_and_materialises_once() {
        let total: usize = FILES.iter().map(|(_, b)| b.len()).sum();
        assert!(
            total <= 30 * 1024 * 1024,
            "embedded base model is {total} bytes"
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("base");
        materialise(&dir).unwrap();
        assert!(complete(&dir));
        let m = std::fs::metadata(dir.join(FILES[0].0))
            .unwrap()
            .modified()
            .unwrap();
        materialise(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join(FILES[0].0))
                .unwrap()
                .modified()
                .unwrap(),
            m,
            "a complete folder is reused, not rewritten"
        );
        // a damaged folder is replaced
        std::fs::write(dir.join("unet/config.json"), b"{}").unwrap();
        materialise(&dir).unwrap();
        assert!(complete(&dir));
        let loaded = strata_models::pipeline::load_model(
            &dir,
            None,
            None,
            strata_models::clip::DType::F32,
            &strata_models::clip::Device::Cpu,
        )
        .expect("the embedded base model loads through the real loader");
        assert_eq!(loaded.tokenizer.vocab_size(), 49408);
        assert_eq!(
            loaded.models.vae.config.downscale() * 16,
            64,
            "16x16 latents at the base resolution (64 px)"
        );
    }
}
