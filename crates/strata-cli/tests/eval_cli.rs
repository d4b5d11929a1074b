//! `strata eval` end to end on two folders of synthetic scenes.

use std::path::Path;

use serde_json::Value;

mod common;
use common::strata;

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
                "--segmenter",
                "train",
                "--seg-steps",
                "20",
                "--seg-train-scenes",
                "44",
                "--kid-subsets",
                "5",
                "--gshps-steps",
                "20",
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
fn the_default_embedded_segmenter_reaches_60_percent_miou_on_held_out_scenes() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    let other = tmp.path().join("other");
    synth(&real, "5");
    synth(&other, "6");
    let out = tmp.path().join("out");
    let o = strata()
        .arg("eval")
        .arg("--real")
        .arg(&real)
        .arg("--generated")
        .arg(format!(
            "other/hierarchical={}",
            other.join("images").display()
        ))
        .args(["--metrics", "relation-fidelity,synth-fid"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // the printed figure: "Segmenter (held-out synthetic scenes, n=110): ..., mIoU 76.1%, ..."
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    let line = table
        .lines()
        .find(|l| l.starts_with("Segmenter (held-out"))
        .unwrap_or_else(|| panic!("no segmenter line in {table}"));
    let miou: f64 = line
        .split("mIoU ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no mIoU in {line}"));
    assert!(miou >= 60.0, "{line}");
    assert!(line.contains("n=110"), "{line}");
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(m["segmenter"]["mean_iou"].as_f64().unwrap() >= 0.60);
    // held out from the captioner's training (scene_seed(1000, ·)) and validation (2000)
    assert_eq!(m["segmenter"]["held_out_seed"], 4000);
    assert!(m["segmenter"]["segmenter"]
        .as_str()
        .unwrap()
        .contains("embedded captioner"));
    // nothing was trained
    assert!(!out.join("segmenter.safetensors").exists());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("mIoU"),
        "report without the segmenter's quality"
    );
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

/// A safetensors file (f32 tensors), written by hand: 8-byte header length, JSON header,
/// little-endian data.
fn save_safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)], path: &Path) {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape, data) in tensors {
        let end = off + data.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, end]}),
        );
        off = end;
    }
    let h = serde_json::to_vec(&Value::Object(header)).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(&h);
    for (_, _, data) in tensors {
        for v in data {
            bytes.extend(v.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// Formula AlexNet weights in torchvision's layout (safetensors).
fn write_alexnet(path: &Path) {
    let mut m = Vec::new();
    for (salt, (name, shape)) in strata_eval::backbone::Arch::AlexNet
        .param_spec()
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let fan: usize = shape[1..].iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let x = 0.37 * i as f64 + 1.1 * salt as f64;
                if name.ends_with("bias") {
                    (0.1 * x.cos()) as f32
                } else {
                    (x.sin() / (fan.max(1) as f64).sqrt()) as f32
                }
            })
            .collect();
        m.push((name, shape, v));
    }
    save_safetensors(&m, path);
}

