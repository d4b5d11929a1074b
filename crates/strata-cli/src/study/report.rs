//! The study's outputs: `results.json` (everything [`Results`] holds), `table.txt` (arms ×
//! metrics with intervals, the paired differences and verdicts, the judge's accuracy, the
//! cost) and `report.html` (the same, with one test scene per class as real | each arm).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use strata_eval::images::read_image;
use strata_report::html::{esc, img_png};
use strata_report::{Cell, Document, Table};

use super::results::{fmt, fmt_diff, Results};
use super::Plan;

fn cell(iv: Option<&strata_eval::stats::Interval>, percent: bool) -> String {
    match iv {
        Some(i) => format!(
            "{} [{}, {}]",
            fmt(i.estimate, percent),
            fmt(i.low, percent),
            fmt(i.high, percent)
        ),
        None => "n/c".into(),
    }
}

/// Seconds spent per kind of stage, from the stage markers.
fn costs(summaries: &[(String, Value)]) -> Vec<(String, f64, usize)> {
    let mut out: Vec<(String, f64, usize)> = vec![];
    for (name, v) in summaries {
        let kind = name.split('-').next().unwrap_or(name).to_string();
        let s = v["seconds"].as_f64().unwrap_or(0.0);
        match out.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(e) => {
                e.1 += s;
                e.2 += 1;
            }
            None => out.push((kind, s, 1)),
        }
    }
    out
}

/// With captions from the pixels: how the caption stage did against the synthetic truth.
fn caption_stage_line(summaries: &[(String, Value)]) -> Option<String> {
    let cs = &summaries.iter().find(|(n, _)| n == "data")?.1["caption_stage"];
    if cs.is_null() {
        return None;
    }
    let pct = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{:.1}%", 100.0 * x))
            .unwrap_or_else(|| "n/a".into())
    };
    let part = |name: &str| {
        let s = &cs[name];
        let a = &s["accuracy"];
        format!(
            "{name} ({} images): scene accuracy {}, element F1 {}, stated relation triples holding on the true mask {} ({} stated)",
            s["images"],
            pct(&a["scene_accuracy"]),
            pct(&a["element_f1"]),
            pct(&a["triple_precision"]),
            a["triples_stated"]
        )
    };
    Some(format!(
        "Captions from the pixels (the caption stage, measured against the synthesiser's captions{}): {}; {}",
        if cs["train"]["accuracy"]["held_out"] == Value::Bool(true) {
            "; scenes the captioner never saw"
        } else {
            ""
        },
        part("train"),
        part("test")
    ))
}

