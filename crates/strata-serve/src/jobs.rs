//! The generation queue: one job runs at a time on a blocking thread, the others wait in a
//! bounded queue (503 beyond it). Each job's state lives in a `watch` channel, so an event
//! stream always sends the latest state and never buffers more than one. Cancel sets a flag
//! the denoising loop checks before every step. A watchdog cancels a queued or running job
//! that no page has watched (no event stream open, no poll) for `Limits::abandon_after`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::api::{check_int, check_range, check_text, parse_json, ApiError};
use crate::generate::{self, Engine, GenError, GenRequest, Prompt};
use crate::models::{self, Kind};
use crate::{AppState, Limits};

pub const MAX_STEPS: i64 = 150;
pub const MAX_CFG: f64 = 30.0;
pub const MAX_SIDE: i64 = 2048;
pub const MAX_BATCH: i64 = 8;
pub const MAX_LORA_SCALE: f64 = 4.0;
/// Seeds stay exact in JavaScript numbers (2^53 − 1).
pub const MAX_SEED: i64 = 9_007_199_254_740_991;
/// Pixels × batch of one job (four 512² images).
pub const MAX_PIXELS: i64 = 4 * 512 * 512;

/// An uploaded init image.
pub struct Upload {
    pub id: String,
    pub bytes: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub url: String,
    pub parameters: String,
}

/// What the page sees of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: u64,
    /// queued, running, done, error, cancelled
    pub state: &'static str,
    /// Place in the queue (0: next), while queued.
    pub position: Option<usize>,
    pub step: usize,
    pub total: usize,
    /// Bumped on each new preview (`/api/jobs/ID/preview?v=N`).
    pub preview: u64,
    pub message: Option<String>,
    pub images: Vec<ImageInfo>,
    /// The settings as run (seed resolved): what "reuse these settings" puts back.
    pub settings: serde_json::Value,
}

impl Status {
    fn terminal(&self) -> bool {
        matches!(self.state, "done" | "error" | "cancelled")
    }
}

struct Job {
    tx: watch::Sender<Status>,
    cancel: Arc<AtomicBool>,
    req: Option<GenRequest>,
    params: Vec<(String, String)>,
    last_seen: Instant,
    preview_png: Option<Vec<u8>>,
    images: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    jobs: HashMap<u64, Job>,
    queue: VecDeque<u64>,
    finished: VecDeque<u64>,
}

