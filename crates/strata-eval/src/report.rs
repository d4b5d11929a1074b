//! The outputs: `metrics.json`, the paper-shaped text table and the HTML report with image
//! grids and a relation-fidelity plot (SVG).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::EvalError;
use crate::images::{list_pngs, pair_key, read_png, resize};
use crate::run::{EvalOptions, EvalReport, Metric};

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
    head.extend(metrics.iter().map(|m| m.heading().to_string()));
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
            let _ = writeln!(out, "  {}: {n}", m.heading());
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
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn thumb_uri(path: &Path, side: usize) -> Option<String> {
    let img = read_png(path).ok()?;
    let t = resize(&img, side, side);
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, side as u32, side as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().ok()?;
        w.write_image_data(&t.data).ok()?;
    }
    Some(format!("data:image/png;base64,{}", base64(&buf)))
}

const PALETTE: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

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
    let (w, h, left, bottom, top) = (760.0, 320.0, 50.0, 70.0, 20.0);
    let group = (w - left - 20.0) / rels.len() as f64;
    let bar = (group * 0.8) / series.len() as f64;
    let plot_h = h - bottom - top;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11">"#,
        h + 20.0 * series.len() as f64
    );
    for i in 0..=4 {
        let y = top + plot_h * (1.0 - i as f64 / 4.0);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}%</text>"##,
            w - 20.0,
            left - 4.0,
            y + 4.0,
            i * 25
        );
    }
    for (gi, rel) in rels.iter().enumerate() {
        let gx = left + gi as f64 * group + group * 0.1;
        for (si, (_, f)) in series.iter().enumerate() {
            if let Some(sh) = f.per_relation.get(*rel).and_then(|x| x.share) {
                let bh = plot_h * sh;
                let x = gx + si as f64 * bar;
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {:.1}%</title></rect>"#,
                    top + plot_h - bh,
                    bar * 0.95,
                    PALETTE[si % PALETTE.len()],
                    esc(rel),
                    100.0 * sh
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" transform="rotate(-30 {:.1} {:.1})">{}</text>"#,
            gx + group * 0.4,
            top + plot_h + 14.0,
            gx + group * 0.4,
            top + plot_h + 14.0,
            esc(rel)
        );
    }
    for (si, (label, _)) in series.iter().enumerate() {
        let y = h + 20.0 * si as f64 - 6.0;
        let _ = write!(
            s,
            r#"<rect x="{left}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            PALETTE[si % PALETTE.len()],
            left + 18.0,
            y,
            esc(label)
        );
    }
    s.push_str("</svg>");
    Some(s)
}

