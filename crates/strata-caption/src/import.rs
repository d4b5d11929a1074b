//! Importers (and matching exporters, for round trips) for caption datasets:
//!
//! * Karpathy-style caption JSON as used by RSICD, UCM-captions and Sydney-captions:
//!   `{"images": [{"filename", "sentences": [{"raw"}], "split"}]}`; the five human sentences
//!   of an image become the candidate stream for the golden rule.
//! * COCO-style caption JSON: `{"images": [{"id", "file_name"}], "annotations":
//!   [{"image_id", "caption"}]}`.
//! * Class-per-folder datasets: `ROOT/<scene>/<image>`; scene = folder name.
//! * kohya-style caption files: `image.png` + `image.txt` (a sentence or comma tags); the
//!   parent folder (`10_church` → `church`) is the scene label when there is one.
//!
//! An importer returns the good items and, separately, one problem per bad item (missing
//! image, duplicate file name, unreadable caption file) so a batch can go on and report.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{check_file_name, Split};
use crate::error::{read_text, utf8_text, CaptionError, Result};

/// Image file extensions the folder importers pick up (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"];

/// One image to caption, as an importer found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceItem {
    /// Path relative to the output dataset folder (and to the source image root).
    pub file_name: String,
    /// Where the image is now.
    pub image: PathBuf,
    /// A scene label from the source (folder name, filename prefix, `scene` field).
    pub label: Option<String>,
    /// Candidate sentences (human captions or captioner output), in order.
    pub sentences: Vec<String>,
    /// The split the source assigned, if any (kept in the `source_split` column).
    pub source_split: Option<String>,
    /// Which importer produced it: `karpathy`, `coco`, `folders`, `kohya`.
    pub origin: String,
}

/// A bad item: what it was and why it was left out.
#[derive(Debug)]
pub struct ItemProblem {
    pub item: String,
    pub error: CaptionError,
}

/// The outcome of an import.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub items: Vec<SourceItem>,
    pub problems: Vec<ItemProblem>,
}

impl ImportReport {
    /// Moves items whose image file does not exist into `problems`.
    pub fn check_images(&mut self, listed_in: &Path) {
        let (ok, bad): (Vec<_>, Vec<_>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|it| it.image.is_file());
        self.items = ok;
        for it in bad {
            self.problems.push(ItemProblem {
                item: it.file_name.clone(),
                error: CaptionError::MissingImage {
                    image: it.image,
                    listed_in: listed_in.to_path_buf(),
                },
            });
        }
    }
}

fn json_err(path: &Path, e: serde_json::Error) -> CaptionError {
    CaptionError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

fn format_err(path: &Path, message: String) -> CaptionError {
    CaptionError::Format {
        path: path.to_path_buf(),
        message,
    }
}

// ------------------------------------------------------------------------------------
// Karpathy JSON
// ------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dataset: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KarpathyImage {
    filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filepath: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imgid: Option<u64>,
    #[serde(default)]
    sentences: Vec<KarpathySentence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    split: Option<String>,
    /// strata extension: the scene label, when the exporter knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scene: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KarpathySentence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tokens: Vec<String>,
}

/// The scene label an RSICD-style file name carries: `denseresidential_12.jpg` →
/// `denseresidential`; none for purely numeric names (UCM, Sydney).
pub fn label_from_file_name(file_name: &str) -> Option<String> {
    let stem = Path::new(file_name).file_stem()?.to_str()?;
    let (prefix, num) = stem.rsplit_once('_')?;
    (!prefix.is_empty()
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
        && prefix.chars().any(|c| c.is_alphabetic()))
    .then(|| prefix.to_string())
}

