//! The hostile-input corpus (`tests/hostile/`, written by `tests/hostile/make_corpus.py`, cases
//! in `tests/hostile/cases.toml`): every case hands the real `strata` binary something a
//! careless or hostile user produces and checks what the user gets back:
//!
//! - it ends within the case's time limit (killed otherwise) and not by a signal;
//! - it exits non-zero, with no panic, and stderr holds one line starting `error:` that
//!   contains every `expect` string (the file or option it names, and what to do);
//! - its peak resident memory (the child's `ru_maxrss`) stays under the case's bound;
//! - the output folder, seeded with an earlier file before the run, is left as it was: the
//!   earlier file unchanged, nothing new in it (or, for batch commands that write their good
//!   items, nothing that looks half-written).
//!
//! Cases that need a tmpfs (a full disk, a read-only folder) mount one in a private mount
//! namespace (`unshare`); where the machine allows neither, they are reported as skipped and
//! the test still requires the corpus minimum of the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
    #[serde(default)]
    request: Vec<Request>,
}

/// A request to `strata serve`: raw HTTP, so malformed framing can be sent too.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Request {
    name: String,
    method: String,
    path: String,
    #[serde(default)]
    content_type: Option<String>,
    /// Body text, or `@FILE` (a corpus file).
    #[serde(default)]
    body: String,
    /// Declared Content-Length, when it should differ from the body's length.
    #[serde(default)]
    content_length: Option<u64>,
    /// Status class expected (400 = any 4xx).
    status: u16,
    /// Strings the response body must contain.
    #[serde(default)]
    expect: Vec<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    args: Vec<String>,
    /// Strings the `error:` line must contain.
    expect: Vec<String>,
    #[serde(default = "default_timeout")]
    timeout_s: u64,
    #[serde(default = "default_rss")]
    max_rss_mib: u64,
    /// Corpus files copied into the case's temporary folder: `[from, to]`.
    #[serde(default)]
    copy: Vec<[String; 2]>,
    /// Symbolic links made in the temporary folder: `[target, link]`.
    #[serde(default)]
    link: Vec<[String; 2]>,
    /// Files written into the temporary folder: `[path, text]`.
    #[serde(default)]
    write: Vec<[String; 2]>,
    /// `full` (a 3 MiB tmpfs at `{t}/mnt`) or `ro` (a read-only one).
    #[serde(default)]
    mount: Option<String>,
    /// A command started first and kept running (`{out}` must be locked by it) while the
    /// case's command runs.
    #[serde(default)]
    hold: Option<Vec<String>>,
    /// Batch commands write their good items: new complete files in `{out}` are allowed.
    #[serde(default)]
    writes_good_items: bool,
}

fn default_timeout() -> u64 {
    60
}
fn default_rss() -> u64 {
    1024
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn strata() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

fn expand(s: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Every file below `dir` with its bytes (links not followed).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                m.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    m
}

fn looks_partial(p: &Path) -> bool {
    let n = p.to_string_lossy();
    n.contains(".strata-tmp") || n.ends_with(".tmp") || n.ends_with(".part") || n.contains("/.")
}

/// Runs `cmd`, killing it after `limit`; returns (exit status, stderr, peak RSS in KiB,
/// elapsed). The child is reaped with `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_limited(
    mut cmd: Command,
    limit: Duration,
) -> (std::process::ExitStatus, String, u64, Duration, bool) {
    use std::io::Read;
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata");
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let pid = child.id() as libc::pid_t;
    let mut killed = false;
    let (status, rss) = loop {
        let mut st: libc::c_int = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut st, libc::WNOHANG, &mut ru) };
        if r == pid {
            use std::os::unix::process::ExitStatusExt;
            break (std::process::ExitStatus::from_raw(st), ru.ru_maxrss as u64);
        }
        if t0.elapsed() > limit && !killed {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    (status, stderr, rss, t0.elapsed(), killed)
}