/// The HTML report: the table, the plot, and image grids (real | each generated set) for
/// the first `opts.grid_scenes` real images that have a generated counterpart.
pub fn report_html(r: &EvalReport, opts: &EvalOptions) -> Result<String, EvalError> {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>strata eval report</title><style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}.nc{color:#999}img{image-rendering:pixelated;border:1px solid #ccc}.grid td{text-align:center;vertical-align:top}.note{font-size:12px;color:#555}</style></head><body>");
    let _ = write!(
        h,
        "<h1>strata eval</h1><p>Real images: <code>{}</code> ({} images).</p>",
        esc(&r.real.display().to_string()),
        r.real_images
    );
    h.push_str("<h2>Comparison</h2><table><tr><th>Method</th><th>Captions</th>");
    for m in &opts.metrics {
        let _ = write!(h, "<th>{}</th>", esc(m.heading()));
    }
    h.push_str("</tr>");
    for s in &r.sets {
        let _ = write!(
            h,
            "<tr><td class=l>{}</td><td class=l>{}</td>",
            esc(&s.method),
            esc(&s.caption_kind)
        );
        for m in &opts.metrics {
            match s.metrics.get(m.id()) {
                Some(v) => match v.value {
                    Some(x) => {
                        let sd = v
                            .std
                            .map(|sd| format!(" ± {}", fmt_value(*m, sd)))
                            .unwrap_or_default();
                        let _ = write!(
                            h,
                            "<td title=\"{}\">{}{}</td>",
                            esc(&v.note),
                            fmt_value(*m, x),
                            sd
                        );
                    }
                    None => {
                        let _ = write!(h, "<td class=nc title=\"{}\">n/c</td>", esc(&v.note));
                    }
                },
                None => h.push_str("<td>-</td>"),
            }
        }
        h.push_str("</tr>");
    }
    if let Some(f) = &r.real_relation_fidelity {
        h.push_str("<tr><td class=l>real images</td><td class=l>(reference)</td>");
        for m in &opts.metrics {
            match (m, f.overall.share) {
                (Metric::RelationFidelity, Some(x)) => {
                    let _ = write!(h, "<td>{}</td>", fmt_value(*m, x));
                }
                _ => h.push_str("<td></td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><ul class=note>");
    for m in &opts.metrics {
        if let Some(v) = r.sets.iter().filter_map(|s| s.metrics.get(m.id())).next() {
            let _ = write!(h, "<li><b>{}</b>: {}</li>", esc(m.heading()), esc(&v.note));
        }
    }
    h.push_str("</ul><h2>Protocol</h2><ul class=note>");
    for (k, v) in &r.protocol {
        let _ = write!(h, "<li><b>{}</b>: {}</li>", esc(k), esc(v));
    }
    h.push_str("</ul>");
    if let Some(q) = &r.segmenter {
        let _ = write!(h, "<p>Segmenter on {} held-out synthetic scenes: pixel accuracy <b>{:.1}%</b>, mIoU <b>{:.1}%</b>, scene accuracy {:.1}%. Relations holding on the true masks {:.1}%, on the predicted masks {:.1}% (the ceiling relation fidelity can reach with this segmenter).</p>",
            q.held_out_scenes, 100.0 * q.pixel_accuracy, 100.0 * q.mean_iou, 100.0 * q.scene_accuracy, 100.0 * q.relations_on_truth, 100.0 * q.relations_on_prediction);
    }
    if let Some(svg) = fidelity_svg(r) {
        h.push_str("<h2>Relation fidelity per relation type</h2>");
        h.push_str(&svg);
    }
    // per-scene table of relation fidelity
    let scenes: BTreeSet<&String> = r
        .sets
        .iter()
        .filter_map(|s| s.relation_fidelity.as_ref())
        .flat_map(|f| f.per_scene.keys())
        .collect();
    if !scenes.is_empty() {
        h.push_str("<h2>Relation fidelity per scene</h2><table><tr><th>Scene</th>");
        for s in &r.sets {
            let _ = write!(h, "<th>{}</th>", esc(&s.label));
        }
        h.push_str("</tr>");
        for sc in scenes {
            let _ = write!(h, "<tr><td class=l>{}</td>", esc(sc));
            for s in &r.sets {
                let cell = s
                    .relation_fidelity
                    .as_ref()
                    .and_then(|f| f.per_scene.get(sc))
                    .map(|x| format!("{}/{}", x.honoured, x.requested))
                    .unwrap_or_default();
                let _ = write!(h, "<td>{cell}</td>");
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    // image grids
    h.push_str("<h2>Images</h2><table class=grid><tr><th>scene</th><th>real</th>");
    for g in &opts.generated {
        let _ = write!(h, "<th>{}</th>", esc(&g.label));
    }
    h.push_str("</tr>");
    let real_rels = list_pngs(&opts.real)?;
    let gen_rels: Vec<Vec<String>> = opts
        .generated
        .iter()
        .map(|g| list_pngs(&g.dir).unwrap_or_default())
        .collect();
    let mut shown = 0;
    for rel in &real_rels {
        if shown >= opts.grid_scenes {
            break;
        }
        let key = pair_key(rel);
        let found: Vec<Option<&String>> = gen_rels
            .iter()
            .map(|rs| rs.iter().find(|g| pair_key(g) == key))
            .collect();
        if found.iter().all(|f| f.is_none()) && !opts.generated.is_empty() {
            continue;
        }
        shown += 1;
        let _ = write!(h, "<tr><td class=l>{}</td>", esc(&key));
        let cell = |p: &Path| {
            thumb_uri(p, 128)
                .map(|u| format!("<img src=\"{u}\" width=128 height=128>"))
                .unwrap_or_else(|| "unreadable".into())
        };
        let _ = write!(h, "<td>{}</td>", cell(&opts.real.join(rel)));
        for (g, f) in opts.generated.iter().zip(&found) {
            match f {
                Some(p) => {
                    let _ = write!(h, "<td>{}</td>", cell(&g.dir.join(p)));
                }
                None => h.push_str("<td class=nc>missing</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    if !r.failed.is_empty() {
        h.push_str("<h2>Skipped</h2><ul>");
        for (f, e) in &r.failed {
            let _ = write!(h, "<li><code>{}</code>: {}</li>", esc(f), esc(e));
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    let io = |what: &str, source| EvalError::Io {
        path: path.to_path_buf(),
        what: what.into(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| io("creating the output folder", e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))
}

/// Write `metrics.json`, `table.txt`, `relation_fidelity.svg` and `report.html` into
/// `opts.out`; returns the table text.
pub fn write_outputs(r: &EvalReport, opts: &EvalOptions) -> Result<String, EvalError> {
    let json = serde_json::to_string_pretty(r).expect("report serialises") + "\n";
    write_atomic(&opts.out.join("metrics.json"), json.as_bytes())?;
    let table = table_text(r, &opts.metrics);
    write_atomic(&opts.out.join("table.txt"), table.as_bytes())?;
    if let Some(svg) = fidelity_svg(r) {
        write_atomic(&opts.out.join("relation_fidelity.svg"), svg.as_bytes())?;
    }
    let html = report_html(r, opts)?;
    write_atomic(&opts.out.join("report.html"), html.as_bytes())?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
