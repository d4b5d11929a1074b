//! The demo's own outputs around the eval report: the verdict (which caption kind won on
//! each metric that was computed — whichever it is), a one-scene-per-class grid
//! (`grids.png`: rows = classes, columns = real | flat | hierarchical), the training loss
//! curves, the caption-stage summary, and `report.html` = this summary + `strata eval`'s
//! report.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use strata_eval::images::{read_png, resize, Rgb};
use strata_eval::Metric;

use super::{base64, write_atomic, Plan, KINDS};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line per metric computed for both caption kinds: values and which kind is better
/// (by the metric's direction), with the real images' relation fidelity as the ceiling.
pub fn verdict(metrics: &Value) -> Vec<String> {
    let sets = metrics["sets"].as_array().cloned().unwrap_or_default();
    let find = |kind: &str| {
        sets.iter()
            .find(|s| s["caption_kind"].as_str() == Some(kind))
            .cloned()
    };
    let (Some(flat), Some(hier)) = (find("flat"), find("hierarchical")) else {
        return vec![
            "no comparison: the eval report lacks the flat or the hierarchical set".into(),
        ];
    };
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for m in Metric::ALL {
        let v = |s: &Value| s["metrics"][m.id()]["value"].as_f64();
        let sd = |s: &Value| s["metrics"][m.id()]["std"].as_f64();
        let (Some(a), Some(b)) = (v(&flat), v(&hier)) else {
            skipped.push(m.heading().trim_end_matches(['↑', '↓', '*']).to_string());
            continue;
        };
        let lower_better = m.heading().ends_with('↓');
        let fmt = |x: f64| {
            if m == Metric::RelationFidelity {
                format!("{:.1}%", 100.0 * x)
            } else if x != 0.0 && x.abs() < 0.01 {
                format!("{x:.3e}")
            } else {
                format!("{x:.4}")
            }
        };
        let better = if a == b {
            "tie".to_string()
        } else if (b < a) == lower_better {
            "hierarchical better".to_string()
        } else {
            "flat better (hierarchical did NOT win)".to_string()
        };
        let mut line = format!(
            "{}: flat {} vs hierarchical {} → {better}",
            m.heading(),
            fmt(a),
            fmt(b)
        );
        if let (Some(sa), Some(sb)) = (sd(&flat), sd(&hier)) {
            if (a - b).abs() < sa.max(sb) {
                line.push_str(&format!(
                    " (difference within one subset std {:.4}: not significant)",
                    sa.max(sb)
                ));
            }
        }
        if m == Metric::RelationFidelity {
            let n = flat["relation_fidelity"]["overall"]["requested"]
                .as_f64()
                .unwrap_or(0.0);
            if n > 0.0 {
                let p = (a + b) / 2.0;
                let se = (2.0 * p * (1.0 - p) / n).sqrt();
                line.push_str(&format!(
                    " ({} requested triples each; standard error of the difference ≈ {:.1} points",
                    n,
                    100.0 * se
                ));
                if (a - b).abs() < 2.0 * se {
                    line.push_str(": not significant");
                }
                line.push(')');
            }
            if let Some(r) = metrics["real_relation_fidelity"]["overall"]["share"].as_f64() {
                line.push_str(&format!(
                    "; real test images through the same segmenter: {:.1}%",
                    100.0 * r
                ));
            }
        }
        out.push(line);
    }
    if !skipped.is_empty() {
        out.push(format!(
            "not computed (reasons in the report): {}",
            skipped.join(", ")
        ));
    }
    out
}

fn tile(path: &Path, side: usize) -> Rgb {
    match read_png(path) {
        Ok(img) if img.width == side && img.height == side => img,
        Ok(img) => {
            // nearest-neighbour enlargement keeps small images crisp; shrink with the box filter
            if img.width < side && side % img.width == 0 && img.width == img.height {
                let f = side / img.width;
                let mut data = vec![0u8; side * side * 3];
                for y in 0..side {
                    for x in 0..side {
                        let s = ((y / f) * img.width + x / f) * 3;
                        data[(y * side + x) * 3..][..3].copy_from_slice(&img.data[s..s + 3]);
                    }
                }
                Rgb {
                    width: side,
                    height: side,
                    data,
                }
            } else {
                resize(&img, side, side)
            }
        }
        Err(_) => Rgb {
            width: side,
            height: side,
            data: vec![128; side * side * 3],
        },
    }
}

fn encode_png(img: &Rgb) -> anyhow::Result<Vec<u8>> {
    Ok(strata_synth::png_io::encode_rgb(
        Path::new("grid"),
        img.width as u32,
        img.height as u32,
        &img.data,
    )?)
}

