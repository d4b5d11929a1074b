//! Dataset format: an image folder plus `metadata.jsonl` in the Hugging Face image-folder
//! convention (`file_name` first), with strata's columns.
//!
//! Reading names the line of any malformed record; writing is atomic (a temporary file in
//! the same folder, renamed at the end); whole datasets are built in a temporary folder
//! next to the destination and renamed into place.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::caption::{HierarchicalCaption, Provenance, RelationTriple};
use crate::error::{read_text, CaptionError, Result};

/// The metadata file name inside a dataset folder.
pub const METADATA_FILE: &str = "metadata.jsonl";

/// Which part of the seeded 8:2 split an image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// One line of `metadata.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataRecord {
    /// Image path relative to the folder holding `metadata.jsonl`.
    pub file_name: String,
    pub scene: String,
    pub relation: String,
    pub elements: Vec<String>,
    /// The traditional flat caption (what a flat-caption run trains on).
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Any further columns (masks, provenance, relation triples, ...), kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MetadataRecord {
    /// A record for `file_name` from a caption; `text` is the traditional caption.
    pub fn new(
        file_name: impl Into<String>,
        caption: &HierarchicalCaption,
        text: impl Into<String>,
    ) -> Self {
        MetadataRecord {
            file_name: file_name.into(),
            scene: caption.scene.clone(),
            relation: caption.relation.clone(),
            elements: caption.elements.clone(),
            text: text.into(),
            split: None,
            extra: serde_json::Map::new(),
        }
    }

    /// The hierarchical caption of this record.
    pub fn caption(&self) -> HierarchicalCaption {
        HierarchicalCaption {
            scene: self.scene.clone(),
            relation: self.relation.clone(),
            elements: self.elements.clone(),
        }
    }

    /// The `provenance` column, when present and well-formed.
    pub fn provenance(&self) -> Option<Provenance> {
        serde_json::from_value(self.extra.get("provenance")?.clone()).ok()
    }

    /// Sets the `provenance` column.
    pub fn set_provenance(&mut self, p: &Provenance) {
        self.extra.insert(
            "provenance".into(),
            serde_json::to_value(p).expect("provenance serialises"),
        );
    }

    /// The `relations` column (relation triples), when present and well-formed.
    pub fn relations(&self) -> Option<Vec<RelationTriple>> {
        serde_json::from_value(self.extra.get("relations")?.clone()).ok()
    }

    /// Sets the `relations` column.
    pub fn set_relations(&mut self, r: &[RelationTriple]) {
        self.extra.insert(
            "relations".into(),
            serde_json::to_value(r).expect("relations serialise"),
        );
    }
}

/// Checks a `file_name` is a relative path that stays inside the dataset folder.
pub fn check_file_name(name: &str) -> std::result::Result<(), String> {
    if name.trim().is_empty() {
        return Err("file_name is empty".into());
    }
    let p = Path::new(name);
    if p.is_absolute() || name.starts_with('/') || name.starts_with('\\') {
        return Err(format!(
            "file_name {name:?} must be relative to the dataset folder"
        ));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "file_name {name:?} must not leave the dataset folder (no `..`)"
        ));
    }
    Ok(())
}

/// Longest caption field (scene, relation, one element, text) accepted, in characters.
/// CLIP reads 77 tokens (a few hundred characters) per segment; this only stops files whose
/// captions are not captions at all (a pasted document, a binary blob).
pub const MAX_FIELD_CHARS: usize = 10_000;

/// Checks one caption field: no control characters (tab, line feed and carriage return are
/// whitespace and allowed) and at most [`MAX_FIELD_CHARS`] characters.
pub fn check_caption_text(field: &str, value: &str) -> std::result::Result<(), String> {
    let n = value.chars().count();
    if n > MAX_FIELD_CHARS {
        return Err(format!(
            "{field} is {n} characters long, over the limit of {MAX_FIELD_CHARS}; shorten the caption"
        ));
    }
    if let Some((at, c)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!(
            "{field} holds the control character U+{:04X} at character {}; remove it",
            c as u32,
            at + 1
        ));
    }
    Ok(())
}

fn check_record_text(r: &MetadataRecord) -> std::result::Result<(), String> {
    check_caption_text("scene", &r.scene)?;
    check_caption_text("relation", &r.relation)?;
    check_caption_text("text", &r.text)?;
    for e in &r.elements {
        check_caption_text("an element", e)?;
    }
    Ok(())
}

/// Parses `metadata.jsonl` text; `path` is only used in messages. Blank lines are skipped.
pub fn parse_metadata(text: &str, path: &Path) -> Result<Vec<MetadataRecord>> {
    let mut out = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let r: MetadataRecord = serde_json::from_str(line).map_err(|e| CaptionError::JsonLine {
            path: path.to_path_buf(),
            line: line_no,
            message: e.to_string(),
        })?;
        check_file_name(&r.file_name)
            .and_then(|_| check_record_text(&r))
            .map_err(|m| CaptionError::BadRecord {
                path: path.to_path_buf(),
                line: line_no,
                message: m,
            })?;
        if let Some(&first) = first_line.get(&r.file_name) {
            return Err(CaptionError::DuplicateFileName {
                path: path.to_path_buf(),
                file_name: r.file_name,
                first_line: first,
                second_line: line_no,
            });
        }
        first_line.insert(r.file_name.clone(), line_no);
        out.push(r);
    }
    Ok(out)
}

