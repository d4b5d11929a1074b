//! Shared fixtures: a real server on 127.0.0.1 port 0, a tiny random model in the diffusers
//! layout, a small dataset, and a minimal HTTP/1.1 client over `std::net` (every request
//! its own connection; loopback only).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata_serve::{Config, Limits, Server};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub server: Option<Server>,
    pub addr: SocketAddr,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.stop());
        }
    }
}

/// Side of the tiny test model (its `vae/config.json` `sample_size` is set to this).
pub const SIDE: usize = 32;

/// models/tiny (diffusers folder), models/emb/roof.safetensors (an embedding),
/// models/lora/roofs.safetensors (a kohya LoRA), data/ (dataset), outside/secret.png.
pub fn layout(root: &Path) {
    let tiny = root.join("models/tiny");
    strata_models::testing::write_tiny_model(&tiny, 7).expect("tiny model");
    let cfgp = tiny.join("vae/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfgp).unwrap()).unwrap();
    v["sample_size"] = serde_json::json!(SIDE);
    std::fs::write(&cfgp, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    // textual-inversion embedding: 2 vectors of the tiny text encoder's width (32)
    std::fs::create_dir_all(root.join("models/emb")).unwrap();
    let emb: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 0.3).collect();
    write_safetensors(
        &root.join("models/emb/roof.safetensors"),
        &[("emb_params", vec![2, 32], emb)],
    );
    // a kohya-layout LoRA (rank 2) on the first cross-attention block's attn1 query (32 → 32)
    std::fs::create_dir_all(root.join("models/lora")).unwrap();
    let key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let down: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.91).sin() * 0.8).collect();
    let up: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.53).cos() * 0.8).collect();
    write_safetensors(
        &root.join("models/lora/roofs.safetensors"),
        &[
            (&format!("{key}.lora_down.weight"), vec![2, 32], down),
            (&format!("{key}.lora_up.weight"), vec![32, 2], up),
            (&format!("{key}.alpha"), vec![], vec![2.0]),
        ],
    );
    // dataset
    let data = root.join("data");
    std::fs::create_dir_all(data.join("img")).unwrap();
    write_png(&data.join("img/a.png"), 16, 16, [200, 40, 40]);
    write_png(&data.join("img/b.png"), 16, 16, [40, 200, 40]);
    std::fs::create_dir_all(root.join("outside")).unwrap();
    write_png(&root.join("outside/secret.png"), 4, 4, [1, 2, 3]);
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("outside/secret.png"), data.join("link.png")).unwrap();
    std::fs::write(data.join("metadata.jsonl"), METADATA).unwrap();
}

pub const METADATA: &str = concat!(
    r#"{"file_name":"img/a.png","scene":"dense residential","relation":"Some cars are parked under the trees next to the road.","elements":["car","tree","road"],"text":"cars and trees","split":"train","provenance":{"scene_source":"label:folder","relation_source":"sentences:karpathy","element_source":"lexicon","selection":{"rule":"fallback-first","candidate":0,"examined":2,"original":"Some cars are parked under the trees next to the road.","rejected":[{"reason":"vertical","index":0,"phrases":["under"]}]},"corrections":[],"knowledge":"strata-default-srkc (embedded, fnv1a 0)"}}"#,
    "\n",
    r#"{"file_name":"img/b.png","scene":"park","relation":"A pond is surrounded by trees.","elements":["pond","tree"],"text":"a park","split":"test","mask":"masks/b.png"}"#,
    "\n",
    r#"{"file_name":"link.png","scene":"square","relation":"","elements":[],"text":"x"}"#,
    "\n"
);

pub fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        let px: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
        wr.write_image_data(&px).unwrap();
    }
    std::fs::write(path, buf).unwrap();
}

pub fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        wr.write_image_data(&px).unwrap();
    }
    buf
}

/// A minimal safetensors writer (F32 tensors), the format's 8-byte header length + JSON.
pub fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, v) in tensors {
        let start = data.len();
        for x in v {
            data.extend_from_slice(&x.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

pub fn start(tweak: impl FnOnce(&mut Config, &Path)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    layout(dir.path());
    let base = dir.path().join("models/tiny");
    let mut cfg = Config {
        port: 0,
        models: Some(dir.path().join("models")),
        data: vec![dir.path().join("data")],
        base_model: Some(Arc::new(move || Ok(base.clone()))),
        limits: Limits::default(),
        ..Default::default()
    };
    tweak(&mut cfg, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(strata_serve::start(cfg))
        .expect("server starts");
    let addr = server.addr;
    assert!(addr.ip().is_loopback());
    Fixture {
        dir,
        rt,
        server: Some(server),
        addr,
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

/// One request on its own connection (`Connection: close`), raw path as given.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // the server may answer (413) before reading a large body: ignore a reset while writing
    let _ = s.write_all(body);
    // read the head, then Content-Length bytes (some servers keep the connection open)
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if raw.len() >= end + 4 + len {
                    break;
                }
            }
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..i]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[i + 2..i + 2 + n]);
            rest = &rest[i + 2 + n + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

pub fn post_json(addr: SocketAddr, path: &str, v: &serde_json::Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        serde_json::to_string(v).unwrap().as_bytes(),
    )
}

pub fn put_json(addr: SocketAddr, path: &str, v: &serde_json::Value) -> Resp {
    request(
        addr,
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        serde_json::to_string(v).unwrap().as_bytes(),
    )
}

/// Reads `status` events of a job's event stream until a final state (bounded by `limit`).
pub fn follow_events(addr: SocketAddr, id: u64, limit: Duration) -> Vec<serde_json::Value> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    write!(
        s,
        "GET /api/jobs/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut out = vec![];
    let deadline = std::time::Instant::now() + limit;
    let mut line = String::new();
    while std::time::Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(d) = line.trim_end().strip_prefix("data:") {
            let v: serde_json::Value = serde_json::from_str(d.trim()).unwrap();
            let done = matches!(v["state"].as_str(), Some("done" | "error" | "cancelled"));
            out.push(v);
            if done {
                break;
            }
        }
    }
    out
}

/// Polls `GET /api/jobs` (which does not count as watching) until job `id` is final.
pub fn wait_final(addr: SocketAddr, id: u64, limit: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let l = get(addr, "/api/jobs").json();
        let j = l
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"].as_u64() == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("job {id} not listed"));
        if matches!(j["state"].as_str(), Some("done" | "error" | "cancelled")) {
            return j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} not final after {limit:?}: {j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `tEXt`/`iTXt` chunks of a PNG.
pub fn png_text(bytes: &[u8]) -> Vec<(String, String)> {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let r = dec.read_info().unwrap();
    let info = r.info();
    let mut v: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        v.push((t.keyword.clone(), t.get_text().unwrap_or_default()));
    }
    v
}

pub fn png_size(bytes: &[u8]) -> (u32, u32) {
    let r = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    (r.info().width, r.info().height)
}

pub fn data_dir(f: &Fixture) -> PathBuf {
    f.dir.path().join("data")
}
