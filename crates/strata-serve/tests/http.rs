//! Every endpoint over real HTTP on 127.0.0.1 (port 0), with a tiny random model written in
//! the diffusers layout: good requests, bad parameters, path traversal, size limits, the
//! token, cancel, abandoned jobs, a full queue, expert-correction saves and conflicts.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// A job that runs for seconds even on a fast machine (150 steps of 8 images, 32² latents).
static LONG: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| json!({"steps": 150, "batch": 8, "width": 64, "height": 64}));

fn job(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"scene": "dense residential", "relation": "A road runs next to the houses.",
        "elements": ["house", "road"], "model": "tiny", "steps": 3, "seed": 5});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn page_assets_info_and_knowledge() {
    let f = start(|_, _| {});
    let r = get(f.addr, "/");
    assert_eq!(r.status, 200);
    let html = String::from_utf8_lossy(&r.body);
    assert!(html.contains("<script src=\"/app.js\">") && html.contains("id=\"g-scene\""));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no outside resources"
    );
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    assert_eq!(get(f.addr, "/app.js").status, 200);
    assert_eq!(get(f.addr, "/style.css").status, 200);
    let nf = get(f.addr, "/nope");
    assert_eq!(nf.status, 404);
    assert!(nf.error().contains("no such page"));

    let info = get(f.addr, "/api/info").json();
    let ids = |k: &str| -> Vec<String> {
        info[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("models"), vec!["base", "tiny"]);
    assert_eq!(ids("loras"), vec!["lora/roofs.safetensors"]);
    assert_eq!(ids("embeddings"), vec!["emb/roof.safetensors"]);
    assert_eq!(info["models"][1]["side"], json!(SIDE));
    assert_eq!(info["datasets"][0]["name"], json!("data"));

    let k = get(f.addr, "/api/knowledge").json();
    let has = |key: &str, v: &str| k[key].as_array().unwrap().iter().any(|x| x == v);
    assert!(has("scenes", "dense residential"));
    assert!(has("relations", "next to") && has("relations", "surrounded by"));
    assert!(has("elements", "building"));
    assert!(has("vertical", "under"));
}

#[test]
fn check_endpoint_reports_golden_rule_and_vertical_relations() {
    let f = start(|_, _| {});
    let ok = post_json(
        f.addr,
        "/api/check",
        &json!({"scene": "park", "relation": "A pond is surrounded by trees.", "elements": ["pond", "tree"]}),
    )
    .json();
    assert_eq!(ok["golden"], json!(true));
    assert_eq!(ok["relations"][0]["relation"], json!("surrounds"));
    let bad = post_json(
        f.addr,
        "/api/check",
        &json!({"scene": "park", "relation": "Cars are parked under the trees.", "elements": ["car", "spaceship"]}),
    )
    .json();
    assert_eq!(bad["golden"], json!(false));
    assert_eq!(bad["vertical"][0]["phrase"], json!("under"));
    let msgs = bad["messages"].to_string();
    assert!(
        msgs.contains("vertical relation") && msgs.contains("spaceship"),
        "{msgs}"
    );
    assert!(bad["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["rule"] == "remove_vertical_clause"));
    let r = post_json(f.addr, "/api/check", &json!({"scene": 3}));
    assert_eq!(r.status, 400);
    assert!(r.error().contains("scene"), "{}", r.error());
}

#[test]
fn bad_parameters_are_400_with_a_message() {
    let f = start(|_, _| {});
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            job(json!({"steps": 0})),
            "steps must be a whole number from 1 to 150",
        ),
        (job(json!({"steps": 1000})), "steps"),
        (job(json!({"steps": 2.5})), "steps"),
        (
            job(json!({"cfg": -1.0})),
            "cfg must be a finite number from 0 to 30",
        ),
        (job(json!({"cfg": "7"})), "cfg"),
        (job(json!({"width": 100})), "multiples of 8"),
        (job(json!({"width": 4096})), "width"),
        (job(json!({"height": -8})), "height"),
        (job(json!({"batch": 0})), "batch"),
        (job(json!({"seed": -2})), "seed"),
        (job(json!({"strength": 1.5})), "strength"),
        (job(json!({"lora_scale": 99.0})), "lora_scale"),
        (job(json!({"model": "nope"})), "model \"nope\""),
        (job(json!({"model": "../models/tiny"})), "model"),
        (job(json!({"model": "/etc"})), "model"),
        (job(json!({"lora": "../../x.safetensors"})), "LoRA"),
        (
            job(json!({"embeddings": ["emb/../emb/roof.safetensors"]})),
            "embedding",
        ),
        (job(json!({"init_image": "deadbeef"})), "init_image"),
        (job(json!({"steeps": 3})), "unknown field `steeps`"),
        (json!({"model": "tiny"}), "give a caption"),
        (
            job(json!({"width": 512, "height": 512, "batch": 8})),
            "pixels",
        ),
    ];
    for (body, needle) in cases {
        let r = post_json(f.addr, "/api/jobs", &body);
        assert_eq!(
            r.status,
            400,
            "{body} → {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.error().contains(needle),
            "{body}: {:?} lacks {needle:?}",
            r.error()
        );
    }
    // not JSON, a number out of f64 range
    let r = request(
        f.addr,
        "POST",
        "/api/jobs",
        &[("Content-Type", "application/json")],
        b"{\"cfg\": 1e999}",
    );
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("request body"), "{}", r.error());
    let r = request(f.addr, "POST", "/api/jobs", &[], b"not json");
    assert_eq!(r.status, 400);
    // ids
    assert_eq!(get(f.addr, "/api/jobs/abc").status, 400);
    assert_eq!(get(f.addr, "/api/jobs/999").status, 404);
    assert_eq!(get(f.addr, "/api/jobs/999/images/0").status, 404);
    assert_eq!(get(f.addr, "/api/jobs/1/images/x").status, 400);
    // nothing was queued by any of it
    assert_eq!(get(f.addr, "/api/jobs").json(), json!([]));
}

