//! Write a dataset in the caption stage's format: `images/`, `masks/`, `metadata.jsonl`
//! (one `strata_caption::MetadataRecord` per line) and `classes.json` (the mask class table).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{json, Map, Value};
use strata_caption::dataset::Split;
use strata_caption::{assign_splits, MetadataRecord};

use crate::error::SynthError;
use crate::png_io::write_atomic;
use crate::scenes::{generate, Scene};
use crate::types::{Element, Relation, SceneClass};
use strata_image::{encode_png_grey8, encode_png_rgb8};

#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub count: usize,
    pub size: u32,
    pub seed: u64,
    /// Scene classes to draw from, round-robin (all 11 when empty).
    pub classes: Vec<SceneClass>,
}

#[derive(Debug, Clone)]
pub struct DatasetReport {
    pub written: usize,
    /// `(file name, error)` of every scene that could not be written.
    pub failed: Vec<(String, String)>,
    pub metadata: PathBuf,
}

/// The per-scene seed of scene `i` of a dataset with seed `seed` (SplitMix64).
pub fn scene_seed(seed: u64, i: usize) -> u64 {
    let mut z = seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The mask class table as written to `classes.json`.
pub fn classes_json() -> Value {
    json!({
        "mask_format": "8-bit greyscale PNG, one class id per pixel",
        "classes": Element::ALL.iter().map(|e| json!({
            "id": e.id(),
            "name": e.name(),
            "colour": e.colour(),
        })).collect::<Vec<_>>(),
        "scenes": SceneClass::ALL.iter().map(|c| json!({
            "name": c.name(),
            "required_elements": c.required_elements().iter().map(|e| e.name()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "relations": Relation::ALL.iter().map(|r| r.id()).collect::<Vec<_>>(),
    })
}

/// The metadata record of a scene written as `file_name` / `mask_file_name` (the split is
/// assigned later for the whole dataset).
pub fn record(
    scene: &Scene,
    file_name: &str,
    mask_file_name: &str,
    split: Split,
) -> MetadataRecord {
    let mut extra = Map::new();
    extra.insert("mask_file_name".into(), Value::from(mask_file_name));
    extra.insert(
        "relations".into(),
        serde_json::to_value(&scene.triples).expect("triples serialise"),
    );
    extra.insert("seed".into(), Value::from(scene.seed));
    extra.insert("size".into(), Value::from(scene.size));
    extra.insert("generator".into(), Value::from("strata-synth"));
    MetadataRecord {
        file_name: file_name.to_string(),
        scene: scene.caption.scene.clone(),
        relation: scene.caption.relation.clone(),
        elements: scene.caption.elements.clone(),
        text: scene.caption.flat(),
        split: Some(split),
        extra,
    }
}

/// What the `text` column of `metadata.jsonl` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptionStyle {
    /// The flat caption built from the hierarchical one ("a remote sensing image of
    /// <scene> with a, b, c").
    #[default]
    Flat,
    /// Varied free sentences from the scene's ground truth ([`crate::free`]).
    Free,
}

/// Generate and write `opts.count` scenes under `out` with flat `text` captions. Scenes
/// that fail to write are reported in [`DatasetReport::failed`]; the others are still
/// written and listed. `progress` is called once per finished scene (from worker threads).
pub fn write_dataset(
    out: &Path,
    opts: &DatasetOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<DatasetReport, SynthError> {
    write_dataset_with(out, opts, CaptionStyle::Flat, progress)
}

/// [`write_dataset`] with the `text` column in `style` (the scene, relation and elements
/// columns are the same whatever the style).
pub fn write_dataset_with(
    out: &Path,
    opts: &DatasetOptions,
    style: CaptionStyle,
    progress: &(dyn Fn() + Sync),
) -> Result<DatasetReport, SynthError> {
    if opts.count == 0 {
        return Err(SynthError::BadCount);
    }
    if !(crate::MIN_SIZE..=crate::MAX_SIZE).contains(&opts.size) {
        return Err(SynthError::BadSize {
            size: opts.size,
            min: crate::MIN_SIZE,
            max: crate::MAX_SIZE,
        });
    }
    std::fs::create_dir_all(out).map_err(|source| SynthError::Io {
        path: out.to_path_buf(),
        what: "creating the output folder",
        source,
    })?;
    let classes = if opts.classes.is_empty() {
        SceneClass::ALL.to_vec()
    } else {
        opts.classes.clone()
    };
    let class_of: Vec<SceneClass> = (0..opts.count)
        .map(|i| classes[i % classes.len()])
        .collect();
    let results: Vec<Result<MetadataRecord, (String, String)>> = (0..opts.count)
        .into_par_iter()
        .map(|i| {
            let class = class_of[i];
            let scene = generate(class, opts.size, scene_seed(opts.seed, i));
            let name = format!("{}/{}_{:05}.png", class.slug(), class.slug(), i);
            let file_name = format!("images/{name}");
            let mask_name = format!("masks/{name}");
            let write = || -> Result<(), SynthError> {
                let ip = out.join(&file_name);
                let mp = out.join(&mask_name);
                write_atomic(
                    &ip,
                    &encode_png_rgb8(&ip, scene.size as usize, scene.size as usize, &scene.rgb)?,
                )?;
                write_atomic(
                    &mp,
                    &encode_png_grey8(&mp, scene.size as usize, scene.size as usize, &scene.mask)?,
                )?;
                Ok(())
            };
            let r = write()
                .map(|_| {
                    let mut rec = record(&scene, &file_name, &mask_name, Split::Train);
                    if style == CaptionStyle::Free {
                        rec.text = crate::free::free_caption(&scene, opts.seed).text;
                    }
                    rec
                })
                .map_err(|e| (file_name.clone(), e.to_string()));
            progress();
            r
        })
        .collect();
    let mut records = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(rec) => records.push(rec),
            Err(f) => failed.push(f),
        }
    }
    // the project's seeded, per-scene stratified 8:2 split
    assign_splits(&mut records, opts.seed, 0.8);
    let written = records.len();
    let mut lines = String::new();
    for rec in &records {
        lines.push_str(&serde_json::to_string(rec).expect("record serialises"));
        lines.push('\n');
    }
    let classes_path = out.join("classes.json");
    let text = serde_json::to_string_pretty(&classes_json()).expect("json") + "\n";
    write_atomic(&classes_path, text.as_bytes())?;
    let metadata = out.join("metadata.jsonl");
    write_atomic(&metadata, lines.as_bytes())?;
    Ok(DatasetReport {
        written,
        failed,
        metadata,
    })
}
