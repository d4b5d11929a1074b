//! The Caption tab: browse a strata dataset (images + `metadata.jsonl`), check a caption
//! against the SRKC, save an expert correction.
//!
//! Paths: a request names an image by its `file_name`, and only names that are listed in
//! `metadata.jsonl` and pass `strata_caption::dataset::check_file_name` (relative, no `..`)
//! are served; the joined path is then canonicalised and must still lie inside the dataset
//! folder (a symbolic link out is refused).
//!
//! Saving rewrites `metadata.jsonl` atomically with only the edited line changed (every
//! other line is kept byte for byte). The request carries the version it was based on (the
//! FNV-1a 64 of the record's line); if the line changed since, the save is refused with 409
//! and the current record, so the last writer is told rather than silently overwriting. The
//! caption before the edit is kept in `provenance.expert_corrections` with a UTC timestamp.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use strata_caption::dataset::{check_file_name, parse_metadata};
use strata_caption::{MetadataRecord, RelationTriple, METADATA_FILE};

use crate::api::{check_text, checks, image_content_type, parse_json, ApiError, CheckRequest};
use crate::{AppState, ServeError};

pub struct Dataset {
    pub name: String,
    pub root: PathBuf,
    pub meta: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl Dataset {
    pub fn open(dir: &FsPath) -> Result<Dataset, ServeError> {
        let root = std::fs::canonicalize(dir).map_err(|e| ServeError::Io {
            what: format!("--data {}", dir.display()),
            source: e,
        })?;
        let meta = root.join(METADATA_FILE);
        if !meta.is_file() {
            return Err(ServeError::Config(format!(
                "--data {}: no {METADATA_FILE} in it (make one with `strata caption` or `strata synth`)",
                dir.display()
            )));
        }
        Ok(Dataset {
            name: root
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| root.display().to_string()),
            root,
            meta,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The file's lines and the parsed records (every line checked).
    fn read(&self) -> Result<(String, Vec<MetadataRecord>), ApiError> {
        let text = std::fs::read_to_string(&self.meta)
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", self.meta.display())))?;
        let recs = parse_metadata(&text, &self.meta)
            .map_err(|e| ApiError::internal(format!("{e} (fix the file by hand, then reload)")))?;
        Ok((text, recs))
    }
}

/// Version of a record: FNV-1a 64 of its line, in hex.
pub fn version(line: &str) -> String {
    format!(
        "{:016x}",
        strata_io::hash::fnv1a64(line.trim_end_matches('\r').as_bytes())
    )
}

/// (index in `text.lines()`, line) of the record for `file_name`.
fn find_line<'a>(text: &'a str, file_name: &str) -> Option<(usize, &'a str)> {
    text.lines().enumerate().find(|(_, l)| {
        !l.trim().is_empty()
            && serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("file_name")?.as_str().map(|s| s == file_name))
                .unwrap_or(false)
    })
}

fn dataset(st: &AppState, d: &str) -> Result<usize, ApiError> {
    let i: usize = d
        .parse()
        .map_err(|_| ApiError::bad(format!("dataset id {d:?} is not a number")))?;
    if i >= st.datasets.len() {
        return Err(ApiError::not_found(format!(
            "no dataset {i}: this server has {} (--data)",
            st.datasets.len()
        )));
    }
    Ok(i)
}

/// Checks a requested file name: the same rules as the dataset reader, plus no backslash.
fn safe_name(name: &str) -> Result<(), ApiError> {
    check_file_name(name).map_err(ApiError::bad)?;
    if name.contains('\\') || name.contains('\0') {
        return Err(ApiError::bad(format!(
            "file {name:?}: use '/' between folders"
        )));
    }
    Ok(())
}

pub async fn list(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let v: Vec<serde_json::Value> = st
        .datasets
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"id": i, "name": d.name}))
        .collect();
    Json(json!(v))
}

#[derive(Debug, Deserialize)]
pub struct RecordsQuery {
    #[serde(default)]
    offset: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    q: Option<String>,
}