pub struct Jobs {
    inner: Mutex<Inner>,
    notify: Notify,
    limits: Limits,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs {
    pub fn new(limits: Limits) -> Self {
        Jobs {
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Default::default()
            }),
            notify: Notify::new(),
            limits,
        }
    }

    fn enqueue(
        &self,
        req: GenRequest,
        settings: serde_json::Value,
        params: Vec<(String, String)>,
    ) -> Result<Status, ApiError> {
        let mut g = lock(&self.inner);
        let active = g
            .jobs
            .values()
            .filter(|j| !j.tx.borrow().terminal())
            .count();
        if active >= self.limits.queue {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the queue is full ({} jobs queued or running); wait for some to finish or cancel one",
                    self.limits.queue
                ),
            ));
        }
        let id = g.next_id;
        g.next_id += 1;
        let status = Status {
            id,
            state: "queued",
            position: Some(g.queue.len()),
            step: 0,
            total: req.steps,
            preview: 0,
            message: None,
            images: vec![],
            settings,
        };
        let (tx, _) = watch::channel(status.clone());
        g.jobs.insert(
            id,
            Job {
                tx,
                cancel: Arc::new(AtomicBool::new(false)),
                req: Some(req),
                params,
                last_seen: Instant::now(),
                preview_png: None,
                images: vec![],
            },
        );
        g.queue.push_back(id);
        drop(g);
        self.notify.notify_one();
        Ok(status)
    }

    /// Takes the next queued job (marking it running).
    fn take_next(&self) -> Option<(u64, GenRequest, Arc<AtomicBool>)> {
        let mut g = lock(&self.inner);
        while let Some(id) = g.queue.pop_front() {
            let Some(job) = g.jobs.get_mut(&id) else {
                continue;
            };
            let Some(req) = job.req.take() else { continue };
            job.tx.send_modify(|s| {
                s.state = "running";
                s.position = None;
            });
            let cancel = job.cancel.clone();
            Self::renumber(&mut g);
            return Some((id, req, cancel));
        }
        None
    }

    fn renumber(g: &mut Inner) {
        let ids: Vec<u64> = g.queue.iter().copied().collect();
        for (pos, id) in ids.into_iter().enumerate() {
            if let Some(j) = g.jobs.get(&id) {
                j.tx.send_modify(|s| s.position = Some(pos));
            }
        }
    }

    fn finish(&self, id: u64, f: impl FnOnce(&mut Job, &mut Status)) {
        let mut g = lock(&self.inner);
        if let Some(job) = g.jobs.get_mut(&id) {
            let mut s = job.tx.borrow().clone();
            f(job, &mut s);
            s.position = None;
            job.tx.send_replace(s);
            job.req = None;
        }
        g.queue.retain(|q| *q != id);
        g.finished.push_back(id);
        while g.finished.len() > self.limits.keep_jobs {
            if let Some(old) = g.finished.pop_front() {
                g.jobs.remove(&old);
            }
        }
        Self::renumber(&mut g);
    }

    fn progress(
        &self,
        id: u64,
        step: usize,
        total: usize,
        preview: Option<Vec<u8>>,
        side: (usize, usize),
    ) {
        let png = preview.and_then(|rgb| generate::encode_png(&rgb, side.0, side.1, &[]).ok());
        let mut g = lock(&self.inner);
        if let Some(job) = g.jobs.get_mut(&id) {
            let has = png.is_some();
            if png.is_some() {
                job.preview_png = png;
            }
            job.tx.send_modify(|s| {
                s.step = step;
                s.total = total;
                if has {
                    s.preview += 1;
                }
            });
        }
    }

    fn cancel(&self, id: u64, why: &str) -> Option<Status> {
        let g = lock(&self.inner);
        let job = g.jobs.get(&id)?;
        let state = job.tx.borrow().state;
        job.cancel.store(true, Ordering::SeqCst);
        let queued = state == "queued";
        drop(g);
        if queued {
            let why = why.to_string();
            self.finish(id, move |_, s| {
                s.state = "cancelled";
                s.message = Some(why);
            });
        }
        let g = lock(&self.inner);
        g.jobs.get(&id).map(|j| j.tx.borrow().clone())
    }

    fn touch(&self, id: u64) -> Option<Status> {
        let mut g = lock(&self.inner);
        let j = g.jobs.get_mut(&id)?;
        j.last_seen = Instant::now();
        let s = j.tx.borrow().clone();
        Some(s)
    }
}

fn job_id(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad(format!("job id {s:?} is not a number")))
}

fn gone(id: u64) -> ApiError {
    ApiError::not_found(format!(
        "job {id} does not exist (or is no longer kept: the newest finished jobs are kept)"
    ))
}

/// The body of `POST /api/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    #[serde(default)]
    pub scene: String,
    #[serde(default)]
    pub relation: String,
    #[serde(default)]
    pub elements: Vec<String>,
    /// A flat prompt; when non-empty it replaces the three segments.
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub lora: Option<String>,
    #[serde(default)]
    pub lora_scale: Option<f64>,
    #[serde(default)]
    pub embeddings: Vec<String>,
    #[serde(default)]
    pub steps: Option<i64>,
    #[serde(default)]
    pub cfg: Option<f64>,
    /// −1 or absent: a random seed.
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub width: Option<i64>,
    #[serde(default)]
    pub height: Option<i64>,
    #[serde(default)]
    pub batch: Option<i64>,
    /// An upload id from `POST /api/uploads`.
    #[serde(default)]
    pub init_image: Option<String>,
    #[serde(default)]
    pub strength: Option<f64>,
}

type Validated = (GenRequest, serde_json::Value, Vec<(String, String)>);