/// Parses Karpathy-style JSON text. `json_path` is used in messages; `images_dir` is the
/// folder the file names are relative to. Images are not checked here.
pub fn parse_karpathy(text: &str, json_path: &Path, images_dir: &Path) -> Result<ImportReport> {
    let f: KarpathyFile = serde_json::from_str(text).map_err(|e| json_err(json_path, e))?;
    let mut report = ImportReport::default();
    let mut seen = HashSet::new();
    for (i, im) in f.images.into_iter().enumerate() {
        let rel = match &im.filepath {
            Some(fp) if !fp.is_empty() && images_dir.join(fp).join(&im.filename).is_file() => {
                format!("{fp}/{}", im.filename)
            }
            _ => im.filename.clone(),
        };
        if let Err(m) = check_file_name(&rel) {
            report.problems.push(ItemProblem {
                item: format!("images[{i}]"),
                error: format_err(json_path, format!("images[{i}]: {m}")),
            });
            continue;
        }
        if !seen.insert(rel.clone()) {
            report.problems.push(ItemProblem {
                item: rel.clone(),
                error: format_err(json_path, format!("images[{i}]: file name {rel:?} is listed twice; the later entry was left out")),
            });
            continue;
        }
        let sentences = im
            .sentences
            .iter()
            .filter_map(|s| match &s.raw {
                Some(r) => Some(r.trim().to_string()),
                None if !s.tokens.is_empty() => Some(s.tokens.join(" ")),
                None => None,
            })
            .filter(|s| !s.is_empty())
            .collect();
        report.items.push(SourceItem {
            image: images_dir.join(&rel),
            label: im
                .scene
                .clone()
                .or_else(|| label_from_file_name(&im.filename)),
            file_name: rel,
            sentences,
            source_split: im.split.clone(),
            origin: "karpathy".into(),
        });
    }
    Ok(report)
}

/// Reads a Karpathy-style JSON file and checks the images exist.
pub fn import_karpathy(json_path: &Path, images_dir: &Path) -> Result<ImportReport> {
    let text = read_text(json_path)?;
    let mut r = parse_karpathy(&text, json_path, images_dir)?;
    r.check_images(json_path);
    Ok(r)
}

/// Writes items as Karpathy-style JSON (the `scene` field is a strata extension; readers
/// of the format ignore it).
pub fn export_karpathy(items: &[SourceItem], dataset: &str) -> String {
    let f = KarpathyFile {
        dataset: Some(dataset.to_string()),
        images: items
            .iter()
            .enumerate()
            .map(|(i, it)| KarpathyImage {
                filename: it.file_name.clone(),
                filepath: None,
                imgid: Some(i as u64),
                sentences: it
                    .sentences
                    .iter()
                    .map(|s| KarpathySentence {
                        raw: Some(s.clone()),
                        tokens: crate::text::phrase_words(s),
                    })
                    .collect(),
                split: it.source_split.clone(),
                scene: it.label.clone(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&f).expect("karpathy json serialises")
}

// ------------------------------------------------------------------------------------
// COCO JSON
// ------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scene: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CocoAnnotation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    image_id: u64,
    caption: String,
}

/// Parses COCO-style caption JSON. Captions of an image keep their file order. An
/// annotation for an unknown image id is a problem; images without captions are kept.
pub fn parse_coco(text: &str, json_path: &Path, images_dir: &Path) -> Result<ImportReport> {
    let f: CocoFile = serde_json::from_str(text).map_err(|e| json_err(json_path, e))?;
    let mut report = ImportReport::default();
    let mut by_id: HashMap<u64, usize> = HashMap::new();
    let mut names = HashSet::new();
    for (i, im) in f.images.iter().enumerate() {
        if let Err(m) = check_file_name(&im.file_name) {
            report.problems.push(ItemProblem {
                item: format!("images[{i}]"),
                error: format_err(json_path, format!("images[{i}]: {m}")),
            });
            continue;
        }
        if by_id.contains_key(&im.id) {
            report.problems.push(ItemProblem {
                item: im.file_name.clone(),
                error: format_err(
                    json_path,
                    format!(
                        "images[{i}]: image id {} is used twice; the later entry was left out",
                        im.id
                    ),
                ),
            });
            continue;
        }
        if !names.insert(im.file_name.clone()) {
            report.problems.push(ItemProblem {
                item: im.file_name.clone(),
                error: format_err(
                    json_path,
                    format!(
                        "images[{i}]: file name {:?} is listed twice; the later entry was left out",
                        im.file_name
                    ),
                ),
            });
            continue;
        }
        by_id.insert(im.id, report.items.len());
        report.items.push(SourceItem {
            file_name: im.file_name.clone(),
            image: images_dir.join(&im.file_name),
            label: im
                .scene
                .clone()
                .or_else(|| label_from_file_name(&im.file_name)),
            sentences: Vec::new(),
            source_split: None,
            origin: "coco".into(),
        });
    }
    for (i, a) in f.annotations.iter().enumerate() {
        match by_id.get(&a.image_id) {
            Some(&k) => {
                let c = a.caption.trim();
                if !c.is_empty() {
                    report.items[k].sentences.push(c.to_string());
                }
            }
            None => report.problems.push(ItemProblem {
                item: format!("annotations[{i}]"),
                error: format_err(
                    json_path,
                    format!(
                        "annotations[{i}]: image_id {} is not in \"images\"",
                        a.image_id
                    ),
                ),
            }),
        }
    }
    Ok(report)
}

/// Reads a COCO-style caption JSON file and checks the images exist.
pub fn import_coco(json_path: &Path, images_dir: &Path) -> Result<ImportReport> {
    let text = read_text(json_path)?;
    let mut r = parse_coco(&text, json_path, images_dir)?;
    r.check_images(json_path);
    Ok(r)
}

/// Writes items as COCO-style caption JSON.
pub fn export_coco(items: &[SourceItem]) -> String {
    let mut annotations = Vec::new();
    let images = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            for s in &it.sentences {
                annotations.push(CocoAnnotation {
                    id: Some(annotations.len() as u64),
                    image_id: i as u64,
                    caption: s.clone(),
                });
            }
            CocoImage {
                id: i as u64,
                file_name: it.file_name.clone(),
                scene: it.label.clone(),
            }
        })
        .collect();
    serde_json::to_string_pretty(&CocoFile {
        images,
        annotations,
    })
    .expect("coco json serialises")
}