#[test]
fn generate_gives_pngs_with_a1111_parameters_and_is_deterministic() {
    let f = start(|_, _| {});
    let r = post_json(
        f.addr,
        "/api/jobs",
        &job(
            json!({"batch": 2, "embeddings": ["emb/roof.safetensors"], "scene": "roof dense residential"}),
        ),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_u64().unwrap();
    let evs = follow_events(f.addr, id, Duration::from_secs(120));
    let last = evs.last().expect("events");
    assert_eq!(last["state"], json!("done"), "{last}");
    let steps: Vec<u64> = evs.iter().filter_map(|e| e["step"].as_u64()).collect();
    assert!(
        steps.windows(2).all(|w| w[0] <= w[1]) && *steps.last().unwrap() == 3,
        "{steps:?}"
    );
    assert!(
        evs.iter().any(|e| e["state"] == "running"),
        "progress was pushed while running"
    );
    let imgs = last["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    let p0 = imgs[0]["parameters"].as_str().unwrap();
    assert_eq!(
        p0,
        format!("roof dense residential. A road runs next to the houses. house, road\nNegative prompt: \nSteps: 3, Sampler: DDIM, CFG scale: 7, Seed: 5, Size: {SIDE}x{SIDE}, Model: tiny, Embeddings: emb/roof.safetensors, Batch pos: 0")
    );
    let png = get(f.addr, imgs[1]["url"].as_str().unwrap());
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(png_size(&png.body), (SIDE as u32, SIDE as u32));
    let text = png_text(&png.body);
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(params.ends_with("Batch pos: 1"), "{params}");
    // the same settings again: the same bytes
    let r2 = post_json(f.addr, "/api/jobs", &last["settings"]).json();
    let id2 = r2["id"].as_u64().unwrap();
    let s2 = wait_final_watched(&f, id2);
    assert_eq!(s2["state"], json!("done"));
    let a = get(f.addr, &format!("/api/jobs/{id}/images/0")).body;
    let b = get(f.addr, &format!("/api/jobs/{id2}/images/0")).body;
    assert_eq!(a, b, "reusing the settings reproduces the image");
    // a flat prompt and the default model
    let r3 = post_json(
        f.addr,
        "/api/jobs",
        &json!({"prompt": "a road", "steps": 2, "seed": 1}),
    )
    .json();
    let s3 = wait_final_watched(&f, r3["id"].as_u64().unwrap());
    assert_eq!(s3["state"], json!("done"), "{s3}");
    assert!(s3["images"][0]["parameters"]
        .as_str()
        .unwrap()
        .contains("Model: base"));
}

/// Polls the job's own status (which counts as watching it) until it is final.
fn wait_final_watched(f: &Fixture, id: u64) -> serde_json::Value {
    for _ in 0..2400 {
        let s = get(f.addr, &format!("/api/jobs/{id}")).json();
        if matches!(s["state"].as_str(), Some("done" | "error" | "cancelled")) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("job {id} did not finish");
}

#[test]
fn cancel_a_running_and_a_queued_job() {
    let f = start(|_, _| {});
    let a = post_json(f.addr, "/api/jobs", &job(LONG.clone())).json()["id"]
        .as_u64()
        .unwrap();
    let b = post_json(f.addr, "/api/jobs", &job(LONG.clone())).json()["id"]
        .as_u64()
        .unwrap();
    // b waits behind a
    let sb = get(f.addr, &format!("/api/jobs/{b}")).json();
    assert_eq!(sb["state"], json!("queued"));
    assert_eq!(sb["position"], json!(0));
    let cb = post_json(f.addr, &format!("/api/jobs/{b}/cancel"), &json!({})).json();
    assert_eq!(
        cb["state"],
        json!("cancelled"),
        "a queued job is cancelled at once"
    );
    // wait until a runs, then cancel it
    for _ in 0..1200 {
        if get(f.addr, &format!("/api/jobs/{a}")).json()["step"]
            .as_u64()
            .unwrap_or(0)
            >= 1
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    post_json(f.addr, &format!("/api/jobs/{a}/cancel"), &json!({}));
    let sa = wait_final_watched(&f, a);
    assert_eq!(sa["state"], json!("cancelled"), "{sa}");
    assert!(
        sa["step"].as_u64().unwrap() < 150,
        "stopped between steps: {sa}"
    );
    assert_eq!(sa["images"], json!([]));
    assert_eq!(
        post_json(f.addr, "/api/jobs/77/cancel", &json!({})).status,
        404
    );
}

#[test]
fn a_job_nobody_watches_is_cancelled() {
    let f = start(|c, _| c.limits.abandon_after = Duration::from_millis(400));
    let id = post_json(f.addr, "/api/jobs", &job(LONG.clone())).json()["id"]
        .as_u64()
        .unwrap();
    // only the list is polled: that does not count as watching
    let s = wait_final(f.addr, id, Duration::from_secs(60));
    assert_eq!(s["state"], json!("cancelled"), "{s}");
    assert!(s["message"].as_str().unwrap().contains("abandoned"), "{s}");
    // while an event stream is open, the same job runs to the end
    let id = post_json(f.addr, "/api/jobs", &job(json!({"steps": 4}))).json()["id"]
        .as_u64()
        .unwrap();
    let evs = follow_events(f.addr, id, Duration::from_secs(60));
    assert_eq!(evs.last().unwrap()["state"], json!("done"));
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn fifty_requests_finish_or_are_refused_cleanly() {
    let f = start(|c, _| c.limits.keep_jobs = 16);
    let before = rss_kib();
    let addr = f.addr;
    // a long job holds the worker, so the queue fills however fast the others would run
    let blocker = post_json(addr, "/api/jobs", &job(LONG.clone())).json()["id"]
        .as_u64()
        .unwrap();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                post_json(addr, "/api/jobs", &job(json!({"steps": 1, "seed": i})))
            })
        })
        .collect();
    let resps: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepted: Vec<u64> = resps
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.json()["id"].as_u64().unwrap())
        .collect();
    let refused: Vec<&Resp> = resps.iter().filter(|r| r.status == 503).collect();
    assert_eq!(accepted.len() + refused.len(), 50, "only 202 or 503");
    assert_eq!(
        accepted.len(),
        31,
        "32 jobs at once, one of them the blocker"
    );
    for r in &refused {
        assert!(r.error().contains("queue is full"), "{}", r.error());
    }
    assert_eq!(
        post_json(addr, &format!("/api/jobs/{blocker}/cancel"), &json!({})).status,
        200
    );
    // every accepted job ends (watched by polling the list and each job)
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let active = get(addr, "/api/jobs")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| matches!(j["state"].as_str(), Some("queued" | "running")))
            .count();
        for id in &accepted {
            get(addr, &format!("/api/jobs/{id}"));
        }
        if active == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{active} jobs still active"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = get(addr, "/api/jobs").json();
    let kept = kept.as_array().unwrap();
    assert!(
        kept.len() <= 16,
        "finished jobs are bounded: {}",
        kept.len()
    );
    assert!(
        kept.iter()
            .all(|j| j["state"] == "done" || j["id"].as_u64() == Some(blocker)),
        "{kept:?}"
    );
    let grew = rss_kib().saturating_sub(before);
    assert!(grew < 400 * 1024, "memory grew by {grew} KiB");
}

