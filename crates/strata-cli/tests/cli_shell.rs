//! The command line as a user meets it: shell completions, man pages, choices checked and
//! listed by clap, defaults shown, and errors printed once with their cause.

use std::process::Command;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = strata().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SUBCOMMANDS: &[&str] = &[
    "prepare",
    "caption",
    "dataset",
    "synth",
    "encode",
    "train",
    "generate",
    "eval",
    "demo",
    "model",
    "completions",
    "man",
];

#[test]
fn bash_completion_is_a_valid_script_that_knows_the_subcommands() {
    let (code, script, err) = run(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    for s in SUBCOMMANDS {
        assert!(script.contains(s), "bash completion lacks {s}");
    }
    assert!(script.contains("--lora-rank") && script.contains("textual-inversion"));
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("strata.bash");
    std::fs::write(&f, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // sourcing it registers the completion function
    let src = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p strata", f.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&src.stdout).contains("strata"),
        "{}",
        String::from_utf8_lossy(&src.stderr)
    );
}

#[test]
fn other_shells_get_their_own_scripts() {
    for (shell, marker) in [
        ("zsh", "#compdef strata"),
        ("fish", "complete -c strata"),
        ("elvish", "edit:completion:arg-completer[strata]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, script, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        assert!(script.contains("generate"), "{shell}: no subcommands");
    }
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("possible values") && err.contains("bash"),
        "{err}"
    );
}

#[test]
fn man_pages_render() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let (code, out, err) = run(&["man", "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("man pages"), "{out}");
    for page in [
        "strata.1",
        "strata-train.1",
        "strata-generate.1",
        "strata-model-init.1",
    ] {
        let roff = std::fs::read_to_string(dir.join(page)).unwrap();
        let title = page.trim_end_matches(".1");
        assert!(
            roff.lines()
                .any(|l| l.starts_with(".TH") && l.to_lowercase().contains(title)),
            "{page}: no .TH {title}"
        );
    }
    let train = std::fs::read_to_string(dir.join("strata-train.1")).unwrap();
    assert!(train.contains("lora\\-rank") || train.contains("lora-rank"));
    // stdout form: the top page
    let (code, top, _) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(
        top.starts_with(".ie") || top.contains(".TH"),
        "{}",
        &top[..200.min(top.len())]
    );
    // rendered by man(1) where it exists
    if let Ok(o) = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(dir.join("strata-train.1"))
        .env("MANWIDTH", "100")
        .output()
    {
        if o.status.success() {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(
                text.contains("lora-rank") && text.contains("NAME"),
                "{text}"
            );
        }
    }
}

#[test]
fn choices_are_checked_and_listed() {
    let (_, help, _) = run(&["train", "-h"]);
    assert!(
        help.contains("[possible values: lora, dreambooth, textual-inversion, full, vae]"),
        "{help}"
    );
    assert!(
        help.contains("[possible values: cosine, constant]")
            || help.contains("[possible values: constant, cosine]")
    );
    assert!(help.contains("[possible values: no, bf16, f16]"), "{help}");
    assert!(help.contains("[default: 1e-4]") && help.contains("[default: 10]"));
    let (code, _, err) = run(&["train", "--method", "lora2"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("lora2") && err.contains("textual-inversion"),
        "{err}"
    );
    // aliases still parse: `ti`, kohya's `fp16`
    let (_, _, err) = run(&["train", "--method", "ti", "--mixed-precision", "fp16"]);
    assert!(!err.contains("invalid value"), "{err}");

    let (_, help, _) = run(&["generate", "-h"]);
    for want in [
        "[possible values: concat, decoupled]",
        "[default: cpu]",
        "[possible values: f32, f16, bf16]",
        "[default: 30]",
        "[default: 7]",
    ] {
        assert!(help.contains(want), "generate --help lacks {want}:\n{help}");
    }
    let (code, _, err) = run(&["generate", "--device", "tpu", "-o", "x"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("tpu") && err.contains("cpu, cuda or cuda:N"),
        "{err}"
    );
    let (code, _, err) = run(&["generate", "--dtype", "f64", "-o", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("f64") && err.contains("bf16"), "{err}");
    let (code, _, err) = run(&[
        "eval",
        "--real",
        "r",
        "--generated",
        "g",
        "--metrics",
        "fid,fud",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("fud") && err.contains("relation-fidelity"),
        "{err}"
    );
    let (code, _, err) = run(&["caption", "--fallback", "last", "--explain", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("strip-vertical"), "{err}");
    let (code, _, err) = run(&["synth", "--classes", "park,moon", "--out", "x"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("moon") && err.contains("dense_residential"),
        "{err}"
    );
}

#[test]
fn no_help_page_mentions_issue_numbers() {
    for s in SUBCOMMANDS {
        let (code, help, err) = run(&[s, "--help"]);
        assert_eq!(code, 0, "{s}: {err}");
        assert!(
            !help.contains("issue ") && !help.contains(concat!("DESIGN", ".md")),
            "{s} --help: {help}"
        );
    }
}

#[test]
fn an_error_is_printed_once_with_its_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let (code, _, err) = run(&["dataset", "stats", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    let line = lines[0];
    assert!(line.contains("nowhere"), "{line}");
    // the OS's reason, once
    let cause = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
    let os = "No such file or directory";
    let n = line
        .matches(os)
        .count()
        .max(line.matches(cause.as_str()).count());
    assert_eq!(n, 1, "{line}");
}
