//! The demo's own outputs around the eval report: the verdict (which caption kind won on
//! each metric that was computed — whichever it is), what each stage did in words, a
//! one-scene-per-class grid (`grids.png`: rows = classes, columns = real | flat |
//! hierarchical), the training loss curves, the caption-stage summary, and `report.html` =
//! this summary followed by `strata eval`'s report sections (read back from
//! `eval/metrics.json`), all written with `strata-report`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use strata_eval::images::{read_image, Rgb};
use strata_eval::{EvalReport, Metric};
use strata_image::Filter;
use strata_report::chart::{LineChart, Series};
use strata_report::html::{bold, code, esc, img_png};
use strata_report::{Cell, Document, Table};

use super::{write_atomic, Plan, KINDS};

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
    let stand_in = metrics["gshps_stand_in"].as_bool() == Some(true);
    let heading = |m: Metric| {
        if m == Metric::Gshps && stand_in {
            "GSHPS (stand-in)↑".to_string()
        } else {
            m.heading().to_string()
        }
    };
    for m in Metric::ALL {
        let v = |s: &Value| s["metrics"][m.id()]["value"].as_f64();
        let sd = |s: &Value| s["metrics"][m.id()]["std"].as_f64();
        let (Some(a), Some(b)) = (v(&flat), v(&hier)) else {
            skipped.push(heading(m).trim_end_matches(['↑', '↓', '*']).to_string());
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
            heading(m),
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
    match read_image(path) {
        Ok(img) if img.width == side && img.height == side => img,
        Ok(img) => {
            // nearest-neighbour enlargement by a whole factor keeps small images crisp;
            // anything else is resized with Pillow's (antialiased) bilinear filter
            let f = if img.width < side && side.is_multiple_of(img.width) && img.width == img.height
            {
                Filter::Nearest
            } else {
                Filter::Bilinear
            };
            strata_image::resize(&img, side, side, f)
        }
        Err(_) => Rgb {
            width: side,
            height: side,
            data: vec![128; side * side * 3],
        },
    }
}

fn encode_png(img: &Rgb) -> anyhow::Result<Vec<u8>> {
    Ok(strata_image::encode_png_rgb8(
        Path::new("grid"),
        img.width,
        img.height,
        &img.data,
    )?)
}

/// `grids.png` and the table of the per-class grid: the first test image of each class.
fn class_grid(run: &Path, tests: &[(String, String)]) -> anyhow::Result<Table> {
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
    let mut table = Table::new(
        ["class".to_string(), "real (test)".to_string()]
            .into_iter()
            .chain(KINDS.iter().map(|k| format!("LoRA, {k} captions"))),
    )
    .class("grid");
    for (ri, (scene, file)) in rows.iter().enumerate() {
        let mut cells = vec![Cell::text(scene)];
        let mut paths = vec![run.join("real").join(file)];
        paths.extend(KINDS.iter().map(|k| run.join("gen").join(k).join(file)));
        for (ci, p) in paths.iter().enumerate() {
            let t = tile(p, side);
            for y in 0..side {
                let dst = ((ri * (side + gap) + y) * w + ci * (side + gap)) * 3;
                canvas[dst..dst + side * 3]
                    .copy_from_slice(&t.data[y * side * 3..(y + 1) * side * 3]);
            }
            cells.push(Cell::html(img_png(&encode_png(&t)?, side, side)));
        }
        table.row(cells);
    }
    if !rows.is_empty() {
        let png = encode_png(&Rgb {
            width: w,
            height: h,
            data: canvas,
        })?;
        write_atomic(&run.join("grids.png"), &png)?;
    }
    Ok(table)
}

/// Loss curves of both runs (moving average over 10 steps) as an SVG line chart; `None`
/// when a run has no readable log.
fn loss_svg(run: &Path) -> Option<String> {
    let mut chart = LineChart::new("training step", "loss (10-step mean)")
        .size(640.0, 300.0)
        .y_min(0.0);
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
        chart = chart.series(Series::new(&format!("{k} captions"), smooth));
    }
    Some(chart.to_svg())
}