fn validate(st: &AppState, b: GenerateBody) -> Result<Validated, ApiError> {
    check_text("scene", &b.scene, 500)?;
    check_text("relation", &b.relation, 4000)?;
    check_text("prompt", &b.prompt, 4000)?;
    if b.elements.len() > 100 {
        return Err(ApiError::bad("elements: at most 100"));
    }
    for e in &b.elements {
        check_text("element", e, 200)?;
    }
    let elements: Vec<String> = b
        .elements
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    let prompt = if !b.prompt.trim().is_empty() {
        Prompt::Flat(b.prompt.trim().to_string())
    } else if b.scene.trim().is_empty() && b.relation.trim().is_empty() && elements.is_empty() {
        return Err(ApiError::bad(
            "give a caption: scene, relation and elements, or a flat prompt",
        ));
    } else {
        Prompt::Segments {
            scene: b.scene.trim().to_string(),
            relation: b.relation.trim().to_string(),
            elements: elements.clone(),
        }
    };
    let steps = check_int("steps", b.steps.unwrap_or(30), 1, MAX_STEPS)? as usize;
    let cfg = check_range("cfg", b.cfg.unwrap_or(7.0), 0.0, MAX_CFG)?;
    let seed = check_int("seed", b.seed.unwrap_or(-1), -1, MAX_SEED)?;
    let seed = if seed < 0 {
        rand::random::<u64>() % (u32::MAX as u64 + 1)
    } else {
        seed as u64
    };
    let batch = check_int("batch", b.batch.unwrap_or(1), 1, MAX_BATCH)? as usize;
    let strength = check_range("strength", b.strength.unwrap_or(0.7), 0.0, 1.0)?;
    if b.init_image.is_some() && strength == 0.0 {
        return Err(ApiError::bad("strength must be above 0 for img2img"));
    }
    let lora_scale = check_range(
        "lora_scale",
        b.lora_scale.unwrap_or(1.0),
        -MAX_LORA_SCALE,
        MAX_LORA_SCALE,
    )?;
    // model
    let model_id = b
        .model
        .clone()
        .unwrap_or_else(|| models::BASE_ID.to_string());
    let (model, tokenizer, side) = if model_id == models::BASE_ID {
        let p = models::base_path(st).map_err(ApiError::bad)?;
        let side = generate::native_side(&p);
        (p, None, side)
    } else {
        let e = models::resolve(st, Kind::Model, &model_id).ok_or_else(|| {
            ApiError::bad(format!(
                "model {model_id:?} is not one of the models under --models (see /api/info)"
            ))
        })?;
        if e.path.is_file() {
            // a single-file checkpoint brings no tokenizer: the default model's CLIP one
            let tok = models::base_path(st).map_err(|_| {
                ApiError::bad(format!(
                    "model {model_id:?} is a single-file checkpoint without a tokenizer; use a diffusers folder"
                ))
            })?;
            (e.path, Some(tok), None)
        } else {
            (e.path, None, e.side)
        }
    };
    let side = side.unwrap_or(512) as i64;
    let width = check_int("width", b.width.unwrap_or(side), 8, MAX_SIDE)?;
    let height = check_int("height", b.height.unwrap_or(side), 8, MAX_SIDE)?;
    if width % 8 != 0 || height % 8 != 0 {
        return Err(ApiError::bad(format!(
            "width and height must be multiples of 8, got {width}x{height}"
        )));
    }
    if width * height * batch as i64 > MAX_PIXELS {
        return Err(ApiError::bad(format!(
            "width x height x batch = {} pixels; at most {MAX_PIXELS} per job",
            width * height * batch as i64
        )));
    }
    let lora = match &b.lora {
        Some(id) if !id.is_empty() => {
            let e = models::resolve(st, Kind::Lora, id).ok_or_else(|| {
                ApiError::bad(format!("LoRA {id:?} is not under --models (see /api/info)"))
            })?;
            Some((e.path, lora_scale))
        }
        _ => None,
    };
    if b.embeddings.len() > 16 {
        return Err(ApiError::bad("embeddings: at most 16"));
    }
    let mut embeddings = vec![];
    for id in &b.embeddings {
        let e = models::resolve(st, Kind::Embedding, id).ok_or_else(|| {
            ApiError::bad(format!(
                "embedding {id:?} is not under --models (see /api/info)"
            ))
        })?;
        embeddings.push(e.path);
    }
    let init_png = match &b.init_image {
        Some(id) => {
            let g = st.uploads.lock().unwrap_or_else(|p| p.into_inner());
            let u = g.iter().find(|u| u.id == *id).ok_or_else(|| {
                ApiError::bad(format!(
                    "init_image {id:?} is not a current upload; upload the image again"
                ))
            })?;
            Some(u.bytes.clone())
        }
        None => None,
    };
    let settings = json!({
        "scene": b.scene.trim(), "relation": b.relation.trim(), "elements": elements,
        "prompt": b.prompt.trim(), "model": model_id, "lora": b.lora, "lora_scale": lora_scale,
        "embeddings": b.embeddings, "steps": steps, "cfg": cfg, "seed": seed,
        "width": width, "height": height, "batch": batch,
        "init_image": b.init_image, "strength": strength,
    });
    let mut params: Vec<(String, String)> = vec![
        ("Steps".into(), steps.to_string()),
        ("Sampler".into(), "DDIM".into()),
        ("CFG scale".into(), cfg.to_string()),
        ("Seed".into(), seed.to_string()),
        ("Size".into(), format!("{width}x{height}")),
        ("Model".into(), model_id.clone()),
    ];
    if let Some(l) = &b.lora {
        if !l.is_empty() {
            params.push(("Lora".into(), format!("{l}:{lora_scale}")));
        }
    }
    if !b.embeddings.is_empty() {
        params.push(("Embeddings".into(), b.embeddings.join(" ")));
    }
    if init_png.is_some() {
        params.push(("Denoising strength".into(), strength.to_string()));
    }
    let req = GenRequest {
        model,
        tokenizer,
        lora,
        embeddings,
        prompt,
        steps,
        cfg,
        seed,
        batch,
        width: width as usize,
        height: height as usize,
        init_png,
        strength,
    };
    Ok((req, settings, params))
}

