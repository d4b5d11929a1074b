//! Errors as JSON, request-body parsing, the page's files, and the small read-only
//! endpoints (`/api/info`, `/api/knowledge`, `/api/check`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// An error answered as `{"error": message}` with a status the page shows.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            extra: None,
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let (Some(extra), Some(obj)) = (self.extra, body.as_object_mut()) {
            if let Some(e) = extra.as_object() {
                for (k, v) in e {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body into `T`; malformed JSON, a wrong type or an unknown field is a 400
/// with serde's message (field and position).
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            ApiError::bad(format!("request body: {}", e.inner()))
        } else {
            ApiError::bad(format!("request body: {path}: {}", e.inner()))
        }
    })
}

/// A finite number within `[lo, hi]`.
pub fn check_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ApiError> {
    if !v.is_finite() || v < lo || v > hi {
        return Err(ApiError::bad(format!(
            "{name} must be a finite number from {lo} to {hi}, got {v}"
        )));
    }
    Ok(v)
}

/// An integer within `[lo, hi]`.
pub fn check_int(name: &str, v: i64, lo: i64, hi: i64) -> Result<i64, ApiError> {
    if v < lo || v > hi {
        return Err(ApiError::bad(format!(
            "{name} must be a whole number from {lo} to {hi}, got {v}"
        )));
    }
    Ok(v)
}

/// A text field of at most `max` characters.
pub fn check_text(name: &str, v: &str, max: usize) -> Result<(), ApiError> {
    let n = v.chars().count();
    if n > max {
        return Err(ApiError::bad(format!(
            "{name} is {n} characters long; at most {max}"
        )));
    }
    if v.contains('\0') {
        return Err(ApiError::bad(format!("{name} contains a NUL character")));
    }
    Ok(())
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such page or endpoint (see docs/serve.md for the list)")
}

/// Models, LoRAs, embeddings, datasets, limits and defaults for the page.
pub async fn info(State(st): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let st2 = st.clone();
    // scanning the folder and materialising the base model touch the disk
    let (entries, base_side) = tokio::task::spawn_blocking(move || {
        let side = st2
            .cfg
            .base_model
            .is_some()
            .then(|| crate::models::base_side(&st2));
        (crate::models::scan(&st2), side)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let pick = |kind: crate::models::Kind| -> Vec<serde_json::Value> {
        entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| json!({"id": e.id, "side": e.side}))
            .collect()
    };
    let mut models = vec![];
    if let Some(side) = base_side {
        models.push(json!({"id": crate::models::BASE_ID, "side": side}));
    }
    models.extend(pick(crate::models::Kind::Model));
    let datasets: Vec<serde_json::Value> = st
        .datasets
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"id": i, "name": d.name}))
        .collect();
    let l = &st.cfg.limits;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "loras": pick(crate::models::Kind::Lora),
        "embeddings": pick(crate::models::Kind::Embedding),
        "datasets": datasets,
        "limits": {
            "queue": l.queue, "upload_bytes": l.upload_bytes,
            "steps": [1, crate::jobs::MAX_STEPS], "cfg": [0.0, crate::jobs::MAX_CFG],
            "side": [8, crate::jobs::MAX_SIDE], "batch": [1, crate::jobs::MAX_BATCH],
            "strength": [0.0, 1.0], "lora_scale": [-crate::jobs::MAX_LORA_SCALE, crate::jobs::MAX_LORA_SCALE],
            "seed": [-1, crate::jobs::MAX_SEED],
        },
    })))
}

/// The SRKC vocabulary for autocomplete: scene names, relation phrases, element names (with
/// aliases), vertical phrases.
pub async fn knowledge(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let k = &st.knowledge;
    let scenes: Vec<&str> = k.scenes.iter().map(|s| s.name.as_str()).collect();
    let mut relations: Vec<&str> = k
        .relations
        .iter()
        .flat_map(|r| r.phrases.iter().chain(&r.passive_phrases))
        .map(String::as_str)
        .collect();
    relations.sort_unstable();
    relations.dedup();
    let elements: Vec<&str> = k.elements.iter().map(|e| e.name.as_str()).collect();
    let mut aliases: Vec<(&str, &str)> = k
        .elements
        .iter()
        .flat_map(|e| e.aliases.iter().map(move |a| (a.as_str(), e.name.as_str())))
        .collect();
    aliases.sort_unstable();
    Json(json!({
        "name": k.name,
        "source": k.source,
        "fingerprint": k.fingerprint,
        "scenes": scenes,
        "relations": relations,
        "elements": elements,
        "element_aliases": aliases,
        "vertical": k.vertical,
    }))
}

