//! kohya-ss (sd-scripts) dataset TOML as training data: `--data dataset.toml` instead of a
//! strata dataset folder. Read here (not through a kohya library: there is none in Rust, and
//! the format is a few keys of TOML):
//!
//! ```toml
//! [general]                      # defaults for every dataset and subset
//! caption_extension = ".txt"     # default ".caption", as in kohya
//!
//! [[datasets]]
//! resolution = 512               # or "512,512" / [512, 512]; square only
//! batch_size = 4
//!
//!   [[datasets.subsets]]
//!   image_dir = "img/river"      # PNG images; caption = same stem + caption_extension
//!   num_repeats = 10             # each image counts this many times per epoch
//!   class_tokens = "river"       # the caption of images without a caption file
//! ```
//!
//! A caption written `scene | relation | elements` gives the three segments of a
//! hierarchical caption; any other caption is the flat caption and the relation segment,
//! with the subset's `class_tokens` (if any) as the scene. Relative `image_dir`s are looked
//! up from the working folder first (as kohya does), then from the TOML's folder.

use std::path::{Path, PathBuf};

use strata_caption::MetadataRecord;

use crate::error::{Result, TrainError};

/// File extensions of images in an `image_dir`: every format the image layer reads (kohya's
/// PNG, JPEG, WebP and BMP, plus TIFF).
const IMAGE_EXTENSIONS: &[&str] = strata_image::IMAGE_EXTENSIONS;

/// Keys strata reads at each level (subset keys may also sit in `[general]` or a dataset,
/// as defaults for its subsets).
const SUBSET_KEYS: &[&str] = &[
    "image_dir",
    "caption_extension",
    "num_repeats",
    "class_tokens",
];
const DATASET_KEYS: &[&str] = &["resolution", "batch_size"];

/// kohya dataset options strata does not implement. `false`/`0` (kohya's defaults, "off")
/// are accepted; anything else is refused with the key named.
const UNSUPPORTED: &[&str] = &[
    "shuffle_caption",
    "caption_separator",
    "keep_tokens",
    "keep_tokens_separator",
    "secondary_separator",
    "enable_wildcard",
    "color_aug",
    "flip_aug",
    "face_crop_aug_range",
    "random_crop",
    "caption_prefix",
    "caption_suffix",
    "caption_dropout_rate",
    "caption_dropout_every_n_epochs",
    "caption_tag_dropout_rate",
    "token_warmup_min",
    "token_warmup_step",
    "alpha_mask",
    "custom_attributes",
    "cache_info",
    "enable_bucket",
    "min_bucket_reso",
    "max_bucket_reso",
    "bucket_reso_steps",
    "bucket_no_upscale",
    "is_reg",
    "recursive",
    "metadata_file",
    "conditioning_data_dir",
    "validation_seed",
    "validation_split",
    "network_multiplier",
    "debug_dataset",
];

/// One `[[datasets.subsets]]` entry with its inherited defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pub image_dir: PathBuf,
    /// With its leading dot, e.g. `.caption`.
    pub caption_extension: String,
    pub num_repeats: usize,
    pub class_tokens: Option<String>,
}

/// A kohya dataset TOML, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConfig {
    pub path: PathBuf,
    /// The datasets' common square side, when they give one.
    pub resolution: Option<usize>,
    /// The datasets' common batch size, when they give one.
    pub batch_size: Option<usize>,
    pub subsets: Vec<Subset>,
}

