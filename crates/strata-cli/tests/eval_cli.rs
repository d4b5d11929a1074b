//! `strata eval` end to end on two folders of synthetic scenes.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn synth(out: &Path, seed: &str) {
    let o = strata()
        .args([
            "synth", "--count", "11", "--size", "64", "--seed", seed, "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn eval_writes_table_json_and_report_and_explains_missing_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    let other = tmp.path().join("other");
    synth(&real, "1");
    synth(&other, "2");
    let out = tmp.path().join("report");
    let run = |extra: &[&str]| {
        strata()
            .arg("eval")
            .arg("--real")
            .arg(&real)
            .arg("--generated")
            .arg(format!(
                "copy/hierarchical={}",
                real.join("images").display()
            ))
            .arg("--generated")
            .arg(format!(
                "other/traditional={}",
                other.join("images").display()
            ))
            .args([
                "--seg-steps",
                "20",
                "--seg-train-scenes",
                "44",
                "--kid-subsets",
                "5",
            ])
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("RelFid↑") && table.contains("FID↓"),
        "{table}"
    );
    assert!(
        table.contains("copy") && table.contains("hierarchical"),
        "{table}"
    );
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let sets = m["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    // identical images: strata-synthetic FID ~ 0; other scenes: clearly larger
    let sfid = |i: usize| sets[i]["metrics"]["synth-fid"]["value"].as_f64().unwrap();
    assert!(sfid(0).abs() < 1e-6, "{}", sfid(0));
    assert!(sfid(1) > 1e-3, "{}", sfid(1));
    assert!(sets[0]["metrics"]["synth-fid"]["note"]
        .as_str()
        .unwrap()
        .contains("not comparable to standard FID"));
    // relation fidelity of an identical copy equals that of the real images
    let rf = sets[0]["metrics"]["relation-fidelity"]["value"]
        .as_f64()
        .unwrap();
    let real_rf = m["real_relation_fidelity"]["overall"]["share"]
        .as_f64()
        .unwrap();
    assert_eq!(rf, real_rf);
    // every other metric says why it is missing
    assert!(sets[0]["metrics"]["fid"]["note"]
        .as_str()
        .unwrap()
        .contains("--inception-weights"));
    assert!(sets[0]["metrics"]["q-align"]["note"]
        .as_str()
        .unwrap()
        .contains("not computed"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("data:image/png;base64,"));
    assert!(out.join("segmenter.safetensors").is_file());
    // second run loads the saved segmenter and gives the same numbers
    let o2 = run(&[]);
    assert!(o2.status.success());
    let m2: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        m2["sets"][1]["metrics"]["synth-fid"],
        m["sets"][1]["metrics"]["synth-fid"]
    );
    // bad input: unknown metric, missing folder
    let o3 = run(&["--metrics", "fid,bogus"]);
    assert!(!o3.status.success());
    assert!(String::from_utf8_lossy(&o3.stderr).contains("unknown metric `bogus`"));
}

#[test]
fn eval_reports_a_broken_image_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    synth(&real, "3");
    let gen = tmp.path().join("gen");
    std::fs::create_dir_all(&gen).unwrap();
    std::fs::copy(
        real.join("images/park/park_00005.png"),
        gen.join("park_00005.png"),
    )
    .unwrap();
    std::fs::copy(
        real.join("images/square/square_00010.png"),
        gen.join("square_00010.png"),
    )
    .unwrap();
    std::fs::write(gen.join("broken.png"), b"not a png").unwrap();
    let o = strata()
        .arg("eval")
        .arg("--real")
        .arg(&real)
        .arg("--generated")
        .arg(&gen)
        .args([
            "--seg-steps",
            "5",
            "--seg-train-scenes",
            "22",
            "--metrics",
            "synth-fid,relation-fidelity",
        ])
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.png"), "{err}");
    assert!(tmp.path().join("out/metrics.json").is_file());
}