/// A caption to check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    #[serde(default)]
    pub scene: String,
    #[serde(default)]
    pub relation: String,
    #[serde(default)]
    pub elements: Vec<String>,
}

/// The golden-rule and vertical-relation checks of a caption, plus what the automatic
/// expert corrections would change (as suggestions; nothing is applied).
pub fn checks(k: &strata_caption::Knowledge, c: &CheckRequest) -> serde_json::Value {
    let a = strata_caption::analyze(k, &c.relation);
    let relations: Vec<serde_json::Value> = a
        .relations
        .iter()
        .map(|r| {
            json!({"relation": r.relation, "phrase": r.phrase,
                "subject": r.subject.as_ref().map(|e| &e.element),
                "object": r.object.as_ref().map(|e| &e.element)})
        })
        .collect();
    let vertical: Vec<serde_json::Value> = a
        .vertical
        .iter()
        .map(|v| {
            json!({"phrase": v.phrase.to_lowercase(),
                "subject": v.subject.as_ref().map(|e| &e.element),
                "object": v.object.as_ref().map(|e| &e.element)})
        })
        .collect();
    let unknown: Vec<&String> = c
        .elements
        .iter()
        .filter(|e| !e.trim().is_empty() && k.element(e.trim()).is_none())
        .collect();
    let scene_def = k.scene(&c.scene);
    let implausible: Vec<&String> = match scene_def {
        Some(s) => c
            .elements
            .iter()
            .filter(|e| {
                let name = k.element(e.trim()).unwrap_or(e.trim());
                s.implausible.iter().any(|i| i == name)
            })
            .collect(),
        None => vec![],
    };
    let mut fixed = strata_caption::HierarchicalCaption {
        scene: c.scene.clone(),
        relation: c.relation.clone(),
        elements: c.elements.clone(),
    };
    let suggestions = strata_caption::correct(k, &mut fixed);
    let mut messages: Vec<String> = vec![];
    if !a.vertical.is_empty() {
        messages.push(format!(
            "vertical relation {}: a nadir (top-down) image cannot show it; say how the elements lie side by side instead",
            a.vertical
                .iter()
                .map(|v| format!("\"{}\"", v.phrase.to_lowercase()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if a.relations.is_empty() && !c.relation.trim().is_empty() {
        messages.push("no SRKC spatial relation in the relation text (e.g. \"next to\", \"surrounded by\", \"runs through\")".into());
    }
    if !c.scene.trim().is_empty() && scene_def.is_none() {
        messages.push(format!(
            "scene \"{}\" is not a scene concept of the knowledge file (kept as it is)",
            c.scene.trim()
        ));
    }
    for u in &unknown {
        messages.push(format!("element \"{u}\" is not in the element lexicon"));
    }
    for i in &implausible {
        messages.push(format!(
            "element \"{i}\" is implausible in a {} scene",
            c.scene.trim()
        ));
    }
    json!({
        "golden": a.passes_golden_rule(),
        "relations": relations,
        "vertical": vertical,
        "unknown_elements": unknown,
        "implausible_elements": implausible,
        "scene_known": scene_def.is_some(),
        "messages": messages,
        "suggestions": suggestions,
        "suggested": {"scene": fixed.scene, "relation": fixed.relation, "elements": fixed.elements},
    })
}

pub async fn check(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c: CheckRequest = parse_json(&body)?;
    check_text("scene", &c.scene, 200)?;
    check_text("relation", &c.relation, 4000)?;
    if c.elements.len() > 100 {
        return Err(ApiError::bad(format!(
            "elements: {} given; at most 100",
            c.elements.len()
        )));
    }
    for e in &c.elements {
        check_text("element", e, 100)?;
    }
    Ok(Json(checks(&st.knowledge, &c)))
}

/// `Content-Type` of an image file by extension.
pub fn image_content_type(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    match lower.rsplit('.').next() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("tif" | "tiff") => "image/tiff",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        _ => "application/octet-stream",
    }
}