// ------------------------------------------------------------------------------------
// Folders
// ------------------------------------------------------------------------------------

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// All image files under `root`, recursively, as sorted relative paths with `/`; file
/// names that are not UTF-8 are returned apart.
fn walk_images(root: &Path) -> Result<(Vec<String>, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut non_utf8 = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| CaptionError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| CaptionError::Read {
                path: dir.clone(),
                source,
            })?;
            let p = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                let rel = p.strip_prefix(root).expect("walked under root");
                let parts: Option<Vec<&str>> =
                    rel.components().map(|c| c.as_os_str().to_str()).collect();
                match parts {
                    Some(parts) => out.push(parts.join("/")),
                    None => non_utf8.push(p.clone()),
                }
            }
        }
    }
    out.sort();
    non_utf8.sort();
    Ok((out, non_utf8))
}

fn non_utf8_problems(report: &mut ImportReport, paths: Vec<PathBuf>) {
    for p in paths {
        report.problems.push(ItemProblem {
            item: p.to_string_lossy().to_string(),
            error: format_err(
                &p,
                "the file name is not valid UTF-8; rename the file".into(),
            ),
        });
    }
}

/// Reads the kohya caption next to an image (`x.png` → `x.txt`): sentences, or one
/// comma-tag line kept as one candidate. `None` when there is no such file.
fn read_caption_file(image: &Path) -> Result<Option<Vec<String>>> {
    let txt = image.with_extension("txt");
    if !txt.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&txt).map_err(|source| CaptionError::Read {
        path: txt.clone(),
        source,
    })?;
    let text = utf8_text(&txt, bytes)?;
    Ok(Some(
        text.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
    ))
}

/// Class-per-folder dataset: every image under `root/<scene>/...` gets label `<scene>`
/// (the first folder level). A kohya `.txt` next to an image adds candidate sentences.
/// Images directly in `root` have no label.
pub fn import_class_folders(root: &Path) -> Result<ImportReport> {
    import_tree(
        root,
        "is not a folder; pass the dataset root whose sub-folders are the scene classes",
        "folders",
        true,
    )
}

/// Plain tiles for captioning from pixels: every image under `root` (recursively), with no
/// sentences. An image in a sub-folder gets the first folder's name as its label (used only
/// when the scene is taken from labels); `strata prepare` output and flat folders get none.
pub fn import_images(root: &Path) -> Result<ImportReport> {
    import_tree(
        root,
        "is not a folder; pass the folder that holds the images",
        "images",
        false,
    )
}