/// True when `data` names a kohya dataset TOML rather than a strata dataset folder.
pub fn is_dataset_toml(data: &Path) -> bool {
    !data.is_dir()
        && data
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

fn bad(path: &Path, what: String) -> TrainError {
    TrainError::Dataset {
        path: path.to_path_buf(),
        what,
    }
}

/// Refuses unknown keys and unsupported options switched on. `at`: where in the file.
fn check_keys(path: &Path, t: &toml::Table, allowed: &[&str], at: &str) -> Result<()> {
    for (k, v) in t {
        if allowed.contains(&k.as_str()) {
            continue;
        }
        if UNSUPPORTED.contains(&k.as_str()) {
            let off = matches!(v, toml::Value::Boolean(false))
                || v.as_integer() == Some(0)
                || v.as_float() == Some(0.0);
            if off {
                continue;
            }
            return Err(bad(
                path,
                format!("{at}: `{k} = {v}` is a kohya dataset option strata does not support; remove it or set it to false/0 (strata centre-crops every image to one square resolution and uses captions as written)"),
            ));
        }
        return Err(bad(
            path,
            format!(
                "{at}: unknown key `{k}`; strata reads {} here",
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

fn get_usize(path: &Path, t: &toml::Table, key: &str, at: &str) -> Result<Option<usize>> {
    match t.get(key) {
        None => Ok(None),
        Some(v) => match v.as_integer() {
            Some(n) if n >= 1 => Ok(Some(n as usize)),
            _ => Err(bad(
                path,
                format!("{at}: `{key} = {v}` must be a whole number of at least 1"),
            )),
        },
    }
}

fn get_str(path: &Path, t: &toml::Table, key: &str, at: &str) -> Result<Option<String>> {
    match t.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(path, format!("{at}: `{key} = {v}` must be a string"))),
    }
}

fn get_resolution(path: &Path, t: &toml::Table, at: &str) -> Result<Option<usize>> {
    t.get("resolution")
        .map(|v| crate::config::parse_resolution(v).map_err(|w| bad(path, format!("{at}: {w}"))))
        .transpose()
}

/// Subset-level values that may be inherited from `[general]` and the dataset.
#[derive(Clone, Default)]
struct Inherited {
    caption_extension: Option<String>,
    num_repeats: Option<usize>,
    class_tokens: Option<String>,
}

impl Inherited {
    fn over(&self, path: &Path, t: &toml::Table, at: &str) -> Result<Self> {
        Ok(Self {
            caption_extension: get_str(path, t, "caption_extension", at)?
                .or_else(|| self.caption_extension.clone()),
            num_repeats: get_usize(path, t, "num_repeats", at)?.or(self.num_repeats),
            class_tokens: get_str(path, t, "class_tokens", at)?
                .or_else(|| self.class_tokens.clone()),
        })
    }
}

/// Reads and checks a kohya dataset TOML (not the images: see [`records`]).
pub fn read_dataset_config(path: &Path) -> Result<DatasetConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        what: "cannot read the kohya dataset TOML",
        source,
    })?;
    let root: toml::Table = toml::from_str(&text).map_err(|e| {
        bad(
            path,
            format!("not valid TOML: {}", e.to_string().trim_end()),
        )
    })?;
    check_keys(path, &root, &["general", "datasets"], "top level")?;
    let empty = toml::Table::new();
    let general = match root.get("general") {
        None => &empty,
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(bad(path, "`general` must be a table ([general])".into())),
    };
    let both: Vec<&str> = SUBSET_KEYS[1..]
        .iter()
        .chain(DATASET_KEYS)
        .copied()
        .collect();
    check_keys(path, general, &both, "[general]")?;
    let g_inh = Inherited::default().over(path, general, "[general]")?;
    let g_res = get_resolution(path, general, "[general]")?;
    let g_batch = get_usize(path, general, "batch_size", "[general]")?;
    let datasets = match root.get("datasets") {
        Some(toml::Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(bad(
                path,
                "no [[datasets]] with [[datasets.subsets]]: a kohya dataset TOML lists its image folders as [[datasets.subsets]] image_dir = \"...\"".into(),
            ))
        }
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let (mut resolution, mut batch_size) = (None, None);
    let mut subsets = vec![];
    for (di, d) in datasets.iter().enumerate() {
        let at = format!("[[datasets]] #{}", di + 1);
        let d = d
            .as_table()
            .ok_or_else(|| bad(path, format!("{at} must be a table")))?;
        let mut keys: Vec<&str> = both.clone();
        keys.push("subsets");
        check_keys(path, d, &keys, &at)?;
        let res = get_resolution(path, d, &at)?.or(g_res);
        let batch = get_usize(path, d, "batch_size", &at)?.or(g_batch);
        for (name, now, all) in [
            ("resolution", res, &mut resolution),
            ("batch_size", batch, &mut batch_size),
        ] {
            match (*all, now) {
                (Some(a), Some(b)) if a != b => {
                    return Err(bad(
                        path,
                        format!("{at}: {name} {b} differs from an earlier dataset's {a}; strata trains all datasets together, so give them one {name}"),
                    ))
                }
                (None, Some(b)) => *all = Some(b),
                _ => {}
            }
        }
        let d_inh = g_inh.over(path, d, &at)?;
        let subs = match d.get("subsets") {
            Some(toml::Value::Array(a)) if !a.is_empty() => a,
            _ => {
                return Err(bad(
                    path,
                    format!("{at} has no [[datasets.subsets]] with an image_dir"),
                ))
            }
        };
        for (si, s) in subs.iter().enumerate() {
            let at = format!("{at}, [[datasets.subsets]] #{}", si + 1);
            let s = s
                .as_table()
                .ok_or_else(|| bad(path, format!("{at} must be a table")))?;
            check_keys(path, s, SUBSET_KEYS, &at)?;
            let inh = d_inh.over(path, s, &at)?;
            let dir = get_str(path, s, "image_dir", &at)?.ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "{at}: `image_dir` is required (the folder of images and caption files)"
                    ),
                )
            })?;
            let dir = PathBuf::from(dir);
            let image_dir = if dir.is_absolute() || dir.is_dir() {
                dir.clone()
            } else {
                base.join(&dir)
            };
            if !image_dir.is_dir() {
                return Err(bad(
                    path,
                    format!("{at}: image_dir {} is not a folder (relative paths are looked up from the working folder, then from the TOML's folder)", dir.display()),
                ));
            }
            let mut ext = inh.caption_extension.unwrap_or_else(|| ".caption".into());
            if !ext.starts_with('.') {
                ext.insert(0, '.');
            }
            subsets.push(Subset {
                image_dir,
                caption_extension: ext,
                num_repeats: inh.num_repeats.unwrap_or(1),
                class_tokens: inh.class_tokens.filter(|c| !c.trim().is_empty()),
            });
        }
    }
    Ok(DatasetConfig {
        path: path.to_path_buf(),
        resolution,
        batch_size,
        subsets,
    })
}

