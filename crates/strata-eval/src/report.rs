//! The outputs: `metrics.json`, the paper-shaped text table and the HTML report with image
//! grids and a relation-fidelity bar chart (SVG). The HTML and the chart are written with
//! `strata-report` (the same writer as the demo report); every file is written atomically.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use strata_report::chart::{BarChart, BarSeries, Format};
use strata_report::html::{bold, code, esc, img_png};
use strata_report::{Cell, Document, Table};

use crate::error::EvalError;
use crate::images::{list_images, pair_key, read_image};
use crate::run::{EvalOptions, EvalReport, Metric, MetricValue};

fn fmt_value(m: Metric, v: f64) -> String {
    match m {
        Metric::RelationFidelity => format!("{:.1}%", 100.0 * v),
        Metric::SynthKid | Metric::Kid => format!("{v:.4}"),
        _ => format!("{v:.3}"),
    }
}

/// The comparison table (rows: method × caption kind; columns: metrics with ↑/↓).
pub fn table_text(r: &EvalReport, metrics: &[Metric]) -> String {
    let mut head = vec!["Method".to_string(), "Captions".to_string()];
    head.extend(metrics.iter().map(|m| r.heading(*m)));
    let mut rows = vec![head];
    for s in &r.sets {
        let mut row = vec![s.method.clone(), s.caption_kind.clone()];
        for m in metrics {
            let cell = match s.metrics.get(m.id()) {
                Some(v) => match (v.value, v.std) {
                    (Some(x), Some(sd)) => format!("{}±{}", fmt_value(*m, x), fmt_value(*m, sd)),
                    (Some(x), None) => fmt_value(*m, x),
                    _ => "n/c".into(),
                },
                None => "-".into(),
            };
            row.push(cell);
        }
        rows.push(row);
    }
    if let Some(f) = &r.real_relation_fidelity {
        let mut row = vec!["real images".to_string(), "(reference)".to_string()];
        for m in metrics {
            row.push(match (m, f.overall.share) {
                (Metric::RelationFidelity, Some(x)) => fmt_value(*m, x),
                _ => "".into(),
            });
        }
        rows.push(row);
    }
    let ncol = rows[0].len();
    let widths: Vec<usize> = (0..ncol)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(cells.join(" | ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("-|-"));
            out.push('\n');
        }
    }
    out.push_str("\nn/c = not computed:\n");
    for m in metrics {
        let note = r
            .sets
            .iter()
            .filter_map(|s| s.metrics.get(m.id()))
            .find(|v| v.value.is_none())
            .map(|v| v.note.clone());
        if let Some(n) = note {
            let _ = writeln!(out, "  {}: {n}", r.heading(*m));
        }
    }
    if metrics.contains(&Metric::SynthFid) || metrics.contains(&Metric::SynthKid) {
        out.push_str("  * sFID/sKID: strata-synthetic FID/KID on the strata segmenter's features; NOT comparable to standard FID/KID.\n");
    }
    if !r.protocol.is_empty() {
        out.push_str("\nProtocol:\n");
        for (k, v) in &r.protocol {
            let _ = writeln!(out, "  {k}: {v}");
        }
    }
    if let Some(q) = &r.segmenter {
        let _ = writeln!(
            out,
            "\nSegmenter (held-out synthetic scenes, n={}): pixel accuracy {:.1}%, mIoU {:.1}%, scene accuracy {:.1}%; relations holding on truth {:.1}%, on its prediction {:.1}%",
            q.held_out_scenes,
            100.0 * q.pixel_accuracy,
            100.0 * q.mean_iou,
            100.0 * q.scene_accuracy,
            100.0 * q.relations_on_truth,
            100.0 * q.relations_on_prediction
        );
        if !q.segmenter.is_empty() {
            let _ = writeln!(out, "  segmenter: {}", q.segmenter);
        }
    }
    out
}

/// A 128×128 PNG thumbnail of the image at `path` (None when it cannot be read).
fn thumb_png(path: &Path, side: usize) -> Option<Vec<u8>> {
    let img = read_image(path).ok()?;
    let t = strata_image::resize(&img, side, side, strata_image::Filter::Bilinear);
    strata_image::encode_png_rgb8(path, side, side, &t.data).ok()
}