/// `grids.png` and the HTML rows of the per-class grid: the first test image of each class.
fn class_grid(run: &Path, tests: &[(String, String)]) -> anyhow::Result<String> {
    let side = 128;
    let gap = 4;
    let rows: Vec<&(String, String)> = {
        let mut seen = std::collections::BTreeSet::new();
        tests
            .iter()
            .filter(|(s, _)| seen.insert(s.clone()))
            .collect()
    };
    let cols = 1 + KINDS.len();
    let (w, h) = (cols * side + (cols - 1) * gap, rows.len() * (side + gap));
    let mut canvas = vec![255u8; w * h.max(1) * 3];
    let mut html = String::from("<table class=grid><tr><th>class</th><th>real (test)</th>");
    for k in KINDS {
        let _ = write!(html, "<th>LoRA, {k} captions</th>");
    }
    html.push_str("</tr>");
    for (ri, (scene, file)) in rows.iter().enumerate() {
        let _ = write!(html, "<tr><td class=l>{}</td>", esc(scene));
        let mut paths = vec![run.join("real").join(file)];
        paths.extend(KINDS.iter().map(|k| run.join("gen").join(k).join(file)));
        for (ci, p) in paths.iter().enumerate() {
            let t = tile(p, side);
            for y in 0..side {
                let dst = ((ri * (side + gap) + y) * w + ci * (side + gap)) * 3;
                canvas[dst..dst + side * 3]
                    .copy_from_slice(&t.data[y * side * 3..(y + 1) * side * 3]);
            }
            let _ = write!(
                html,
                "<td><img width={side} height={side} src=\"data:image/png;base64,{}\"></td>",
                base64(&encode_png(&t)?)
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    if !rows.is_empty() {
        let png = encode_png(&Rgb {
            width: w,
            height: h,
            data: canvas,
        })?;
        write_atomic(&run.join("grids.png"), &png)?;
    }
    Ok(html)
}

/// Loss curves of both runs (moving average over 10 steps) as SVG.
fn loss_svg(run: &Path) -> Option<String> {
    let mut series = Vec::new();
    for k in KINDS {
        let text = std::fs::read_to_string(run.join("runs").join(k).join("log.jsonl")).ok()?;
        let pts: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
            .collect();
        if pts.is_empty() {
            return None;
        }
        let win = 10usize;
        let smooth: Vec<(f64, f64)> = (0..pts.len())
            .map(|i| {
                let lo = i.saturating_sub(win - 1);
                let s: f64 = pts[lo..=i].iter().map(|p| p.1).sum();
                (pts[i].0, s / (i - lo + 1) as f64)
            })
            .collect();
        series.push((k, smooth));
    }
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(0.0, f64::max)
        .max(1e-6);
    let (w, h, l, b, t) = (560.0, 240.0, 50.0, 30.0, 10.0);
    let px = |x: f64| l + (w - l - 10.0) * x / xmax;
    let py = |y: f64| t + (h - t - b) * (1.0 - y / ymax);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11"><rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        h + 20.0,
        w - l - 10.0,
        h - t - b
    );
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"##,
            l - 4.0,
            py(y) + 4.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{l}" y="{}">step 0</text><text x="{}" y="{}" text-anchor="end">step {xmax}</text>"##,
        h - b + 14.0,
        w - 10.0,
        h - b + 14.0
    );
    let colours = ["#f28e2b", "#4e79a7"];
    for (i, (k, pts)) in series.iter().enumerate() {
        let d: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/><rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{k} captions (loss, 10-step mean)</text>"##,
            colours[i],
            d.join(" "),
            l + 200.0 * i as f64,
            h + 4.0,
            colours[i],
            l + 200.0 * i as f64 + 16.0,
            h + 14.0
        );
    }
    s.push_str("</svg>");
    Some(s)
}

