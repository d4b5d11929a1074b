//! What `--models DIR` holds, found by looking, not by folder convention (an A1111 layout
//! with `Stable-diffusion/`, `Lora/`, `embeddings/` works, so does a flat folder):
//!
//! - a folder with `unet/config.json` is a diffusers model (not looked into further);
//! - a `.safetensors` file is classified from its tensor names: `emb_params` (or one
//!   tensor without a dot) → embedding; `lora_down` / `lora_up` / `lora_A` → LoRA; else a
//!   single-file checkpoint.
//!
//! Ids are paths relative to DIR with `/`. A request names an id; the server looks it up in
//! a fresh scan and never joins a request's text to a path. Symbolic links are followed
//! only when they stay inside DIR.

use std::path::{Path, PathBuf};

use crate::generate::{classify_safetensors, native_side, FileKind};
use crate::AppState;

/// The id of the default model in the picker.
pub const BASE_ID: &str = "base";

const MAX_DEPTH: usize = 4;
const MAX_ENTRIES: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Lora,
    Embedding,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub kind: Kind,
    pub path: PathBuf,
    /// The model's native image side, when its VAE config says.
    pub side: Option<usize>,
}

/// Every model, LoRA and embedding under the models folder, sorted by id.
pub fn scan(st: &AppState) -> Vec<Entry> {
    let mut out = vec![];
    if let Some(root) = &st.models_root {
        walk(root, root, 0, &mut out);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Entry>) {
    if depth > MAX_DEPTH || out.len() >= MAX_ENTRIES {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in names {
        let Ok(real) = std::fs::canonicalize(&p) else {
            continue;
        };
        if !real.starts_with(root) {
            continue; // a link out of the folder
        }
        let Ok(rel) = p.strip_prefix(root) else {
            continue;
        };
        let id = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if real.is_dir() {
            if real.join("unet").join("config.json").is_file() {
                out.push(Entry {
                    id,
                    kind: Kind::Model,
                    side: native_side(&real),
                    path: real,
                });
            } else {
                walk(root, &p, depth + 1, out);
            }
        } else if p
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
        {
            let kind = match classify_safetensors(&real) {
                Some(FileKind::Checkpoint) => Kind::Model,
                Some(FileKind::Lora) => Kind::Lora,
                Some(FileKind::Embedding) => Kind::Embedding,
                None => continue,
            };
            out.push(Entry {
                id,
                kind,
                side: None,
                path: real,
            });
        }
    }
}

/// Resolves an id of the given kind from a fresh scan.
pub fn resolve(st: &AppState, kind: Kind, id: &str) -> Option<Entry> {
    scan(st).into_iter().find(|e| e.kind == kind && e.id == id)
}

/// The default model's folder (materialised on first use).
pub fn base_path(st: &AppState) -> Result<PathBuf, String> {
    let mut g = st.base_model_path.lock().map_err(|e| e.to_string())?;
    if let Some(p) = &*g {
        return Ok(p.clone());
    }
    let f = st
        .cfg
        .base_model
        .as_ref()
        .ok_or("no default model in this server; pick one from --models")?;
    let p = f()?;
    *g = Some(p.clone());
    Ok(p)
}

pub fn base_side(st: &AppState) -> Option<usize> {
    base_path(st).ok().and_then(|p| native_side(&p))
}