/// Grouped bar chart of relation fidelity per relation type (one bar per set, plus the real
/// images as the reference), as standalone SVG.
pub fn fidelity_svg(r: &EvalReport) -> Option<String> {
    let mut series: Vec<(String, &crate::fidelity::RelationFidelity)> = r
        .sets
        .iter()
        .filter_map(|s| s.relation_fidelity.as_ref().map(|f| (s.label.clone(), f)))
        .collect();
    if let Some(f) = &r.real_relation_fidelity {
        series.push(("real (reference)".into(), f));
    }
    let rels: BTreeSet<&String> = series
        .iter()
        .flat_map(|(_, f)| f.per_relation.keys())
        .collect();
    if rels.is_empty() {
        return None;
    }
    let mut chart = BarChart::new(
        rels.iter().map(|s| s.to_string()).collect(),
        "relation type",
        "requested triples honoured",
    )
    .y_range(0.0, 1.0)
    .y_format(Format::Percent);
    for (label, f) in &series {
        let values = rels
            .iter()
            .map(|rel| f.per_relation.get(*rel).and_then(|x| x.share))
            .collect();
        chart = chart.series(BarSeries::new(label, values));
    }
    Some(chart.to_svg())
}

/// A table value with its std, formatted for the metric.
fn value_cell(m: Metric, v: &MetricValue) -> Cell {
    match v.value {
        Some(x) => {
            let sd = v
                .std
                .map(|sd| format!(" ± {}", fmt_value(m, sd)))
                .unwrap_or_default();
            Cell::value(&format!("{}{sd}", fmt_value(m, x))).with_title(&v.note)
        }
        None => Cell::muted("n/c").with_title(&v.note),
    }
}

/// The eval report's sections, appended to `doc`: the comparison table with its notes, the
/// protocol, the segmenter's quality, relation fidelity per relation type (chart) and per
/// scene, an image grid (real | each generated set) of the first `grid_scenes` real images
/// that have a generated counterpart, and the skipped items. `metrics` are the table's
/// columns.
pub fn append_sections(
    doc: &mut Document,
    r: &EvalReport,
    metrics: &[Metric],
    grid_scenes: usize,
) -> Result<(), EvalError> {
    doc.h1("strata eval");
    doc.p_html(&format!(
        "Real images: {} ({} images).",
        code(&r.real.display().to_string()),
        r.real_images
    ));
    doc.h2("Comparison");
    let mut head = vec!["Method".to_string(), "Captions".to_string()];
    head.extend(metrics.iter().map(|m| r.heading(*m)));
    let mut t = Table::new(head);
    for s in &r.sets {
        let mut row = vec![Cell::text(&s.method), Cell::text(&s.caption_kind)];
        for m in metrics {
            row.push(match s.metrics.get(m.id()) {
                Some(v) => value_cell(*m, v),
                None => Cell::value("-"),
            });
        }
        t.row(row);
    }
    if let Some(f) = &r.real_relation_fidelity {
        let mut row = vec![Cell::text("real images"), Cell::text("(reference)")];
        for m in metrics {
            row.push(match (m, f.overall.share) {
                (Metric::RelationFidelity, Some(x)) => Cell::value(&fmt_value(*m, x)),
                _ => Cell::empty(),
            });
        }
        t.row(row);
    }
    doc.table(&t);
    doc.list_html(
        metrics.iter().filter_map(|m| {
            r.sets
                .iter()
                .find_map(|s| s.metrics.get(m.id()))
                .map(|v| format!("{}: {}", bold(&r.heading(*m)), esc(&v.note)))
        }),
        true,
    );
    doc.h2("Protocol");
    doc.list_html(
        r.protocol
            .iter()
            .map(|(k, v)| format!("{}: {}", bold(k), esc(v))),
        true,
    );
    if let Some(q) = &r.segmenter {
        doc.p_html(&format!("Segmenter on {} held-out synthetic scenes: pixel accuracy <b>{:.1}%</b>, mIoU <b>{:.1}%</b>, scene accuracy {:.1}%. Relations holding on the true masks {:.1}%, on the predicted masks {:.1}% (the ceiling relation fidelity can reach with this segmenter).",
            q.held_out_scenes, 100.0 * q.pixel_accuracy, 100.0 * q.mean_iou, 100.0 * q.scene_accuracy, 100.0 * q.relations_on_truth, 100.0 * q.relations_on_prediction));
        if !q.segmenter.is_empty() {
            doc.p_html(&format!("Segmenter: {}.", esc(&q.segmenter)));
        }
    }
    if let Some(svg) = fidelity_svg(r) {
        doc.h2("Relation fidelity per relation type");
        doc.svg(&svg);
    }
    // per-scene table of relation fidelity
    let scenes: BTreeSet<&String> = r
        .sets
        .iter()
        .filter_map(|s| s.relation_fidelity.as_ref())
        .flat_map(|f| f.per_scene.keys())
        .collect();
    if !scenes.is_empty() {
        doc.h2("Relation fidelity per scene");
        let mut t = Table::new(
            std::iter::once("Scene".to_string()).chain(r.sets.iter().map(|s| s.label.clone())),
        );
        for sc in scenes {
            let mut row = vec![Cell::text(sc)];
            for s in &r.sets {
                let cell = s
                    .relation_fidelity
                    .as_ref()
                    .and_then(|f| f.per_scene.get(sc))
                    .map(|x| format!("{}/{}", x.honoured, x.requested))
                    .unwrap_or_default();
                row.push(Cell::value(&cell));
            }
            t.row(row);
        }
        doc.table(&t);
    }
    // image grids
    doc.h2("Images");
    let mut t = Table::new(
        ["scene".to_string(), "real".to_string()]
            .into_iter()
            .chain(r.sets.iter().map(|s| s.label.clone())),
    )
    .class("grid");
    let real_rels = list_images(&r.real)?;
    let gen_rels: Vec<Vec<String>> = r
        .sets
        .iter()
        .map(|s| list_images(&s.dir).unwrap_or_default())
        .collect();
    let thumb = |p: &Path| match thumb_png(p, 128) {
        Some(png) => Cell::html(img_png(&png, 128, 128)),
        None => Cell::muted("unreadable"),
    };
    let mut shown = 0;
    for rel in &real_rels {
        if shown >= grid_scenes {
            break;
        }
        let key = pair_key(rel);
        let found: Vec<Option<&String>> = gen_rels
            .iter()
            .map(|rs| rs.iter().find(|g| pair_key(g) == key))
            .collect();
        if found.iter().all(|f| f.is_none()) && !r.sets.is_empty() {
            continue;
        }
        shown += 1;
        let mut row = vec![Cell::text(&key), thumb(&r.real.join(rel))];
        for (s, f) in r.sets.iter().zip(&found) {
            row.push(match f {
                Some(p) => thumb(&s.dir.join(p)),
                None => Cell::muted("missing"),
            });
        }
        t.row(row);
    }
    doc.table(&t);
    if !r.failed.is_empty() {
        doc.h2("Skipped");
        doc.list_html(
            r.failed
                .iter()
                .map(|(f, e)| format!("{}: {}", code(f), esc(e))),
            false,
        );
    }
    Ok(())
}

