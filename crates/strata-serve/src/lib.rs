//! strata-serve: the web page of `strata serve`. One page with two tabs: **Generate**
//! (hierarchical prompt with SRKC autocomplete and live checks, model / LoRA / embedding
//! pickers, a job queue with per-step progress and previews, a gallery with A1111-style
//! parameters) and **Caption** (browse a dataset, check and correct its hierarchical
//! captions by eye, save into `metadata.jsonl` with the correction kept in provenance).
//!
//! The page (HTML, JS, CSS) is compiled into the binary; nothing is fetched from elsewhere.
//! The server is axum on tokio; generation runs one job at a time on a blocking thread.
//! Safety model (see `docs/serve.md`): loopback by default; any other address needs a
//! token; only files under the folders given on the command line are served or written;
//! bodies and uploads are size-limited; every parameter is checked.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

mod api;
mod auth;
mod caption;
pub mod generate;
mod jobs;
mod models;
pub mod time;

pub use api::ApiError;

/// Returns a diffusers folder holding the default model (the CLI materialises its embedded
/// base model); called once, on the first job that asks for it.
pub type BaseModelFn = Arc<dyn Fn() -> Result<PathBuf, String> + Send + Sync>;

/// Sizes and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Jobs queued or running at once; beyond it a request gets 503.
    pub queue: usize,
    /// Finished jobs (and their images) kept for the gallery.
    pub keep_jobs: usize,
    /// Largest JSON body.
    pub body_bytes: usize,
    /// Largest uploaded init image.
    pub upload_bytes: usize,
    /// Uploads kept (the oldest is dropped).
    pub keep_uploads: usize,
    /// A queued or running job that no page watches (no event stream open, no poll) for
    /// this long is cancelled.
    pub abandon_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue: 32,
            keep_jobs: 64,
            body_bytes: 256 * 1024,
            upload_bytes: 8 * 1024 * 1024,
            keep_uploads: 8,
            abandon_after: Duration::from_secs(60),
        }
    }
}

/// What `strata serve` was given.
#[derive(Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub token: Option<String>,
    /// Folder of models, LoRAs and embeddings (scanned; see `docs/serve.md`).
    pub models: Option<PathBuf>,
    /// Dataset folders (each with a `metadata.jsonl`).
    pub data: Vec<PathBuf>,
    /// SRKC knowledge file; `None`: the embedded one.
    pub knowledge: Option<PathBuf>,
    /// The default model (`base` in the model picker).
    pub base_model: Option<BaseModelFn>,
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 7860,
            token: None,
            models: None,
            data: vec![],
            knowledge: None,
            base_model: None,
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Shared state of the server.
pub(crate) struct AppState {
    pub cfg: Config,
    pub knowledge: strata_caption::Knowledge,
    pub models_root: Option<PathBuf>,
    pub datasets: Vec<caption::Dataset>,
    pub jobs: jobs::Jobs,
    pub uploads: std::sync::Mutex<std::collections::VecDeque<jobs::Upload>>,
    pub base_model_path: std::sync::Mutex<Option<PathBuf>>,
    pub bound: std::sync::OnceLock<SocketAddr>,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address to open in a browser (with `?token=` when a token is set).
    pub fn url(&self, token: Option<&str>) -> String {
        let host = match self.addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        match token {
            Some(t) => format!("http://{host}:{}/?token={t}", self.addr.port()),
            None => format!("http://{host}:{}/", self.addr.port()),
        }
    }