/// Writes `grids.png` and `report.html` (demo summary + eval report).
pub fn write(
    run: &Path,
    plan: &Plan,
    markers: &[(String, String, Value)],
) -> anyhow::Result<serde_json::Value> {
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/metrics.json"))
            .context("reading eval/metrics.json")?,
    )
    .context("eval/metrics.json is not JSON")?;
    let eval_html = std::fs::read_to_string(run.join("eval/report.html"))
        .context("reading eval/report.html")?;
    let real = strata_caption::read_dataset(&run.join("real"))?;
    let mut tests: Vec<(String, String)> = real
        .iter()
        .map(|r| (r.scene.clone(), r.file_name.clone()))
        .collect();
    tests.sort();
    let grid = class_grid(run, &tests)?;
    let lines = verdict(&metrics);

    let mut h = String::new();
    h.push_str("<h1>strata demo: the paper's experiment in miniature</h1>");
    let total: f64 = markers
        .iter()
        .filter_map(|(_, _, v)| v["seconds"].as_f64())
        .sum();
    let _ = write!(
        h,
        "<p>Preset <b>{}</b>, budget {} min, seed {}, base model <code>{}</code>, {} px. Stage wall times add up to <b>{:.1} min</b> (summed over the invocations that ran them).</p>",
        esc(&plan.preset),
        plan.minutes,
        plan.seed,
        esc(&plan.model.display().to_string()),
        plan.resolution,
        total / 60.0
    );
    h.push_str(
        "<h2>Verdict: flat vs hierarchical captions (same base model, LoRA, seed, steps)</h2><ul>",
    );
    for l in &lines {
        let _ = write!(h, "<li>{}</li>", esc(l));
    }
    h.push_str("</ul><p class=note>Measured on this run only; small sets (see the image counts) make every difference noisy. The numbers are reported whichever way they fall.</p>");
    h.push_str("<h2>Stages</h2><table><tr><th>stage</th><th>wall s</th><th>CPU s</th><th>summary</th></tr>");
    for (name, label, v) in markers {
        let mut brief = v.clone();
        if let Some(o) = brief.as_object_mut() {
            o.remove("examples");
            o.remove("seconds");
            o.remove("cpu_seconds");
            o.remove("table");
        }
        let text: Vec<String> = brief
            .as_object()
            .map(|o| o.iter().map(|(k, x)| format!("{k}: {x}")).collect())
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td class=l title=\"{}\">{}</td><td>{:.1}</td><td>{:.1}</td><td class=l style=\"font-size:12px;max-width:900px;word-break:break-word\">{}</td></tr>",
            esc(name),
            esc(label),
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
            esc(&text.join("; "))
        );
    }
    h.push_str("</table>");
    if let Some((_, _, c)) = markers.iter().find(|(n, _, _)| n.ends_with("caption")) {
        let _ = write!(
            h,
            "<h2>Captions (through the caption stage)</h2><p>{} images captioned from <code>captions-source.json</code> (Karpathy format: the traditional one-line caption, then the relation sentences): golden-rule choice {}, {} corrections logged ({}), {} captions changed by them. Equal to the synthetic ground truth: scene {}, relation {}, elements {}, relation triples {} of {}.</p>",
            c["images"],
            esc(&c["golden_rule_choice"].to_string()),
            c["corrections"],
            esc(&c["corrections_by_rule"].to_string()),
            c["captions_changed_by_corrections"],
            c["equal_to_ground_truth"]["scene"],
            c["equal_to_ground_truth"]["relation"],
            c["equal_to_ground_truth"]["elements"],
            c["equal_to_ground_truth"]["relation_triples"],
            c["equal_to_ground_truth"]["of"],
        );
        h.push_str("<table><tr><th>scene</th><th>relation</th><th>elements</th><th>flat (traditional) caption</th></tr>");
        if let Some(ex) = c["examples"].as_object() {
            for e in ex.values() {
                let els: Vec<&str> = e["elements"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                let _ = write!(
                    h,
                    "<tr><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
                    esc(e["scene"].as_str().unwrap_or("")),
                    esc(e["relation"].as_str().unwrap_or("")),
                    esc(&els.join(", ")),
                    esc(e["text"].as_str().unwrap_or(""))
                );
            }
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Training loss</h2>");
    if let Some(svg) = loss_svg(run) {
        h.push_str(&svg);
    }
    h.push_str("<h2>One test scene per class (also <code>grids.png</code>)</h2>");
    h.push_str(&grid);
    h.push_str("<hr>");

    let html = match eval_html.find("<body>") {
        Some(i) => {
            let (a, b) = eval_html.split_at(i + "<body>".len());
            format!(
                "{}{h}{b}",
                a.replace("strata eval report", "strata demo report")
            )
        }
        None => format!("<!DOCTYPE html><html><body>{h}{eval_html}</body></html>"),
    };
    write_atomic(&run.join("report.html"), html.as_bytes())?;
    Ok(serde_json::json!({
        "report": run.join("report.html").display().to_string(),
        "grids": run.join("grids.png").display().to_string(),
        "verdict": lines,
    }))
}

#[cfg(test)]
mod tests {
    use super::verdict;
    use serde_json::json;

    fn set(kind: &str, sfid: f64, rf: f64) -> serde_json::Value {
        json!({"caption_kind": kind, "metrics": {
            "synth-fid": {"value": sfid, "note": ""},
            "relation-fidelity": {"value": rf, "note": ""},
            "lpips": {"value": null, "note": "not computed: needs weights"}},
            "relation_fidelity": {"overall": {"requested": 100, "honoured": 0}}})
    }

    #[test]
    fn verdict_names_the_winner_either_way_and_the_noise() {
        // hierarchical worse on sFID (lower is better), better on relation fidelity by 30
        // points out of 100 triples (well beyond 2 standard errors)
        let m = json!({"sets": [set("flat", 1.0, 0.2), set("hierarchical", 2.0, 0.5)],
                       "real_relation_fidelity": {"overall": {"share": 0.8}}});
        let v = verdict(&m);
        assert!(
            v[0].starts_with("sFID*↓: flat 1.0000 vs hierarchical 2.0000"),
            "{v:?}"
        );
        assert!(v[0].contains("hierarchical did NOT win"), "{v:?}");
        assert!(v[1].contains("hierarchical better"), "{v:?}");
        assert!(!v[1].contains("not significant"), "{v:?}");
        assert!(v[1].contains("real test images through the same segmenter: 80.0%"));
        assert!(v.last().unwrap().contains("LPIPS"), "{v:?}");
        // a 1-point difference on 100 triples is noise
        let m = json!({"sets": [set("flat", 1.0, 0.50), set("hierarchical", 1.0, 0.51)]});
        let v = verdict(&m);
        assert!(v[0].contains("tie"), "{v:?}");
        assert!(v[1].contains("not significant"), "{v:?}");
    }
}