/// `POST /api/jobs`: validates and queues a generation.
pub async fn submit(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Status>), ApiError> {
    let b: GenerateBody = parse_json(&body)?;
    let st2 = st.clone();
    let (req, settings, params) = tokio::task::spawn_blocking(move || validate(&st2, b))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let s = st.jobs.enqueue(req, settings, params)?;
    Ok((StatusCode::ACCEPTED, Json(s)))
}

/// `GET /api/jobs`: every kept job, newest first.
pub async fn list(State(st): State<Arc<AppState>>) -> Json<Vec<Status>> {
    let g = lock(&st.jobs.inner);
    let mut v: Vec<Status> = g.jobs.values().map(|j| j.tx.borrow().clone()).collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.id));
    Json(v)
}

/// `GET /api/jobs/{id}`: the state (a poll also counts as watching the job).
pub async fn status(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    let id = job_id(&id)?;
    st.jobs.touch(id).map(Json).ok_or_else(|| gone(id))
}

/// `POST /api/jobs/{id}/cancel`.
pub async fn cancel(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    let id = job_id(&id)?;
    st.jobs
        .cancel(id, "cancelled by the user")
        .map(Json)
        .ok_or_else(|| gone(id))
}

fn png_response(bytes: Vec<u8>, download: Option<String>) -> Response {
    let mut r = ([(header::CONTENT_TYPE, "image/png")], bytes).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    if let Some(name) = download {
        if let Ok(v) = header::HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

/// `GET /api/jobs/{id}/preview`: the latest preview PNG.
pub async fn preview(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let g = lock(&st.jobs.inner);
    let j = g.jobs.get(&id).ok_or_else(|| gone(id))?;
    let p = j
        .preview_png
        .clone()
        .ok_or_else(|| ApiError::not_found(format!("job {id} has no preview yet")))?;
    Ok(png_response(p, None))
}

/// `GET /api/jobs/{id}/images/{index}`: a result PNG with its `parameters` text chunk.
pub async fn image(
    State(st): State<Arc<AppState>>,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let index: usize = index
        .trim_end_matches(".png")
        .parse()
        .map_err(|_| ApiError::bad(format!("image index {index:?} is not a number")))?;
    let g = lock(&st.jobs.inner);
    let j = g.jobs.get(&id).ok_or_else(|| gone(id))?;
    let p = j
        .images
        .get(index)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("job {id} has no image {index} (yet)")))?;
    let seed = j.tx.borrow().settings["seed"].as_u64().unwrap_or(0);
    Ok(png_response(
        p,
        Some(format!("strata-{id:05}-{seed}-{index:02}.png")),
    ))
}

/// `GET /api/jobs/{id}/events`: server-sent events, one `status` event per change, ending
/// after the final state.
pub async fn events(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let rx = {
        let mut g = lock(&st.jobs.inner);
        let j = g.jobs.get_mut(&id).ok_or_else(|| gone(id))?;
        j.last_seen = Instant::now();
        j.tx.subscribe()
    };
    // (receiver, whether the first state was sent, whether the stream is over)
    let stream =
        futures_util::stream::unfold((rx, false, false), |(mut rx, sent, over)| async move {
            if over {
                return None;
            }
            if sent && rx.changed().await.is_err() {
                return None;
            }
            let s = rx.borrow_and_update().clone();
            let ev = Event::default()
                .event("status")
                .json_data(&s)
                .unwrap_or_else(|_| Event::default().event("status").data("{}"));
            Some((Ok::<_, Infallible>(ev), (rx, true, s.terminal())))
        });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// `POST /api/uploads`: an init image (body: the PNG, `Content-Type: image/png`).
pub async fn upload(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "image/png" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("upload a PNG with Content-Type: image/png (got {ct:?})"),
        ));
    }
    let bytes = body.to_vec();
    let (bytes, w, h) = tokio::task::spawn_blocking(move || {
        generate::decode_image_rgb(&bytes).map(|(w, h, _)| (bytes, w, h))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::bad(format!("upload: {e}")))?;
    let id = format!("{:016x}", rand::random::<u64>());
    let mut g = st.uploads.lock().unwrap_or_else(|p| p.into_inner());
    g.push_back(Upload {
        id: id.clone(),
        bytes,
        width: w,
        height: h,
    });
    while g.len() > st.cfg.limits.keep_uploads {
        g.pop_front();
    }
    let u = g.back().expect("just pushed");
    Ok(Json(
        json!({"id": id, "width": u.width, "height": u.height}),
    ))
}