/// The training records of a kohya dataset: one per image (file name = the image's path),
/// with its repeat count, plus the image files strata cannot train on `(file, why)`.
#[allow(clippy::type_complexity)]
pub fn records(
    cfg: &DatasetConfig,
) -> Result<(Vec<(MetadataRecord, usize)>, Vec<(String, String)>)> {
    let mut out = vec![];
    let skipped = vec![];
    for s in &cfg.subsets {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&s.image_dir)
            .map_err(|source| TrainError::Io {
                path: s.image_dir.clone(),
                what: "cannot list the image_dir of a kohya dataset",
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(bad(
                &cfg.path,
                format!(
                    "image_dir {} holds no images ({})",
                    s.image_dir.display(),
                    IMAGE_EXTENSIONS
                        .iter()
                        .map(|e| format!(".{e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        for img in files {
            let name = img.display().to_string();
            // kohya: the image path without its extension + caption_extension
            let mut cap_path = img.with_extension("").into_os_string();
            cap_path.push(&s.caption_extension);
            let cap_path = PathBuf::from(cap_path);
            let caption = match std::fs::read(&cap_path) {
                Ok(bytes) => {
                    let text = String::from_utf8(bytes).map_err(|_| {
                        bad(&cap_path, "the caption file is not UTF-8 text; re-save it as UTF-8".into())
                    })?;
                    // kohya reads the first line
                    text.lines().next().unwrap_or("").trim().to_string()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match &s.class_tokens {
                    Some(c) => c.trim().to_string(),
                    None => {
                        return Err(bad(
                            &img,
                            format!("no caption file {} and the subset has no class_tokens; write the caption file or set class_tokens (or caption_extension if the captions use another extension)", cap_path.display()),
                        ))
                    }
                },
                Err(source) => {
                    return Err(TrainError::Io {
                        path: cap_path,
                        what: "cannot read the caption file",
                        source,
                    })
                }
            };
            let (scene, relation, elements, text) = if caption.contains('|') {
                let seg = strata_models::segments::SegmentTexts::parse(&caption);
                let elements: Vec<String> = seg
                    .elements
                    .split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect();
                (seg.scene, seg.relation, elements, String::new())
            } else {
                let scene = s.class_tokens.clone().unwrap_or_default();
                (scene, caption.clone(), vec![], caption)
            };
            out.push((
                MetadataRecord {
                    file_name: name,
                    scene,
                    relation,
                    elements,
                    text,
                    split: None,
                    extra: serde_json::Map::new(),
                },
                s.num_repeats,
            ));
        }
    }
    Ok((out, skipped))
}