/// The text table (also printed by the command).
pub fn table(plan: &Plan, r: &Results, summaries: &[(String, Value)]) -> String {
    let mut t = String::new();
    let c = &plan.config;
    let _ = writeln!(
        t,
        "strata study ({} preset): {} test images, seeds {:?} of {:?} evaluated; {:.0}% intervals from a two-level bootstrap over training seeds and test images ({} resamples; {} for sFID*/sKID*)",
        c.preset,
        r.test_images,
        r.seeds_done,
        r.seeds,
        100.0 * r.confidence,
        r.resamples,
        r.set_resamples
    );
    if r.seeds_done.is_empty() {
        let _ = writeln!(
            t,
            "no seed is evaluated yet: rerun the command to continue the study"
        );
        return t;
    }
    let w0 = r
        .metrics
        .iter()
        .map(|m| m.heading.chars().count())
        .max()
        .unwrap_or(6)
        .max(8);
    let w = 30;
    let _ = write!(t, "{:<w0$}", "metric");
    for a in &r.arms {
        let _ = write!(t, " | {a:<w$}");
    }
    let _ = writeln!(t, " | real test images");
    for m in &r.metrics {
        let _ = write!(t, "{:<w0$}", m.heading);
        for a in &m.arms {
            let _ = write!(t, " | {:<w$}", cell(a.interval.as_ref(), m.percent));
        }
        let _ = writeln!(
            t,
            " | {}",
            m.real.map(|x| fmt(x, m.percent)).unwrap_or_default()
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Paired differences (arm − {}; same test captions, same noise per image):",
        r.reference
    );
    for m in &r.metrics {
        for d in &m.differences {
            let _ = writeln!(t, "  {}: {}", m.heading, d.verdict);
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Per seed (all test images):");
    for m in &r.metrics {
        for a in &m.arms {
            let vals: Vec<String> = a
                .per_seed
                .iter()
                .map(|v| v.map(|x| fmt(x, m.percent)).unwrap_or_else(|| "n/c".into()))
                .collect();
            let _ = writeln!(t, "  {} {}: {}", m.heading, a.arm, vals.join(", "));
        }
    }
    if let Some(s) = &r.segmenter {
        let _ = writeln!(
            t,
            "\nRelation fidelity's judge (segmenter) on {} held-out synthetic scenes: mIoU {:.1}%, pixel accuracy {:.1}%, scene accuracy {:.1}%; relations holding on the true masks {:.1}%, on its predicted masks {:.1}%",
            s.held_out_scenes,
            100.0 * s.mean_iou,
            100.0 * s.pixel_accuracy,
            100.0 * s.scene_accuracy,
            100.0 * s.relations_on_truth,
            100.0 * s.relations_on_prediction
        );
    }
    if let Some(line) = caption_stage_line(summaries) {
        let _ = writeln!(t, "\n{line}");
    }
    let cost = costs(summaries);
    if !cost.is_empty() {
        let parts: Vec<String> = cost
            .iter()
            .map(|(k, s, n)| {
                format!(
                    "{k} {:.1} min ({n} stage{})",
                    s / 60.0,
                    if *n == 1 { "" } else { "s" }
                )
            })
            .collect();
        let total: f64 = cost.iter().map(|c| c.1).sum();
        let _ = writeln!(
            t,
            "Cost (wall time of the stages run so far): {}; total {:.1} min",
            parts.join(", "),
            total / 60.0
        );
    }
    t
}

fn grid_png(
    run: &Path,
    plan: &Plan,
    seed: u64,
    records: &[strata_caption::MetadataRecord],
) -> Option<(Vec<u8>, usize, usize)> {
    // one test scene per class: real, then each arm
    let mut picked: Vec<&strata_caption::MetadataRecord> = vec![];
    for r in records {
        if !picked.iter().any(|p| p.scene == r.scene) {
            picked.push(r);
        }
    }
    let side = plan.resolution;
    let cols = 1 + plan.config.arms.len();
    let (w, h) = (cols * side, picked.len() * side);
    let mut px = vec![255u8; w * h * 3];
    for (row, r) in picked.iter().enumerate() {
        let mut dirs = vec![plan.test_dir(run)];
        dirs.extend(plan.config.arms.iter().map(|a| plan.gen_dir(run, *a, seed)));
        for (col, d) in dirs.iter().enumerate() {
            let Ok(img) = read_image(&d.join(&r.file_name)) else {
                continue;
            };
            let img = strata_image::resize(&img, side, side, strata_image::Filter::Bicubic);
            for y in 0..side {
                let dst = ((row * side + y) * w + col * side) * 3;
                let src = y * side * 3;
                px[dst..dst + side * 3].copy_from_slice(&img.data[src..src + side * 3]);
            }
        }
    }
    let png = strata_image::encode_png_rgb8(Path::new("grid.png"), w, h, &px).ok()?;
    Some((png, w, h))
}

/// Writes `results.json`, `table.txt` and `report.html`; returns the table.
pub fn write(
    run: &Path,
    plan: &Plan,
    r: &Results,
    summaries: &[(String, Value)],
) -> anyhow::Result<String> {
    let text = table(plan, r, summaries);
    crate::stages::write_atomic(&run.join("table.txt"), text.as_bytes())?;
    let json = serde_json::to_string_pretty(r)? + "\n";
    crate::stages::write_atomic(&run.join("results.json"), json.as_bytes())?;
    let mut doc = Document::new("strata study");
    doc.h1("strata study: does the caption format matter?");
    let c = &plan.config;
    doc.p(&format!(
        "{} preset; arms: {}; training seeds {:?} ({:?} evaluated); {} test images; LoRA {} steps, batch {}, rank {}; {} DDIM steps, CFG {}. Every arm trains on the same images in the same order and generates the same test captions from the same noise, so each difference is paired per test image.",
        c.preset,
        c.arms.iter().map(|a| format!("{} ({})", a.id(), a.describe())).collect::<Vec<_>>().join("; "),
        r.seeds,
        r.seeds_done,
        r.test_images,
        c.train.steps,
        c.train.batch,
        c.train.rank,
        c.generate.steps,
        c.generate.cfg
    ));
    if !plan.compositions.is_empty() {
        doc.p(&format!(
            "Test compositions (no training scene holds one): {}",
            plan.compositions
                .iter()
                .map(|c| c.label())
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    doc.h2("Metrics per arm");
    let mut header = vec!["metric".to_string()];
    header.extend(r.arms.iter().cloned());
    header.push("real test images".into());
    let mut t = Table::new(header);
    for m in &r.metrics {
        let mut row = vec![Cell::text(&m.heading).with_title(&m.note)];
        for a in &m.arms {
            row.push(Cell::value(&cell(a.interval.as_ref(), m.percent)));
        }
        row.push(Cell::value(
            &m.real.map(|x| fmt(x, m.percent)).unwrap_or_default(),
        ));
        t.row(row);
    }
    doc.table(&t);
    doc.note(&format!(
        "Estimate [low, high]: {:.0}% percentile intervals over training seeds and test images.",
        100.0 * r.confidence
    ));
    doc.h2(&format!("Paired differences from {}", r.reference));
    let mut t = Table::new(["metric", "arm", "difference [interval]", "verdict"]);
    for m in &r.metrics {
        for d in &m.differences {
            let iv = d
                .interval
                .map(|i| {
                    format!(
                        "{} [{}, {}]",
                        fmt_diff(i.estimate, m.percent),
                        fmt_diff(i.low, m.percent),
                        fmt_diff(i.high, m.percent)
                    )
                })
                .unwrap_or_else(|| "n/c".into());
            let v = match &d.winner {
                Some(w) => format!("{w} better"),
                None => "no difference detected".into(),
            };
            t.row(vec![
                Cell::text(&m.heading),
                Cell::text(&d.arm),
                Cell::value(&iv),
                Cell::text(&v),
            ]);
        }
    }
    doc.table(&t);
    if let Some(s) = &r.segmenter {
        doc.p(&format!(
            "Relation fidelity is judged by a segmenter measured on {} held-out synthetic scenes: mIoU {:.1}%, pixel accuracy {:.1}%, scene accuracy {:.1}%.",
            s.held_out_scenes,
            100.0 * s.mean_iou,
            100.0 * s.pixel_accuracy,
            100.0 * s.scene_accuracy
        ));
    }
    if let Some(line) = caption_stage_line(summaries) {
        doc.h2("Caption stage");
        doc.p(&line);
    }
    if let Some(&seed) = r.seeds_done.first() {
        if let Ok(recs) = super::data::test_records(plan, run) {
            if let Some((png, w, h)) = grid_png(run, plan, seed, &recs) {
                doc.h2(&format!(
                    "One test scene per class (seed {seed}): real | {}",
                    r.arms.join(" | ")
                ));
                doc.p_html(&img_png(&png, w * 2, h * 2));
            }
        }
    }
    doc.h2("Cost");
    doc.p(&esc(text.lines().last().unwrap_or_default()));
    doc.write(&run.join("report.html"))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", run.join("report.html").display()))?;
    Ok(text)
}