/// Every image under `root`, labelled by its first folder level; with `sentences`, a
/// kohya `.txt` beside an image adds candidate sentences.
fn import_tree(
    root: &Path,
    not_a_folder: &str,
    origin: &str,
    sentences: bool,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    if !root.is_dir() {
        return Err(format_err(root, not_a_folder.into()));
    }
    let (names, bad_names) = walk_images(root)?;
    non_utf8_problems(&mut report, bad_names);
    for rel in names {
        let image = root.join(&rel);
        let label = rel.split_once('/').map(|(first, _)| first.to_string());
        let read = if sentences {
            read_caption_file(&image)
        } else {
            Ok(None)
        };
        match read {
            Ok(s) => report.items.push(SourceItem {
                file_name: rel,
                image,
                label,
                sentences: s.unwrap_or_default(),
                source_split: None,
                origin: origin.into(),
            }),
            Err(error) => report.problems.push(ItemProblem { item: rel, error }),
        }
    }
    if report.items.is_empty() && report.problems.is_empty() {
        return Err(format_err(
            root,
            format!(
                "no images found (looked for {})",
                IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    Ok(report)
}

/// kohya-style dataset: images with a same-name `.txt` caption. Images without one are
/// problems. The parent folder (kohya's `10_concept`) is the label when there is one.
pub fn import_kohya(root: &Path) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    if !root.is_dir() {
        return Err(format_err(root, "is not a folder".into()));
    }
    let (names, bad_names) = walk_images(root)?;
    non_utf8_problems(&mut report, bad_names);
    for rel in names {
        let image = root.join(&rel);
        let label = rel
            .rsplit_once('/')
            .map(|(dir, _)| dir.rsplit('/').next().unwrap_or(dir).to_string());
        match read_caption_file(&image) {
            Ok(Some(s)) => report.items.push(SourceItem {
                file_name: rel,
                image,
                label,
                sentences: s,
                source_split: None,
                origin: "kohya".into(),
            }),
            Ok(None) => report.problems.push(ItemProblem {
                item: rel.clone(),
                error: format_err(
                    &image,
                    "has no caption file next to it (expected the same name with .txt)".into(),
                ),
            }),
            Err(error) => report.problems.push(ItemProblem { item: rel, error }),
        }
    }
    if report.items.is_empty() && report.problems.is_empty() {
        return Err(format_err(
            root,
            format!(
                "no images found (looked for {})",
                IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    Ok(report)
}

/// Writes kohya caption files: `<dir>/<file_name>` with `.txt`, one candidate a line.
/// Each file is written atomically.
pub fn export_kohya(dir: &Path, items: &[SourceItem]) -> Result<()> {
    for it in items {
        let txt = dir.join(&it.file_name).with_extension("txt");
        if let Some(d) = txt.parent() {
            std::fs::create_dir_all(d).map_err(|source| CaptionError::Write {
                path: d.to_path_buf(),
                source,
            })?;
        }
        let mut body = it.sentences.join("\n");
        body.push('\n');
        crate::dataset::write_atomic(&txt, body.as_bytes())?;
    }
    Ok(())
}

/// The split a source assigned, read as strata's two-way split (`val` counts as test).
pub fn source_split(s: &str) -> Option<Split> {
    match s.to_ascii_lowercase().as_str() {
        "train" | "restval" => Some(Split::Train),
        "test" | "val" | "valid" | "validation" => Some(Split::Test),
        _ => None,
    }
}

/// Reads a label file for datasets whose file names carry no class (UCM-captions and
/// Sydney-captions number their images): one `file_name,scene` pair a line; blank lines
/// and lines starting with `#` are skipped. Errors name the line.
pub fn read_labels(path: &Path) -> Result<HashMap<String, String>> {
    parse_labels(&read_text(path)?, path)
}

/// [`read_labels`] on text; `path` is only used in messages.
pub fn parse_labels(text: &str, path: &Path) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = |message: String| CaptionError::Format {
            path: path.to_path_buf(),
            message: format!("line {}: {message}", i + 1),
        };
        let Some((f, s)) = l.split_once(',') else {
            return Err(bad(format!("expected `file_name,scene`, found {l:?}")));
        };
        let (f, s) = (f.trim(), s.trim());
        if f.is_empty() || s.is_empty() {
            return Err(bad("file name and scene must both be given".into()));
        }
        if out.insert(f.to_string(), s.to_string()).is_some() {
            return Err(bad(format!("{f:?} is labelled twice")));
        }
    }
    Ok(out)
}

impl ImportReport {
    /// Sets the label of every item the map names (the map wins over labels the importer
    /// derived). Returns how many items were labelled.
    pub fn apply_labels(&mut self, labels: &HashMap<String, String>) -> usize {
        let mut n = 0;
        for it in &mut self.items {
            if let Some(s) = labels.get(&it.file_name) {
                it.label = Some(s.clone());
                n += 1;
            }
        }
        n
    }
}