/// The tiny CLIP of strata-eval's fixtures as a transformers folder.
fn write_clip(dir: &Path) {
    let fx_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../strata-eval/tests/fixtures");
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(fx_dir.join("clip_tiny.json")).unwrap())
            .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut m = Vec::new();
    for (s, item) in fx["spec"].as_array().unwrap().iter().enumerate() {
        let name = item[0].as_str().unwrap().to_string();
        let shape: Vec<usize> = serde_json::from_value(item[1].clone()).unwrap();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let x = 0.37 * i as f64 + 1.1 * s as f64;
                if shape.len() >= 2 {
                    (x.sin() / (shape[1..].iter().product::<usize>() as f64).sqrt()) as f32
                } else if name.contains("norm") && name.ends_with("weight") {
                    1.0 + 0.1 * x.sin() as f32
                } else {
                    0.1 * x.cos() as f32
                }
            })
            .collect();
        m.push((name, shape, v));
    }
    save_safetensors(&m, &dir.join("model.safetensors"));
    for f in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(fx_dir.join("clip_tiny").join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn eval_computes_lpips_clipscore_and_stand_in_gshps_from_weight_files() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    let other = tmp.path().join("other");
    synth(&real, "4");
    synth(&other, "5");
    let alex = tmp.path().join("alexnet.safetensors");
    write_alexnet(&alex);
    let clip = tmp.path().join("clip");
    write_clip(&clip);
    let out = tmp.path().join("out");
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
            .args(["--metrics", "lpips,clipscore,clip-cosine,gshps,q-align"])
            .args(["--gshps-steps", "20"])
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[
        "--lpips-backbone",
        alex.to_str().unwrap(),
        "--clip-weights",
        clip.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("LPIPS↓")
            && table.contains("CLIPScore↑")
            && table.contains("GSHPS (stand-in)↑"),
        "{table}"
    );
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let val = |set: usize, k: &str| m["sets"][set]["metrics"][k]["value"].as_f64();
    // LPIPS of an identical copy is exactly 0; other scenes under the same names are not.
    assert_eq!(val(0, "lpips"), Some(0.0));
    assert!(val(1, "lpips").unwrap() > 1e-4, "{:?}", val(1, "lpips"));
    assert!(m["protocol"]["lpips"].as_str().unwrap().contains("AlexNet"));
    assert!(m["protocol"]["lpips"]
        .as_str()
        .unwrap()
        .contains("embedded"));
    // CLIPScore: both numbers, consistent, labelled.
    for set in 0..2 {
        let cs = val(set, "clipscore").unwrap();
        let cos = val(set, "clip-cosine").unwrap();
        assert!((cs - (100.0 * cos).max(0.0)).abs() < 1e-6, "{cs} vs {cos}");
    }
    assert!(m["sets"][0]["metrics"]["clipscore"]["note"]
        .as_str()
        .unwrap()
        .contains("torchmetrics"));
    // GSHPS with the stand-in: identical copy 1, other scenes below 1, labelled a stand-in,
    // trained on synthetic scenes none of which is scored.
    assert!((val(0, "gshps").unwrap() - 1.0).abs() < 1e-9);
    assert!(val(1, "gshps").unwrap() < 1.0 - 1e-6);
    assert!(m["sets"][0]["metrics"]["gshps"]["note"]
        .as_str()
        .unwrap()
        .starts_with("GSHPS (stand-in)"));
    assert!(m["protocol"]["gshps"]
        .as_str()
        .unwrap()
        .contains("fresh synthetic scenes"));
    assert_eq!(m["gshps_stand_in"], true);
    assert!(m["protocol"]["samples"]
        .as_str()
        .unwrap()
        .contains("11 name-matched"));
    assert!(m["sets"][0]["metrics"]["q-align"]["value"].is_null());
    assert!(out.join("gshps_standin.safetensors").is_file());
    // A second run reuses the saved stand-in: same GSHPS.
    let o2 = run(&[]);
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let m2: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        m2["sets"][1]["metrics"]["gshps"]["value"],
        m["sets"][1]["metrics"]["gshps"]["value"]
    );
    // ... and reports the same classifier quality (read back from its quality file).
    assert_eq!(m2["protocol"]["gshps"], m["protocol"]["gshps"]);
    // Without weights the rows say what is needed.
    assert!(m2["sets"][0]["metrics"]["lpips"]["note"]
        .as_str()
        .unwrap()
        .contains("--lpips-backbone"));
    assert!(m2["sets"][0]["metrics"]["clipscore"]["note"]
        .as_str()
        .unwrap()
        .contains("--clip-weights"));
    // A file that is not a backbone is refused, naming it.
    let junk = tmp.path().join("junk.pth");
    std::fs::write(&junk, b"nope").unwrap();
    let o3 = run(&["--lpips-backbone", junk.to_str().unwrap()]);
    assert!(!o3.status.success());
    assert!(String::from_utf8_lossy(&o3.stderr).contains("junk.pth"));
}