/// Runs queued jobs one at a time.
pub fn spawn_worker(st: Arc<AppState>) {
    tokio::spawn(async move {
        let engine = Arc::new(Mutex::new(Engine::default()));
        loop {
            let Some((id, req, cancel)) = st.jobs.take_next() else {
                st.jobs.notify.notified().await;
                continue;
            };
            let st2 = st.clone();
            let eng = engine.clone();
            let req2 = req.clone();
            let res = tokio::task::spawn_blocking(move || {
                let mut e = eng.lock().unwrap_or_else(|p| p.into_inner());
                let side = (req2.width, req2.height);
                e.generate(&req2, &cancel, &mut |i, n, prev| {
                    st2.jobs.progress(id, i, n, prev, side)
                })
            })
            .await;
            let res = match res {
                Ok(r) => r,
                Err(e) => Err(GenError::Failed(format!(
                    "the generation thread failed: {e}"
                ))),
            };
            match res {
                Ok(rgbs) => {
                    let prompt = req.prompt.text();
                    let caption = match &req.prompt {
                        Prompt::Segments {
                            scene,
                            relation,
                            elements,
                        } => json!({"scene": scene, "relation": relation, "elements": elements}),
                        Prompt::Flat(p) => json!({"prompt": p}),
                    };
                    st.jobs.finish(id, |job, s| {
                        let batch = rgbs.len();
                        for (i, rgb) in rgbs.iter().enumerate() {
                            let mut settings: Vec<(&str, String)> = job
                                .params
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.clone()))
                                .collect();
                            if batch > 1 {
                                settings.push(("Batch pos", i.to_string()));
                            }
                            let text = generate::parameters_text(&prompt, &settings);
                            let chunks = vec![
                                ("parameters", text.clone()),
                                ("caption", caption.to_string()),
                                ("Software", "strata".to_string()),
                            ];
                            match generate::encode_png(rgb, req.width, req.height, &chunks) {
                                Ok(png) => {
                                    job.images.push(png);
                                    s.images.push(ImageInfo {
                                        url: format!("/api/jobs/{id}/images/{i}"),
                                        parameters: text,
                                    });
                                }
                                Err(e) => s.message = Some(format!("encoding PNG {i}: {e}")),
                            }
                        }
                        s.state = if s.images.len() == batch {
                            "done"
                        } else {
                            "error"
                        };
                        s.step = s.total;
                    });
                }
                Err(GenError::Cancelled) => st.jobs.finish(id, |j, s| {
                    s.state = "cancelled";
                    if s.message.is_none() {
                        s.message = Some("cancelled".into());
                    }
                    j.preview_png = None;
                }),
                Err(GenError::Failed(m)) => st.jobs.finish(id, |_, s| {
                    s.state = "error";
                    s.message = Some(m);
                }),
            }
        }
    });
}

/// Cancels jobs nobody watches (see the module header).
pub fn spawn_watchdog(st: Arc<AppState>) {
    let after = st.cfg.limits.abandon_after;
    let tick = (after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(tick);
        loop {
            iv.tick().await;
            let mut stale = vec![];
            {
                let mut g = lock(&st.jobs.inner);
                let now = Instant::now();
                for (id, j) in g.jobs.iter_mut() {
                    if j.tx.borrow().terminal() {
                        continue;
                    }
                    if j.tx.receiver_count() > 0 {
                        j.last_seen = now;
                    } else if now.duration_since(j.last_seen) > after {
                        stale.push(*id);
                    }
                }
            }
            for id in stale {
                let msg = format!(
                    "abandoned: no page watched this job for {} s",
                    after.as_secs_f64()
                );
                {
                    let g = lock(&st.jobs.inner);
                    if let Some(j) = g.jobs.get(&id) {
                        j.tx.send_modify(|s| s.message = Some(msg.clone()));
                    }
                }
                st.jobs.cancel(id, &msg);
            }
        }
    });
}