#[test]
fn uploads_are_checked_and_size_limited_and_img2img_runs() {
    let f = start(|c, _| c.limits.upload_bytes = 64 * 1024);
    let big = vec![0u8; 200 * 1024];
    let r = request(
        f.addr,
        "POST",
        "/api/uploads",
        &[("Content-Type", "image/png")],
        &big,
    );
    assert_eq!(r.status, 413);
    assert!(r.error().contains("too large"), "{}", r.error());
    let r = request(
        f.addr,
        "POST",
        "/api/uploads",
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(r.status, 415);
    let r = request(
        f.addr,
        "POST",
        "/api/uploads",
        &[("Content-Type", "image/png")],
        b"not a png",
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("PNG"), "{}", r.error());
    // a JSON body over its limit
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(300 * 1024));
    let r = request(
        f.addr,
        "POST",
        "/api/jobs",
        &[("Content-Type", "application/json")],
        huge.as_bytes(),
    );
    assert_eq!(r.status, 413);
    let r = request(
        f.addr,
        "POST",
        "/api/uploads",
        &[("Content-Type", "image/png")],
        &png_bytes(20, 12),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let u = r.json();
    assert_eq!(
        (u["width"].as_u64(), u["height"].as_u64()),
        (Some(20), Some(12))
    );
    let id = post_json(
        f.addr,
        "/api/jobs",
        &job(json!({"init_image": u["id"], "strength": 0.5, "steps": 4})),
    )
    .json()["id"]
        .as_u64()
        .unwrap();
    let s = wait_final_watched(&f, id);
    assert_eq!(s["state"], json!("done"), "{s}");
    assert!(s["images"][0]["parameters"]
        .as_str()
        .unwrap()
        .contains("Denoising strength: 0.5"));
}

#[test]
fn token_is_required_when_set() {
    let token = "s3cret-token-123";
    let f = start(|c, _| c.token = Some(token.into()));
    let a = f.addr;
    for path in ["/", "/api/info", "/api/jobs", "/api/datasets/0/records"] {
        let r = get(a, path);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.error().contains("token"));
    }
    let wrong = request(
        a,
        "GET",
        "/api/info",
        &[("Authorization", "Bearer nope-nope-nope")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    let ok = request(
        a,
        "GET",
        "/api/info",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(ok.status, 200);
    let r = get(a, &format!("/?token={token}"));
    assert_eq!(r.status, 303);
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let ok = request(a, "GET", "/api/jobs", &[("Cookie", pair)], b"");
    assert_eq!(ok.status, 200);
    let bad = get(a, "/?token=wrong");
    assert_eq!(bad.status, 401);
    // a write without the token
    assert_eq!(post_json(a, "/api/jobs", &job(json!({}))).status, 401);
}

#[test]
fn non_loopback_needs_a_token_and_host_header_is_checked() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = strata_serve::Config {
        host: "0.0.0.0".parse().unwrap(),
        port: 0,
        ..Default::default()
    };
    let err = rt
        .block_on(strata_serve::start(cfg))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--token"), "{err}");
    let f = start(|_, _| {});
    let r = request(
        f.addr,
        "GET",
        "/api/info",
        &[("Host", "evil.example:7860")],
        b"",
    );
    assert_eq!(r.status, 403);
    assert!(r.error().contains("loopback"));
    let r = request(
        f.addr,
        "GET",
        "/api/info",
        &[("Host", &format!("localhost:{}", f.addr.port()))],
        b"",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn dataset_paths_cannot_leave_the_folder() {
    let f = start(|_, _| {});
    let a = f.addr;
    let ok = get(a, "/api/datasets/0/image?file=img/a.png");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("image/png"));
    for (q, status) in [
        ("../outside/secret.png", 400),
        ("%2e%2e/outside/secret.png", 400),
        ("%2E%2E%2Foutside%2Fsecret.png", 400),
        ("img/..%2F..%2Foutside/secret.png", 400),
        ("/etc/passwd", 400),
        ("%2Fetc%2Fpasswd", 400),
        ("img\\..\\..\\outside\\secret.png", 400),
        ("", 400),
        ("img/c.png", 404),
        ("link.png", 403),
    ] {
        let r = get(a, &format!("/api/datasets/0/image?file={q}"));
        assert_eq!(
            r.status,
            status,
            "{q}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(!r.error().is_empty(), "{q}: JSON error");
        let r = get(a, &format!("/api/datasets/0/record?file={q}"));
        if status != 403 {
            assert_eq!(r.status, status, "record {q}");
        }
    }
    assert_eq!(get(a, "/api/datasets/0/image").status, 400);
    assert_eq!(get(a, "/api/datasets/1/records").status, 404);
    assert_eq!(get(a, "/api/datasets/..%2F/records").status, 400);
    assert_eq!(get(a, "/api/datasets/0/records?limit=-1").status, 400);
    // raw traversal in the URL path never reaches a file
    for p in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/datasets/0/../../../etc/passwd",
    ] {
        let r = get(a, p);
        assert!(r.status == 404 || r.status == 400, "{p}: {}", r.status);
        assert!(!String::from_utf8_lossy(&r.body).contains("root:"), "{p}");
    }
    // a save cannot name a file outside
    let r = put_json(
        a,
        "/api/datasets/0/record",
        &json!({"file_name": "../x", "version": "0", "scene": "", "relation": "", "elements": []}),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn caption_edit_saves_atomically_and_stale_saves_are_refused() {
    let f = start(|_, _| {});
    let a = f.addr;
    let meta = data_dir(&f).join("metadata.jsonl");
    let recs = get(a, "/api/datasets/0/records").json();
    assert_eq!(recs["total"], json!(3));
    assert_eq!(
        recs["records"][0]["golden"],
        json!(false),
        "'under' is vertical"
    );
    let q = get(a, "/api/datasets/0/records?q=pond").json();
    assert_eq!(q["total"], json!(1));
    let r = get(a, "/api/datasets/0/record?file=img/a.png").json();
    let v0 = r["version"].as_str().unwrap().to_string();
    assert_eq!(r["checks"]["golden"], json!(false));
    assert_eq!(
        r["record"]["provenance"]["selection"]["rule"],
        json!("fallback-first")
    );

    let edit = json!({"file_name": "img/a.png", "version": v0, "scene": "dense residential",
        "relation": "Some cars are parked next to the trees beside the road.",
        "elements": ["car", "tree", "road"], "note": "no vertical relation"});
    let s = put_json(a, "/api/datasets/0/record", &edit);
    assert_eq!(s.status, 200, "{}", String::from_utf8_lossy(&s.body));
    let s = s.json();
    assert_eq!(s["saved"], json!(true));
    assert_eq!(s["checks"]["golden"], json!(true));
    let v1 = s["version"].as_str().unwrap().to_string();
    assert_ne!(v0, v1);

    let text = std::fs::read_to_string(&meta).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let old: Vec<&str> = METADATA.lines().collect();
    assert_eq!(lines.len(), 3, "no line lost");
    assert_eq!(lines[1..], old[1..], "other lines are kept byte for byte");
    assert!(text.ends_with('\n'));
    let rec: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert!(
        lines[0].starts_with("{\"file_name\":\"img/a.png\""),
        "file_name first"
    );
    assert_eq!(rec["relation"], edit["relation"]);
    let ec = &rec["provenance"]["expert_corrections"][0];
    assert_eq!(
        ec["before"]["relation"],
        json!("Some cars are parked under the trees next to the road.")
    );
    assert_eq!(ec["after"]["relation"], edit["relation"]);
    assert_eq!(ec["note"], json!("no vertical relation"));
    assert!(ec["time"].as_str().unwrap().ends_with('Z'));
    // the rest of the provenance is untouched, the relations column recomputed
    assert_eq!(
        rec["provenance"]["selection"]["rule"],
        json!("fallback-first")
    );
    assert_eq!(rec["relations"][0]["relation"], json!("next_to"));
    assert_eq!(rec["split"], json!("train"));
    // the file reads back through strata-caption's reader
    let back = strata_caption::read_metadata(&meta).unwrap();
    assert_eq!(back.len(), 3);
    assert!(back[0].provenance().is_some(), "provenance still parses");
    // no temporary file left
    let names: Vec<String> = std::fs::read_dir(data_dir(&f))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".strata-tmp")),
        "{names:?}"
    );

    // a save based on the old version is refused, and nothing is written
    let mut stale = edit.clone();
    stale["relation"] = json!("A road runs next to the trees.");
    let r = put_json(a, "/api/datasets/0/record", &stale);
    assert_eq!(r.status, 409);
    assert!(
        r.error().contains("changed by someone else"),
        "{}",
        r.error()
    );
    assert_eq!(r.json()["current"]["version"], json!(v1));
    assert_eq!(std::fs::read_to_string(&meta).unwrap(), text);

    // many concurrent saves from the same version: exactly one wins
    let r = get(a, "/api/datasets/0/record?file=img/b.png").json();
    let vb = r["version"].as_str().unwrap().to_string();
    let hs: Vec<_> = (0..8)
        .map(|i| {
            let vb = vb.clone();
            std::thread::spawn(move || {
                put_json(a, "/api/datasets/0/record", &json!({"file_name": "img/b.png", "version": vb,
                    "scene": "park", "relation": format!("A pond is next to {i} trees."), "elements": ["pond", "tree"]}))
                .status
            })
        })
        .collect();
    let mut st: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    st.sort();
    assert_eq!(st, vec![200, 409, 409, 409, 409, 409, 409, 409]);
    let back = strata_caption::read_metadata(&meta).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(
        back[1].extra["mask"],
        json!("masks/b.png"),
        "other columns kept"
    );

    // bad bodies
    let r = put_json(
        a,
        "/api/datasets/0/record",
        &json!({"file_name": "img/b.png"}),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("missing field"), "{}", r.error());
    let r = put_json(
        a,
        "/api/datasets/0/record",
        &json!({"file_name": "img/zz.png", "version": "0", "scene": "", "relation": "", "elements": []}),
    );
    assert_eq!(r.status, 404);
}

fn pixels(f: &Fixture, job: u64) -> Vec<u8> {
    let png = get(f.addr, &format!("/api/jobs/{job}/images/0")).body;
    strata_serve::generate::decode_image_rgb(&png).unwrap().2
}

#[test]
fn lora_changes_the_image_and_scale_zero_leaves_it() {
    let f = start(|_, _| {});
    let run = |extra: serde_json::Value| {
        let r = post_json(f.addr, "/api/jobs", &job(extra));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let id = r.json()["id"].as_u64().unwrap();
        let s = wait_final_watched(&f, id);
        assert_eq!(s["state"], json!("done"), "{s}");
        (id, s)
    };
    let (plain, _) = run(json!({}));
    let (zero, _) = run(json!({"lora": "lora/roofs.safetensors", "lora_scale": 0.0}));
    let (one, s1) = run(json!({"lora": "lora/roofs.safetensors", "lora_scale": 1.0}));
    let (plain2, _) = run(json!({}));
    assert!(s1["images"][0]["parameters"]
        .as_str()
        .unwrap()
        .contains("Lora: lora/roofs.safetensors:1"));
    assert_eq!(pixels(&f, plain), pixels(&f, zero), "scale 0: no effect");
    assert_ne!(
        pixels(&f, plain),
        pixels(&f, one),
        "scale 1 changes the image"
    );
    assert_eq!(
        pixels(&f, plain),
        pixels(&f, plain2),
        "the LoRA does not stay on the model"
    );
}

#[test]
fn a_job_whose_event_stream_closed_is_cancelled() {
    use std::io::{BufRead, BufReader, Write};
    let f = start(|c, _| c.limits.abandon_after = Duration::from_millis(500));
    let id = post_json(f.addr, "/api/jobs", &job(LONG.clone())).json()["id"]
        .as_u64()
        .unwrap();
    {
        let mut s = std::net::TcpStream::connect(f.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET /api/jobs/{id}/events HTTP/1.1\r\nHost: {}\r\n\r\n",
            f.addr
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        // read events for a while: the stream keeps the job alive past the timeout
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < until {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
        }
        let s = get(f.addr, "/api/jobs").json();
        assert_eq!(
            s[0]["state"],
            json!("running"),
            "watched: still running {s}"
        );
    } // the page goes away
    let s = wait_final(f.addr, id, Duration::from_secs(60));
    assert_eq!(s["state"], json!("cancelled"), "{s}");
    assert!(s["message"].as_str().unwrap().contains("abandoned"));
    assert!(s["step"].as_u64().unwrap() < 150);
}