/// Mounts a tmpfs at `at`; `true` when it worked.
fn mount_tmpfs(at: &Path, opts: &str) -> bool {
    std::fs::create_dir_all(at).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn umount(at: &Path) {
    let _ = Command::new("umount").arg(at).status();
}

struct Outcome {
    name: String,
    problems: Vec<String>,
    skipped: Option<String>,
    secs: f64,
    rss_mib: f64,
}

fn run_case(case: &Case, corpus: &Path, base: &str, cache: &Path) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_path_buf();
    let out = t.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut vars = BTreeMap::new();
    vars.insert("h", corpus.display().to_string());
    vars.insert("t", t.display().to_string());
    vars.insert("out", out.display().to_string());
    vars.insert("base", base.to_string());
    let mut outcome = Outcome {
        name: case.name.clone(),
        problems: vec![],
        skipped: None,
        secs: 0.0,
        rss_mib: 0.0,
    };
    for [from, to] in &case.copy {
        let (from, to) = (corpus.join(from), t.join(expand(to, &vars)));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if from.is_dir() {
            let st = Command::new("cp")
                .arg("-r")
                .arg(&from)
                .arg(&to)
                .status()
                .unwrap();
            assert!(st.success());
        } else {
            std::fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("{}: copy {}: {e}", case.name, from.display()));
        }
    }
    for [target, link] in &case.link {
        let link = t.join(expand(link, &vars));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(expand(target, &vars), &link).unwrap();
    }
    for [path, text] in &case.write {
        let p = t.join(expand(path, &vars));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, expand(text, &vars)).unwrap();
    }
    let mnt = t.join("mnt");
    let mut mounted = false;
    if let Some(kind) = &case.mount {
        let opts = match kind.as_str() {
            "full" => "size=3m",
            "ro" => "ro,size=1m",
            other => panic!("{}: unknown mount {other}", case.name),
        };
        if !mount_tmpfs(&mnt, opts) {
            outcome.skipped = Some("cannot mount a tmpfs here (not root?)".into());
            return outcome;
        }
        mounted = true;
        if kind == "full" {
            // fill it: the command's first real write runs out of space
            let fill = mnt.join("filler");
            let _ = Command::new("dd")
                .args(["if=/dev/zero", "bs=64k"])
                .arg(format!("of={}", fill.display()))
                .stderr(Stdio::null())
                .status();
        }
        vars.insert("mnt", mnt.display().to_string());
    }
    // the output folder holds an earlier result that no failure may change
    if case.mount.as_deref() != Some("ro") {
        std::fs::write(out.join("earlier.txt"), b"an earlier result\n").unwrap();
    }
    let watch = if case.mount.is_some() {
        mnt.clone()
    } else {
        out.clone()
    };
    let before = snapshot(&watch);

    let mut holder = None;
    if let Some(h) = &case.hold {
        let mut c = Command::new(strata());
        c.args(h.iter().map(|a| expand(a, &vars)))
            .env("STRATA_CACHE_DIR", cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        holder = Some(c.spawn().unwrap());
        let t0 = Instant::now();
        let locked = |d: &Path| snapshot(d).keys().any(|k| k.ends_with(".strata.lock"));
        while !locked(&out) && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // the lock file appears just before the lock is taken
        std::thread::sleep(Duration::from_millis(300));
    }
    let before = if case.hold.is_some() {
        snapshot(&watch)
    } else {
        before
    };

    let mut cmd = Command::new(strata());
    cmd.args(case.args.iter().map(|a| expand(a, &vars)))
        .env("STRATA_CACHE_DIR", cache)
        .env("NO_COLOR", "1");
    let limit = Duration::from_secs(case.timeout_s);
    let (status, stderr, rss_kib, took, killed) = run_limited(cmd, limit);
    outcome.secs = took.as_secs_f64();
    outcome.rss_mib = rss_kib as f64 / 1024.0;
    let after = if case.hold.is_some() {
        // compare before the holder writes anything more
        let a = snapshot(&watch);
        if let Some(mut h) = holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        a
    } else {
        snapshot(&watch)
    };
    if mounted {
        umount(&mnt);
    }

    let p = &mut outcome.problems;
    if killed {
        p.push(format!("still running after {} s: killed", case.timeout_s));
    }
    match status.code() {
        None => p.push(format!("ended by a signal ({status})")),
        Some(0) => p.push("exited 0".into()),
        Some(_) => {}
    }
    if rss_kib / 1024 > case.max_rss_mib {
        p.push(format!(
            "peak memory {:.0} MiB over the bound {} MiB",
            outcome.rss_mib, case.max_rss_mib
        ));
    }
    if stderr.contains("panicked at") || stderr.contains("RUST_BACKTRACE") {
        p.push("panicked".into());
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.starts_with("error "))
        .collect();
    match errors.as_slice() {
        [] => p.push("no `error:` line".into()),
        [line] => {
            let missing: Vec<String> = case
                .expect
                .iter()
                .map(|e| expand(e, &vars))
                .filter(|e| !line.contains(e.as_str()))
                .collect();
            if !missing.is_empty() {
                p.push(format!("the error line lacks {missing:?}"));
            }
        }
        more => p.push(format!("{} `error:` lines, not one", more.len())),
    }
    // with a holder writing its own run alongside, only the earlier result is compared
    let judged = |k: &Path| {
        !k.ends_with(".strata.lock") && (case.hold.is_none() || k.ends_with("earlier.txt"))
    };
    for (k, v) in before.iter().filter(|(k, _)| judged(k)) {
        match after.get(k) {
            None => p.push(format!("{} was removed", k.display())),
            Some(a) if a != v => p.push(format!("{} was changed", k.display())),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        if k.ends_with(".strata.lock") {
            continue;
        }
        // the holder of a lock goes on writing its own run: only the case's command is judged
        if case.hold.is_some() {
            continue;
        }
        if !case.writes_good_items || looks_partial(k) {
            p.push(format!("{} was left behind", k.display()));
        }
    }
    if !p.is_empty() {
        p.push(format!("stderr:\n{}", stderr.trim_end()));
    }
    outcome
}

fn send(hostport: &str, r: &Request, corpus: &Path) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let body: Vec<u8> = match r.body.strip_prefix('@') {
        Some(f) => std::fs::read(corpus.join(f))?,
        None => r.body.clone().into_bytes(),
    };
    let mut s = std::net::TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n",
        r.method,
        r.path,
        r.content_length.unwrap_or(body.len() as u64)
    );
    if let Some(ct) = &r.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // a server may answer (and close) before a declared-but-absent body arrives
    let _ = s.write_all(&body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    Ok(String::from_utf8_lossy(&resp).into_owned())
}