/// `1234` → "1234", `0.5` → "0.5": JSON numbers as people write them.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Some(x) => format!("{x}"),
        None => v.as_str().map(str::to_string).unwrap_or_else(|| "?".into()),
    }
}

/// `{"a": 1, "b": 2}` → "a 1, b 2".
fn counts(v: &Value) -> String {
    match v.as_object() {
        Some(o) if !o.is_empty() => o
            .iter()
            .map(|(k, x)| format!("{k} {}", num(x)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{:.1}%", 100.0 * x))
        .unwrap_or_else(|| "?".into())
}

/// What a finished stage did, in a sentence or two, from its done-marker.
pub fn stage_summary(name: &str, v: &Value) -> String {
    let kind = if name.ends_with("hierarchical") {
        "hierarchical"
    } else {
        "flat"
    };
    match name.split_once('-').map_or(name, |(_, s)| s) {
        "synth" => format!(
            "Drew {} synthetic scenes of {} classes at {} px (seed {}), with their ground-truth masks and relation triples.",
            num(&v["scenes"]), num(&v["classes"]), num(&v["size"]), num(&v["seed"])
        ),
        "caption" => {
            let a = &v["accuracy"];
            format!(
                "Captioned {} images from pixels with the embedded captioner and split them {} train / {} test. Against the synthetic ground truth{}: scene accuracy {}, element precision / recall / F1 {} / {} / {}; {} of the stated relation triples hold on the true masks, and {} of the synthesiser's own caption triples are stated. {} corrections were logged and changed {} captions.",
                num(&v["images"]), num(&v["train"]), num(&v["test"]),
                if a["held_out"].as_bool() == Some(false) { " (these scene seeds are the captioner's own training or validation seeds: not a held-out measure)" } else { " (scenes the captioner never saw)" },
                pct(&a["scene_accuracy"]), pct(&a["element_precision"]), pct(&a["element_recall"]), pct(&a["element_f1"]),
                pct(&a["triple_precision"]), pct(&a["synth_triples_also_stated"]),
                num(&v["corrections"]), num(&v["captions_changed_by_corrections"])
            )
        }
        s if s.starts_with("train") => {
            let targets: Vec<&str> = v["lora_targets"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            let mut t = format!(
                "Trained a rank-{} LoRA ({}) on the {kind} captions: {} steps of batch {} at learning rate {}, final loss {}.",
                num(&v["lora_rank"]),
                targets.join(", "),
                num(&v["steps"]),
                num(&v["batch"]),
                num(&v["lr"]),
                v["final_loss"].as_f64().map_or("?".into(), |x| format!("{x:.4}"))
            );
            if v["resumed"].as_bool() == Some(true) {
                let _ = write!(
                    t,
                    " Resumed from a checkpoint: {} steps ran in the last invocation.",
                    num(&v["steps_this_invocation"])
                );
            }
            if let Some(s) = v["seconds_per_step"].as_f64().filter(|s| s.is_finite()) {
                let _ = write!(t, " {s:.2} s per step.");
            }
            t
        }
        s if s.starts_with("generate") => format!(
            "Generated {} test images from their {kind} captions with the {kind} LoRA ({} adapted layers): {} DDIM steps, guidance {}; {} written now, {} kept from an earlier run.",
            num(&v["images"]), num(&v["lora_adapters"]), num(&v["steps"]), num(&v["cfg"]),
            num(&v["written_now"]), num(&v["kept_from_earlier"])
        ),
        "eval" => {
            let q = &v["segmenter"];
            let given: Vec<&str> = v["weights"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, p)| !p.is_null())
                        .map(|(k, _)| k.as_str())
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "Scored both generated sets against the {} real test images. The segmenter ({}) reaches {} pixel accuracy and {} mIoU on held-out synthetic scenes. Metric weights given: {}.",
                num(&v["real_images"]),
                match v["segmenter_steps"].as_u64() {
                    Some(0) | None => "the embedded captioner's network, not trained here".to_string(),
                    Some(_) => format!("{} steps", num(&v["segmenter_steps"])),
                },
                pct(&q["pixel_accuracy"]),
                pct(&q["mean_iou"]),
                if given.is_empty() { "none (the metrics that need them say so in the table)".to_string() } else { given.join(", ") }
            )
        }
        "report" => "Wrote report.html and grids.png.".into(),
        _ => "Finished.".into(),
    }
}

fn seconds(v: &Value) -> String {
    match v.as_f64() {
        Some(s) if s >= 120.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{s:.1} s"),
        None => "-".into(),
    }
}

/// Writes `grids.png` and `report.html` (demo summary + eval report).
pub fn write(
    run: &Path,
    plan: &Plan,
    markers: &[(String, String, Value)],
) -> anyhow::Result<serde_json::Value> {
    let metrics_path = run.join("eval/metrics.json");
    let metrics_text = std::fs::read_to_string(&metrics_path)
        .with_context(|| format!("reading {}", metrics_path.display()))?;
    let metrics: Value = serde_json::from_str(&metrics_text)
        .with_context(|| format!("{} is not JSON", metrics_path.display()))?;
    let eval: EvalReport = serde_json::from_value(metrics.clone()).with_context(|| {
        format!(
            "{} is not a strata eval report; delete stages/7-eval.json to evaluate again",
            metrics_path.display()
        )
    })?;
    let real = strata_caption::read_dataset(&run.join("real"))?;
    let mut tests: Vec<(String, String)> = real
        .iter()
        .map(|r| (r.scene.clone(), r.file_name.clone()))
        .collect();
    tests.sort();
    let grid = class_grid(run, &tests)?;
    let lines = verdict(&metrics);

    let mut doc = Document::new("strata demo report");
    doc.h1("strata demo: the paper's experiment in miniature");
    let total: f64 = markers
        .iter()
        .filter_map(|(_, _, v)| v["seconds"].as_f64())
        .sum();
    doc.p_html(&format!(
        "Preset {}, budget {} min, seed {}, base model {}, {} px. Stage wall times add up to <b>{:.1} min</b> (summed over the invocations that ran them).",
        bold(&plan.preset),
        plan.minutes,
        plan.seed,
        code(&plan.model.display().to_string()),
        plan.resolution,
        total / 60.0
    ));
    doc.h2("Verdict: flat vs hierarchical captions (same base model, LoRA, seed, steps)");
    doc.list(&lines);
    doc.note("Measured on this run only; small sets (see the image counts) make every difference noisy. The numbers are reported whichever way they fall.");
    doc.h2("Stages");
    let mut stages = Table::new([
        "stage",
        "wall time",
        "CPU time",
        "peak memory",
        "what it did",
    ]);
    for (name, label, v) in markers {
        stages.row(vec![
            Cell::text(label).with_title(name),
            Cell::value(&seconds(&v["seconds"])),
            Cell::value(&seconds(&v["cpu_seconds"])),
            Cell::value(
                &v["peak_rss_mb_so_far"]
                    .as_f64()
                    .map_or("-".into(), |m| format!("{m:.0} MB")),
            ),
            Cell::text(&stage_summary(name, v)),
        ]);
    }
    doc.table(&stages);
    doc.note("Peak memory is the process's high-water mark when the stage finished (it includes every stage before it in the same invocation).");
    if let Some((_, _, c)) = markers.iter().find(|(n, _, _)| n.ends_with("caption")) {
        let eq = &c["equal_to_ground_truth"];
        let a = &c["accuracy"];
        doc.h2("Captions (from pixels, through the caption stage)");
        doc.p_html(&format!(
            "{} images captioned from their pixels by the embedded captioner ({}), as {} does; the synthesiser's own captions are held back as ground truth. Scene accuracy {}; elements: precision {}, recall {}, F1 {}; relation triples stated by the captions that hold on the true masks: {} (of {}); triples of the synthesiser's own captions that the captions also state: {} (a scene holds more relations than one caption states){}.",
            num(&c["images"]),
            esc(c["captioner"]["relation"].as_str().unwrap_or("?")),
            code("strata caption --from images"),
            pct(&a["scene_accuracy"]),
            pct(&a["element_precision"]),
            pct(&a["element_recall"]),
            pct(&a["element_f1"]),
            pct(&a["triple_precision"]),
            num(&a["triples_stated"]),
            pct(&a["synth_triples_also_stated"]),
            if a["held_out"].as_bool() == Some(false) { " (on the captioner's own training or validation scenes: not held out)" } else { "" },
        ));
        doc.p_html(&format!(
            "Candidate the golden rule chose: {}. Corrections logged: {} ({}), changing {} captions. Exactly equal to the synthetic ground truth, of {}: scene {}, relation {}, elements {}, relation triples {}.",
            esc(&counts(&c["golden_rule_choice"])),
            num(&c["corrections"]),
            esc(&counts(&c["corrections_by_rule"])),
            num(&c["captions_changed_by_corrections"]),
            num(&eq["of"]),
            num(&eq["scene"]),
            num(&eq["relation"]),
            num(&eq["elements"]),
            num(&eq["relation_triples"]),
        ));
        let mut t = Table::new([
            "scene",
            "relation",
            "elements",
            "flat (traditional) caption",
        ]);
        if let Some(ex) = c["examples"].as_object() {
            for e in ex.values() {
                let els: Vec<&str> = e["elements"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                t.row(vec![
                    Cell::text(e["scene"].as_str().unwrap_or("")),
                    Cell::text(e["relation"].as_str().unwrap_or("")),
                    Cell::text(&els.join(", ")),
                    Cell::text(e["text"].as_str().unwrap_or("")),
                ]);
            }
        }
        doc.table(&t);
    }
    doc.h2("Training loss");
    match loss_svg(run) {
        Some(svg) => {
            doc.svg(&svg);
        }
        None => {
            doc.note("No training log (runs/*/log.jsonl) could be read.");
        }
    }
    doc.h2("One test scene per class (also grids.png)");
    doc.table(&grid);
    doc.rule();
    strata_eval::report::append_sections(&mut doc, &eval, &Metric::ALL, plan.test_images())?;
    doc.write(&run.join("report.html"))
        .with_context(|| format!("writing {}", run.join("report.html").display()))?;
    Ok(serde_json::json!({
        "report": run.join("report.html").display().to_string(),
        "grids": run.join("grids.png").display().to_string(),
        "verdict": lines,
    }))
}

#[cfg(test)]
mod tests {
    use super::{stage_summary, verdict};
    use serde_json::json;

    #[test]
    fn stage_summaries_are_sentences_with_the_key_numbers() {
        let t = json!({"captions": "hierarchical", "steps": 396, "steps_this_invocation": 96,
            "resumed": true, "batch": 8, "lr": 0.001, "lora_rank": 8,
            "lora_targets": ["attention", "proj"], "final_loss": 0.12346,
            "seconds_per_step": 0.477, "output": "x"});
        let s = stage_summary("4-train-hierarchical", &t);
        assert_eq!(s, "Trained a rank-8 LoRA (attention, proj) on the hierarchical captions: 396 steps of batch 8 at learning rate 0.001, final loss 0.1235. Resumed from a checkpoint: 96 steps ran in the last invocation. 0.48 s per step.");
        let g = json!({"images": 11, "written_now": 11, "kept_from_earlier": 0, "steps": 25,
            "cfg": 5.0, "lora_adapters": 64});
        assert_eq!(stage_summary("5-generate-flat", &g), "Generated 11 test images from their flat captions with the flat LoRA (64 adapted layers): 25 DDIM steps, guidance 5; 11 written now, 0 kept from an earlier run.");
        let e = json!({"real_images": 11, "segmenter_steps": 600,
            "segmenter": {"pixel_accuracy": 0.9123, "mean_iou": 0.5},
            "weights": {"inception": null, "clip": "/w/clip"}});
        assert_eq!(stage_summary("7-eval", &e), "Scored both generated sets against the 11 real test images. The segmenter (600 steps) reaches 91.2% pixel accuracy and 50.0% mIoU on held-out synthetic scenes. Metric weights given: clip.");
        // unknown fields do not panic
        assert_eq!(stage_summary("1-synth", &json!({})), "Drew ? synthetic scenes of ? classes at ? px (seed ?), with their ground-truth masks and relation triples.");
    }

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