    /// Stops accepting connections and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        // open event streams would hold a graceful shutdown forever: give them a second
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    /// Runs until the server ends (Ctrl-C handling is the caller's).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Checks the configuration and builds the state (no socket yet).
fn build_state(cfg: Config) -> Result<Arc<AppState>, ServeError> {
    if !cfg.host.is_loopback() && cfg.token.as_deref().is_none_or(str::is_empty) {
        return Err(ServeError::Config(format!(
            "--host {} is reachable from other machines: give --token T (every request must then carry it)",
            cfg.host
        )));
    }
    if let Some(t) = &cfg.token {
        if t.len() < 8
            || !t
                .chars()
                .all(|c| c.is_ascii_graphic() && c != ';' && c != ',')
        {
            return Err(ServeError::Config(
                "--token: use at least 8 printable ASCII characters without spaces, ';' or ','"
                    .into(),
            ));
        }
    }
    let knowledge = match &cfg.knowledge {
        Some(p) => strata_caption::Knowledge::from_file(p)
            .map_err(|e| ServeError::Config(format!("--knowledge: {e}")))?,
        None => strata_caption::Knowledge::embedded(),
    };
    let models_root = match &cfg.models {
        Some(m) => Some(std::fs::canonicalize(m).map_err(|e| ServeError::Io {
            what: format!("--models {}", m.display()),
            source: e,
        })?),
        None => None,
    };
    if let Some(m) = &models_root {
        if !m.is_dir() {
            return Err(ServeError::Config(format!(
                "--models {}: not a folder",
                m.display()
            )));
        }
    }
    let mut datasets = vec![];
    for d in &cfg.data {
        datasets.push(caption::Dataset::open(d)?);
    }
    let jobs = jobs::Jobs::new(cfg.limits.clone());
    Ok(Arc::new(AppState {
        cfg,
        knowledge,
        models_root,
        datasets,
        jobs,
        uploads: Default::default(),
        base_model_path: Default::default(),
        bound: Default::default(),
    }))
}

fn router(state: Arc<AppState>) -> Router {
    let limits = state.cfg.limits.clone();
    let uploads = Router::new()
        .route("/api/uploads", post(jobs::upload))
        .layer(DefaultBodyLimit::max(limits.upload_bytes))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.upload_bytes,
        ));
    let rest = Router::new()
        .route("/", get(api::index))
        .route("/app.js", get(api::app_js))
        .route("/style.css", get(api::style_css))
        .route("/api/info", get(api::info))
        .route("/api/knowledge", get(api::knowledge))
        .route("/api/check", post(api::check))
        .route("/api/jobs", post(jobs::submit).get(jobs::list))
        .route("/api/jobs/{id}", get(jobs::status))
        .route("/api/jobs/{id}/events", get(jobs::events))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/jobs/{id}/preview", get(jobs::preview))
        .route("/api/jobs/{id}/images/{index}", get(jobs::image))
        .route("/api/datasets", get(caption::list))
        .route("/api/datasets/{d}/records", get(caption::records))
        .route(
            "/api/datasets/{d}/record",
            get(caption::record).put(caption::save),
        )
        .route("/api/datasets/{d}/image", get(caption::image))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.body_bytes,
        ));
    Router::new()
        .merge(uploads)
        .merge(rest)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state)
}

/// Binds and starts the server on the current tokio runtime.
pub async fn start(cfg: Config) -> Result<Server, ServeError> {
    let addr = SocketAddr::new(cfg.host, cfg.port);
    let state = build_state(cfg)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Io {
            what: format!("listening on {addr} (is another server using the port? try --port)"),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServeError::Io {
        what: "reading the bound address".into(),
        source: e,
    })?;
    let _ = state.bound.set(addr);
    jobs::spawn_worker(state.clone());
    jobs::spawn_watchdog(state.clone());
    let app = router(state);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Server {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// `strata serve`: builds a runtime, starts the server, calls `ready` with the address to
/// open, and runs until Ctrl-C.
pub fn run_blocking(cfg: Config, ready: impl FnOnce(&str)) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Io {
            what: "starting the async runtime".into(),
            source: e,
        })?;
    let r = rt.block_on(async move {
        let token = cfg.token.clone();
        let server = start(cfg).await?;
        ready(&server.url(token.as_deref()));
        let _ = tokio::signal::ctrl_c().await;
        Ok(())
    });
    // a job still denoising on its blocking thread is not waited for
    rt.shutdown_background();
    r
}
