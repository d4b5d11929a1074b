//! The page in a real browser: Debian's `chromium`, headless, driven over the DevTools
//! protocol (a WebSocket; `tungstenite` is the only client code). The test fills the three
//! caption fields, watches the live checks and autocomplete, generates on the embedded base
//! model (the repository's `models/strata-base`, 64 px), waits for the images and checks
//! their parameters text; then on the Caption tab it corrects a caption of a `strata-synth`
//! dataset, saves, and checks `metadata.jsonl` on disk.
//!
//! Needs `chromium` on PATH (or `STRATA_CHROMIUM=/path/to/browser`); `.ci/run` installs it.
//! Without it the test fails with a message saying so, unless `STRATA_SKIP_BROWSER_TEST=1`
//! is set (for a machine without a browser; never set in CI).
//! `STRATA_SERVE_SCREENSHOTS=DIR` copies the screenshots of both tabs to
//! `DIR/serve-generate.png` and `DIR/serve-caption.png` (the ones in `docs/img/`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::WebSocket;

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cdp {
    ws: WebSocket<TcpStream>,
    next: u64,
}

impl Cdp {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).expect("send");
        loop {
            let m = self.ws.read().expect("DevTools message");
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("JavaScript error in {js}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` until it returns something truthy (bounded).
    fn wait(&mut self, js: &str, what: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(js);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let err = self.eval("document.getElementById('g-error').textContent + ' | ' + document.getElementById('g-status').textContent");
                panic!("waited {limit:?} for {what}; page says: {err}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(common::png_size(&bytes).0, 1280);
        std::fs::write(path, bytes).unwrap();
    }
}

fn launch(chromium: &Path) -> (Browser, Cdp) {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let mut b = Browser {
        child,
        _profile: profile,
    };
    // the browser writes its DevTools port into the profile
    let port_file = b._profile.path().join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    let port: u16 = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file) {
            if let Some(p) = s.lines().next().and_then(|l| l.trim().parse().ok()) {
                break p;
            }
        }
        if let Ok(Some(st)) = b.child.try_wait() {
            let mut err = String::new();
            if let Some(e) = b.child.stderr.take() {
                for l in BufReader::new(e).lines().map_while(Result::ok).take(30) {
                    err.push_str(&l);
                    err.push('\n');
                }
            }
            panic!(
                "{} exited ({st}) before opening DevTools:\n{err}",
                chromium.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no DevTools port from the browser after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let list = common::get(addr, "/json/list").json();
    let ws_url = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let (ws, _) = tungstenite::client(ws_url.as_str(), stream).expect("DevTools WebSocket");
    let mut cdp = Cdp { ws, next: 0 };
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    );
    (b, cdp)
}

fn set_field(cdp: &mut Cdp, id: &str, value: &str) {
    let js = format!(
        "(() => {{ const e = document.getElementById({id}); e.focus(); e.value = {value}; e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
        id = json!(id),
        value = json!(value)
    );
    cdp.eval(&js);
}

#[test]
fn generate_and_correct_a_caption_in_chromium() {
    let Some(chromium) = find_chromium() else {
        if std::env::var_os("STRATA_SKIP_BROWSER_TEST").is_some_and(|v| v == "1") {
            eprintln!("no chromium on PATH; skipped because STRATA_SKIP_BROWSER_TEST=1");
            return;
        }
        panic!(
            "this test needs a headless browser: install Debian's `chromium` (apt-get install chromium; .ci/run does) or set STRATA_CHROMIUM=/path/to/chromium"
        );
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("synth");
    strata_synth::write_dataset(
        &data,
        &strata_synth::DatasetOptions {
            count: 11,
            size: 128,
            seed: 3,
            classes: vec![],
        },
        &|| {},
    )
    .expect("synthetic dataset");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/strata-base");
    assert!(
        base.join("unet/config.json").is_file(),
        "the embedded base model's files are missing: {}",
        base.display()
    );
    let models = root.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let base2 = base.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(strata_serve::start(strata_serve::Config {
            port: 0,
            models: Some(models),
            data: vec![data.clone()],
            base_model: Some(Arc::new(move || Ok(base2.clone()))),
            ..Default::default()
        }))
        .unwrap();
    let url = server.url(None);
    let t0 = Instant::now();
    let (_browser, mut cdp) = launch(&chromium);
    eprintln!("browser up after {:?}", t0.elapsed());
    cdp.call("Page.enable", json!({}));
    cdp.call("Page.navigate", json!({"url": url}));
    cdp.wait(
        "document.body && document.body.dataset.ready === '1'",
        "the page to load its settings",
        Duration::from_secs(60),
    );
    eprintln!("page ready after {:?}", t0.elapsed());
    assert_eq!(
        cdp.eval("document.getElementById('g-width').value"),
        json!("64"),
        "size defaults to the model's sample_size"
    );

    // autocomplete: scene list, relation phrases, element names
    assert!(cdp
        .eval("[...document.querySelectorAll('#scene-list option')].map(o => o.value).includes('dense residential')")
        .as_bool()
        .unwrap());
    set_field(&mut cdp, "g-relation", "Houses are surr");
    cdp.wait(
        "[...document.querySelectorAll('#g-relation-suggest .chip')].map(c => c.textContent).includes('surrounded by')",
        "relation autocomplete",
        Duration::from_secs(10),
    );
    set_field(&mut cdp, "g-elements", "building, ro");
    cdp.wait(
        "[...document.querySelectorAll('#g-elements-list option')].map(o => o.value).includes('building, road')",
        "element autocomplete",
        Duration::from_secs(10),
    );
    // a vertical relation is warned about live
    set_field(&mut cdp, "g-scene", "dense residential");
    set_field(&mut cdp, "g-relation", "Cars are parked under the trees.");
    cdp.wait(
        "document.getElementById('g-checks').textContent.includes('vertical relation \"under\"')",
        "the vertical-relation warning",
        Duration::from_secs(10),
    );
    set_field(
        &mut cdp,
        "g-relation",
        "A road runs through the area with houses on both sides of it.",
    );
    set_field(&mut cdp, "g-elements", "house, road, tree");
    cdp.wait(
        "document.getElementById('g-checks').textContent.includes('golden rule: passes')",
        "the golden-rule check to pass",
        Duration::from_secs(10),
    );
    set_field(&mut cdp, "g-steps", "20");
    set_field(&mut cdp, "g-seed", "5");
    set_field(&mut cdp, "g-batch", "2");
    cdp.eval("document.getElementById('g-generate').click(), true");
    cdp.wait(
        "(() => { const i = [...document.querySelectorAll('#gallery .card img')]; return i.length === 2 && i.every(x => x.complete && x.naturalWidth === 64); })()",
        "two generated images in the gallery",
        Duration::from_secs(300),
    );
    eprintln!("images after {:?}", t0.elapsed());
    let params =
        cdp.eval("[...document.querySelectorAll('#gallery .params')].map(p => p.textContent)");
    let params: Vec<String> = serde_json::from_value(params).unwrap();
    assert_eq!(params.len(), 2);
    for (i, p) in params.iter().enumerate() {
        assert_eq!(
            p,
            &format!("dense residential. A road runs through the area with houses on both sides of it. house, road, tree\nNegative prompt: \nSteps: 20, Sampler: DDIM, CFG scale: 7, Seed: 5, Size: 64x64, Model: base, Batch pos: {i}")
        );
    }
    assert!(cdp
        .eval("document.getElementById('g-status').textContent")
        .as_str()
        .unwrap()
        .contains("done"));
    // "reuse these settings" puts them back into the form
    set_field(&mut cdp, "g-seed", "-1");
    cdp.eval("document.querySelector('#gallery .reuse').click(), true");
    assert_eq!(
        cdp.eval("document.getElementById('g-seed').value"),
        json!("5")
    );
    let shots = tempfile::tempdir().unwrap();
    cdp.screenshot(&shots.path().join("serve-generate.png"));

    // Caption tab: correct the first record's caption
    cdp.eval("document.getElementById('tab-caption').click(), true");
    cdp.wait(
        "document.querySelectorAll('#c-records li').length === 11",
        "the dataset's records",
        Duration::from_secs(30),
    );
    let file: String =
        serde_json::from_value(cdp.eval("document.querySelector('#c-records li').dataset.file"))
            .unwrap();
    cdp.eval("document.querySelector('#c-records li').click(), true");
    cdp.wait(
        &format!(
            "document.getElementById('c-file').textContent === {} && document.getElementById('c-image').complete && document.getElementById('c-image').naturalWidth === 128",
            json!(file)
        ),
        "the record and its image",
        Duration::from_secs(30),
    );
    let new_relation = "A road runs next to the trees, and houses are next to the church.";
    set_field(&mut cdp, "c-relation", new_relation);
    set_field(&mut cdp, "c-note", "checked by eye");
    cdp.wait(
        "document.getElementById('c-checks').textContent.includes('golden rule: passes')",
        "the caption checks",
        Duration::from_secs(10),
    );
    cdp.eval("document.getElementById('c-save').click(), true");
    cdp.wait(
        "document.getElementById('c-message').textContent === 'Saved to metadata.jsonl.'",
        "the save",
        Duration::from_secs(30),
    );
    cdp.screenshot(&shots.path().join("serve-caption.png"));
    let recs = strata_caption::read_dataset(&data).unwrap();
    assert_eq!(recs.len(), 11, "no record lost");
    let r = recs.iter().find(|r| r.file_name == file).unwrap();
    assert_eq!(r.relation, new_relation);
    let ec = &r.extra["provenance"]["expert_corrections"][0];
    assert_eq!(ec["after"]["relation"], json!(new_relation));
    assert_eq!(ec["note"], json!("checked by eye"));
    assert_ne!(ec["before"]["relation"], json!(new_relation));

    if let Some(dir) = std::env::var_os("STRATA_SERVE_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for n in ["serve-generate.png", "serve-caption.png"] {
            std::fs::copy(shots.path().join(n), dir.join(n)).unwrap();
        }
    }
    drop(cdp);
    rt.block_on(server.stop());
}