/// Reads a `metadata.jsonl` file.
pub fn read_metadata(path: &Path) -> Result<Vec<MetadataRecord>> {
    parse_metadata(&read_text(path)?, path)
}

/// Reads `DIR/metadata.jsonl`.
pub fn read_dataset(dir: &Path) -> Result<Vec<MetadataRecord>> {
    read_metadata(&dir.join(METADATA_FILE))
}

/// Serialises records as JSON lines (one record a line, `\n` endings).
pub fn metadata_to_string(records: &[MetadataRecord]) -> Result<String> {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).map_err(|e| CaptionError::Other(e.to_string()))?);
        out.push('\n');
    }
    Ok(out)
}

/// Writes `metadata.jsonl` atomically (temporary file in the same folder, then rename).
/// Refuses duplicate or unsafe file names before writing anything.
pub fn write_metadata(path: &Path, records: &[MetadataRecord]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        check_file_name(&r.file_name).map_err(|message| CaptionError::Format {
            path: path.to_path_buf(),
            message: format!("record {}: {message}", i + 1),
        })?;
        if let Some(&first) = seen.get(r.file_name.as_str()) {
            return Err(CaptionError::DuplicateFileName {
                path: path.to_path_buf(),
                file_name: r.file_name.clone(),
                first_line: first,
                second_line: i + 1,
            });
        }
        seen.insert(&r.file_name, i + 1);
    }
    write_atomic(path, metadata_to_string(records)?.as_bytes())
}

/// Writes bytes to `path` through a temporary file in the same folder
/// ([`strata_io::atomic::write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    strata_io::atomic::write(path, bytes).map_err(|source| CaptionError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Images listed in the records that do not exist under `dir`.
pub fn missing_images(dir: &Path, records: &[MetadataRecord]) -> Vec<CaptionError> {
    records
        .iter()
        .filter(|r| !dir.join(&r.file_name).is_file())
        .map(|r| CaptionError::MissingImage {
            image: dir.join(&r.file_name),
            listed_in: dir.join(METADATA_FILE),
        })
        .collect()
}

/// Seeded train/test split, stratified by scene: within each scene the records are sorted
/// by file name, shuffled with ChaCha8 seeded from `seed` and the scene name, and the first
/// `round(n · train_fraction)` go to train. The result depends only on the seed, the file
/// names and the scenes, never on the input order. Returns (train, test) counts.
pub fn assign_splits(
    records: &mut [MetadataRecord],
    seed: u64,
    train_fraction: f64,
) -> (usize, usize) {
    let f = train_fraction.clamp(0.0, 1.0);
    let mut by_scene: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_scene.entry(r.scene.clone()).or_default().push(i);
    }
    let (mut train, mut test) = (0, 0);
    for (scene, mut idx) in by_scene {
        idx.sort_by(|&a, &b| records[a].file_name.cmp(&records[b].file_name));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ strata_io::hash::fnv1a64(scene.as_bytes()),
        );
        idx.shuffle(&mut rng);
        let n_train = ((idx.len() as f64) * f).round() as usize;
        for (j, &i) in idx.iter().enumerate() {
            if j < n_train {
                records[i].split = Some(Split::Train);
                train += 1;
            } else {
                records[i].split = Some(Split::Test);
                test += 1;
            }
        }
    }
    (train, test)
}

/// Builds a dataset folder atomically: images are copied (hard-linked when possible) and
/// `metadata.jsonl` written into a temporary folder next to `out`, which is renamed to
/// `out` at the end. `out` must not exist unless `overwrite` is set (then it is replaced
/// only once the new folder is complete).
pub fn write_dataset(
    out: &Path,
    items: &[(PathBuf, MetadataRecord)],
    overwrite: bool,
) -> Result<()> {
    let werr = |path: &Path, source| CaptionError::Write {
        path: path.to_path_buf(),
        source,
    };
    if out.exists() && !overwrite {
        return Err(CaptionError::Format {
            path: out.to_path_buf(),
            message: "the output folder already exists; choose another --out or pass --force"
                .into(),
        });
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| werr(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".strata-dataset-")
        .tempdir_in(&parent)
        .map_err(|e| werr(&parent, e))?;
    let records: Vec<MetadataRecord> = items.iter().map(|(_, r)| r.clone()).collect();
    // Checks names and duplicates before any copying.
    let meta_tmp = tmp.path().join(METADATA_FILE);
    write_metadata(&meta_tmp, &records)?;
    for (src, r) in items {
        let dst = tmp.path().join(&r.file_name);
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d).map_err(|e| werr(d, e))?;
        }
        if std::fs::hard_link(src, &dst).is_err() {
            std::fs::copy(src, &dst).map_err(|e| CaptionError::Read {
                path: src.clone(),
                source: e,
            })?;
        }
    }
    let tmp_path = tmp.keep();
    if out.exists() {
        let old = parent.join(format!(
            ".strata-old-{}",
            out.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old).map_err(|e| werr(out, e))?;
        std::fs::rename(&tmp_path, out).map_err(|e| werr(out, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp_path, out).map_err(|e| werr(out, e))?;
    }
    Ok(())
}