fn num_param(
    name: &str,
    v: &Option<String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(ApiError::bad(format!(
                "{name} must be a whole number from 0 to {max}, got {s:?}"
            ))),
        },
    }
}

/// `GET /api/datasets/{d}/records?offset=&limit=&q=`: one page of records (q filters by
/// file name, scene, relation or element, case-insensitively).
pub async fn records(
    State(st): State<Arc<AppState>>,
    Path(d): Path<String>,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let i = dataset(&st, &d)?;
    let offset = num_param("offset", &q.offset, 0, usize::MAX / 2)?;
    let limit = num_param("limit", &q.limit, 100, 1000)?;
    let ds = &st.datasets[i];
    let (_, recs) = ds.read()?;
    let needle = q.q.unwrap_or_default().to_lowercase();
    let hits: Vec<&MetadataRecord> = recs
        .iter()
        .filter(|r| {
            needle.is_empty()
                || r.file_name.to_lowercase().contains(&needle)
                || r.scene.to_lowercase().contains(&needle)
                || r.relation.to_lowercase().contains(&needle)
                || r.elements
                    .iter()
                    .any(|e| e.to_lowercase().contains(&needle))
        })
        .collect();
    let page: Vec<serde_json::Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| {
            let a = strata_caption::analyze(&st.knowledge, &r.relation);
            json!({"file_name": r.file_name, "scene": r.scene, "relation": r.relation,
                "elements": r.elements, "golden": a.passes_golden_rule(),
                "vertical": !a.vertical.is_empty(),
                "corrected": r.extra.get("provenance").and_then(|p| p.get("expert_corrections")).is_some()})
        })
        .collect();
    Ok(Json(
        json!({"dataset": ds.name, "total": hits.len(), "offset": offset, "records": page}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    file: Option<String>,
}

fn record_json(st: &AppState, line: &str) -> Result<serde_json::Value, ApiError> {
    let rec: MetadataRecord =
        serde_json::from_str(line).map_err(|e| ApiError::internal(format!("record: {e}")))?;
    let c = CheckRequest {
        scene: rec.scene.clone(),
        relation: rec.relation.clone(),
        elements: rec.elements.clone(),
    };
    Ok(json!({
        "record": serde_json::to_value(&rec).unwrap_or_default(),
        "version": version(line),
        "checks": checks(&st.knowledge, &c),
    }))
}

/// `GET /api/datasets/{d}/record?file=NAME`: the record, its version and its checks.
pub async fn record(
    State(st): State<Arc<AppState>>,
    Path(d): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let i = dataset(&st, &d)?;
    let name = q.file.ok_or_else(|| ApiError::bad("give ?file=NAME"))?;
    safe_name(&name)?;
    let (text, _) = st.datasets[i].read()?;
    let (_, line) = find_line(&text, &name)
        .ok_or_else(|| ApiError::not_found(format!("{name:?} is not listed in {METADATA_FILE}")))?;
    Ok(Json(record_json(&st, line)?))
}

/// `GET /api/datasets/{d}/image?file=NAME`: the image of a listed record.
pub async fn image(
    State(st): State<Arc<AppState>>,
    Path(d): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let i = dataset(&st, &d)?;
    let name = q.file.ok_or_else(|| ApiError::bad("give ?file=NAME"))?;
    safe_name(&name)?;
    let ds = &st.datasets[i];
    let (_, recs) = ds.read()?;
    if !recs.iter().any(|r| r.file_name == name) {
        return Err(ApiError::not_found(format!(
            "{name:?} is not listed in {METADATA_FILE}"
        )));
    }
    let real = std::fs::canonicalize(ds.root.join(&name))
        .map_err(|e| ApiError::not_found(format!("{name}: {e}")))?;
    if !real.starts_with(&ds.root) || !real.is_file() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{name:?} leads outside the dataset folder"),
        ));
    }
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(&real))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("reading {name}: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, image_content_type(&name)),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveBody {
    pub file_name: String,
    /// The version the edit was based on (from the GET).
    pub version: String,
    pub scene: String,
    pub relation: String,
    pub elements: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// `PUT /api/datasets/{d}/record`: saves an expert correction.
pub async fn save(
    State(st): State<Arc<AppState>>,
    Path(d): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let i = dataset(&st, &d)?;
    let b: SaveBody = parse_json(&body)?;
    safe_name(&b.file_name)?;
    check_text("scene", &b.scene, 200)?;
    check_text("relation", &b.relation, 4000)?;
    check_text("note", b.note.as_deref().unwrap_or(""), 2000)?;
    if b.elements.len() > 100 {
        return Err(ApiError::bad("elements: at most 100"));
    }
    for e in &b.elements {
        check_text("element", e, 100)?;
    }
    let ds = &st.datasets[i];
    let _guard = ds.lock.lock().await;
    let (text, _) = ds.read()?;
    let (idx, line) = find_line(&text, &b.file_name).ok_or_else(|| {
        ApiError::not_found(format!(
            "{:?} is not listed in {METADATA_FILE}",
            b.file_name
        ))
    })?;
    if version(line) != b.version {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} was changed by someone else since you opened it; your edit was not saved. The current caption is shown; re-apply your change and save again.",
                b.file_name
            ),
        );
        e.extra = Some(json!({"current": record_json(&st, line)?}));
        return Err(e);
    }
    let mut rec: MetadataRecord =
        serde_json::from_str(line).map_err(|e| ApiError::internal(format!("record: {e}")))?;
    let elements: Vec<String> = b
        .elements
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let (scene, relation) = (b.scene.trim().to_string(), b.relation.trim().to_string());
    if rec.scene == scene && rec.relation == relation && rec.elements == elements {
        let mut v = record_json(&st, line)?;
        v["unchanged"] = json!(true);
        return Ok(Json(v));
    }
    let before = json!({"scene": rec.scene, "relation": rec.relation, "elements": rec.elements});
    rec.scene = scene;
    rec.relation = relation;
    rec.elements = elements;
    let a = strata_caption::analyze(&st.knowledge, &rec.relation);
    let triples: Vec<RelationTriple> = a.relations.iter().map(RelationTriple::from).collect();
    rec.set_relations(&triples);
    let mut entry = json!({
        "time": crate::time::now(),
        "before": before,
        "after": {"scene": rec.scene, "relation": rec.relation, "elements": rec.elements},
        "golden": a.passes_golden_rule(),
    });
    if let Some(n) = b.note.as_deref().filter(|n| !n.trim().is_empty()) {
        entry["note"] = json!(n.trim());
    }
    let prov = rec.extra.entry("provenance").or_insert_with(|| json!({}));
    if !prov.is_object() {
        *prov = json!({"previous": prov.clone()});
    }
    let list = prov
        .as_object_mut()
        .expect("object")
        .entry("expert_corrections")
        .or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([list.clone()]);
    }
    list.as_array_mut().expect("array").push(entry);
    let new_line = serde_json::to_string(&rec)
        .map_err(|e| ApiError::internal(format!("serialising the record: {e}")))?;
    let mut out = String::with_capacity(text.len() + new_line.len());
    for (j, l) in text.lines().enumerate() {
        out.push_str(if j == idx { &new_line } else { l });
        out.push('\n');
    }
    if !text.ends_with('\n') && !text.is_empty() {
        out.pop();
    }
    // the whole file must still parse, with the same records, before it replaces the old one
    let check = parse_metadata(&out, &ds.meta)
        .map_err(|e| ApiError::internal(format!("the edited file would not parse: {e}")))?;
    let (_, old) = ds.read()?;
    if check.len() != old.len() {
        return Err(ApiError::internal(
            "the edit would change the number of records; nothing written",
        ));
    }
    strata_io::atomic::write(&ds.meta, out.as_bytes())
        .map_err(|e| ApiError::internal(format!("writing {}: {e}", ds.meta.display())))?;
    let mut v = record_json(&st, &new_line)?;
    v["saved"] = json!(true);
    Ok(Json(v))
}