/// The HTML report of `strata eval`.
pub fn report_html(r: &EvalReport, opts: &EvalOptions) -> Result<String, EvalError> {
    let mut doc = Document::new("strata eval report");
    append_sections(&mut doc, r, &opts.metrics, opts.grid_scenes)?;
    Ok(doc.render())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    strata_io::atomic::write(path, bytes).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        what: "writing".into(),
        source,
    })
}

/// `per_image.jsonl`: one JSON object per image, the real folder's first (`"set": "real"`),
/// then each generated set's in table order ([`crate::per_image::PerImageLine`]).
pub fn per_image_jsonl(r: &EvalReport) -> String {
    use crate::per_image::PerImageLine;
    let mut out = String::new();
    let rows = r.real_per_image.iter().map(|v| ("real", v)).chain(
        r.sets
            .iter()
            .flat_map(|s| s.per_image.iter().map(|v| (s.label.as_str(), v))),
    );
    for (set, v) in rows {
        let line = PerImageLine {
            set: set.to_string(),
            values: v.clone(),
        };
        out.push_str(&serde_json::to_string(&line).expect("values serialise"));
        out.push('\n');
    }
    out
}

/// Write `metrics.json`, `table.txt`, `per_image.jsonl`, `relation_fidelity.svg` and `report.html` into
/// `opts.out`; returns the table text.
pub fn write_outputs(r: &EvalReport, opts: &EvalOptions) -> Result<String, EvalError> {
    let json = serde_json::to_string_pretty(r).expect("report serialises") + "\n";
    write_atomic(&opts.out.join("metrics.json"), json.as_bytes())?;
    let table = table_text(r, &opts.metrics);
    write_atomic(&opts.out.join("table.txt"), table.as_bytes())?;
    if let Some(svg) = fidelity_svg(r) {
        write_atomic(&opts.out.join("relation_fidelity.svg"), svg.as_bytes())?;
    }
    write_atomic(
        &opts.out.join("per_image.jsonl"),
        per_image_jsonl(r).as_bytes(),
    )?;
    let html = report_html(r, opts)?;
    write_atomic(&opts.out.join("report.html"), html.as_bytes())?;
    Ok(table)
}