/// Hostile requests to the web page's API: each gets a 4xx answer with a message, and the
/// server keeps answering, under a memory bound, after all of them.
#[test]
fn hostile_requests_to_serve() {
    use std::io::BufRead;
    let corpus = repo().join("tests/hostile");
    let all: Corpus =
        toml::from_str(&std::fs::read_to_string(corpus.join("cases.toml")).unwrap()).unwrap();
    assert!(!all.request.is_empty());
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(strata())
        .args(["serve", "--port", "0"])
        .env("STRATA_CACHE_DIR", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut failed = vec![];
    for r in &all.request {
        let resp = send(&hostport, r, &corpus).unwrap_or_else(|e| format!("(no answer: {e})"));
        let status: u16 = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let class_ok = if r.status == 400 {
            (400..500).contains(&status)
        } else {
            status == r.status
        };
        let missing: Vec<&String> = r
            .expect
            .iter()
            .filter(|e| !resp.contains(e.as_str()))
            .collect();
        if class_ok && missing.is_empty() {
            println!("ok   serve: {}  ({status})", r.name);
        } else {
            failed.push(format!(
                "{}: status {status}, missing {missing:?}\n{}",
                r.name,
                resp.chars().take(600).collect::<String>()
            ));
        }
    }
    // still serving after all of them
    let info = Request {
        name: "info".into(),
        method: "GET".into(),
        path: "/api/info".into(),
        content_type: None,
        body: String::new(),
        content_length: None,
        status: 200,
        expect: vec![],
    };
    let resp = send(&hostport, &info, &corpus).unwrap();
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let _ = child.wait();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "the server stopped answering: {resp}"
    );
    assert!(
        rss_kib < 1024 * 1024,
        "serve peaked at {} MiB",
        rss_kib / 1024
    );
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn hostile_corpus() {
    let corpus = repo().join("tests/hostile");
    let text = std::fs::read_to_string(corpus.join("cases.toml")).unwrap();
    let all: Corpus = toml::from_str(&text).expect("tests/hostile/cases.toml");
    let only = std::env::var("STRATA_HOSTILE_ONLY").ok();
    let cases: Vec<Case> = all
        .case
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();

    let cache = tempfile::tempdir().unwrap();
    let base = Command::new(strata())
        .args(["model", "base"])
        .env("STRATA_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(base.status.success());
    let base = String::from_utf8(base.stdout).unwrap().trim().to_string();

    // two at a time: the machine has two cores, and memory bounds are per case
    let queue = std::sync::Mutex::new(cases.iter().collect::<Vec<_>>());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(c) = queue.lock().unwrap().pop() else {
                    break;
                };
                let o = run_case(c, &corpus, &base, cache.path());
                results.lock().unwrap().push(o);
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.name.cmp(&b.name));
    let mut failed = 0;
    let mut ran = 0;
    for o in &results {
        if let Some(why) = &o.skipped {
            println!("SKIP {:<60} {why}", o.name);
        } else if o.problems.is_empty() {
            ran += 1;
            println!(
                "ok   {:<60} {:>6.2} s {:>6.0} MiB",
                o.name, o.secs, o.rss_mib
            );
        } else {
            ran += 1;
            failed += 1;
            println!("FAIL {}:\n  {}", o.name, o.problems.join("\n  "));
        }
    }
    assert_eq!(failed, 0, "{failed} hostile-input cases failed (above)");
    if only.is_none() {
        assert!(
            ran >= 40,
            "only {ran} cases ran; the corpus promises at least 40"
        );
    }
}
