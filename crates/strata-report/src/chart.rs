//! SVG charts: [`LineChart`] (curves over a numeric x axis) and [`BarChart`] (grouped bars
//! over categories), each with a framed plot area, grid lines at "nice" ticks (1, 2, 2.5 or
//! 5 × 10ᵏ), tick labels, axis labels, an optional title and a legend above the plot.
//!
//! The output is standalone SVG text (it has its own `xmlns`), so the same string can be
//! written to a `.svg` file or put inline into an HTML report. Every curve is a
//! `<polyline data-series="NAME">` and every bar a `<rect data-series="NAME"
//! data-category="CAT">`, each with a `<title>` tooltip, so tests and scripts can read the
//! drawing back. Non-finite values are left out: a curve breaks around them, a bar is not
//! drawn.

use std::fmt::Write as _;

use crate::html::esc;

/// Colours given to series without one, in order (Tableau 10).
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
    "#ff9da7", "#bab0ac",
];

const FONT: f64 = 11.0;
/// Rough width of one character of the 11 px sans-serif font, for layout.
const CHAR_W: f64 = 6.2;

/// How tick labels and tooltips print values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// As many decimals as the tick step needs.
    Auto,
    /// Value × 100 with a `%` sign.
    Percent,
    /// A fixed number of decimals.
    Fixed(usize),
}

impl Format {
    fn label(self, v: f64, step: f64) -> String {
        let decimals = |step: f64| -> usize {
            if !(step.is_finite() && step > 0.0) {
                return 2;
            }
            let mut d = (-step.log10().floor()).max(0.0) as usize;
            // 2.5 × 10ᵏ needs one decimal more than its exponent says
            let m = step / 10f64.powi(-(d as i32));
            if (m - m.round()).abs() > 1e-6 {
                d += 1;
            }
            d.min(12)
        };
        match self {
            Format::Auto => {
                let d = decimals(step);
                let s = format!("{v:.d$}");
                if s.trim_start_matches('-')
                    .chars()
                    .all(|c| c == '0' || c == '.')
                {
                    format!("{:.d$}", 0.0)
                } else {
                    s
                }
            }
            Format::Percent => format!("{:.*}%", decimals(step * 100.0), v * 100.0),
            Format::Fixed(d) => format!("{v:.d$}"),
        }
    }

    fn tooltip(self, v: f64) -> String {
        match self {
            Format::Percent => format!("{:.1}%", 100.0 * v),
            Format::Fixed(d) => format!("{v:.d$}"),
            Format::Auto => {
                if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
                    format!("{v:.4e}")
                } else {
                    format!("{:.4}", v)
                }
            }
        }
    }
}

/// The tick step for about `target` intervals over `span`: 1, 2, 2.5 or 5 × 10ᵏ.
pub fn nice_step(span: f64, target: usize) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 2.5 {
        2.5
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Tick values: the multiples of `step` within `[lo, hi]` (with a little tolerance).
pub fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let eps = step * 1e-9;
    let first = (lo / step - 1e-9).ceil() as i64;
    let mut out = Vec::new();
    let mut k = first;
    loop {
        let v = k as f64 * step;
        if v > hi + eps || out.len() > 1000 {
            break;
        }
        // avoid "-0"
        out.push(if v == 0.0 { 0.0 } else { v });
        k += 1;
    }
    out
}

/// A numeric axis: its label, an optional fixed lower/upper bound (else from the data,
/// widened to the nearest ticks) and how its ticks print.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub label: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub format: Format,
}

impl Axis {
    fn new(label: &str) -> Axis {
        Axis {
            label: label.to_string(),
            min: None,
            max: None,
            format: Format::Auto,
        }
    }

    /// `(lo, hi, step)` covering `data` (finite values only).
    fn resolve(&self, data: impl Iterator<Item = f64>) -> (f64, f64, f64) {
        let (mut dlo, mut dhi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in data.filter(|v| v.is_finite()) {
            dlo = dlo.min(v);
            dhi = dhi.max(v);
        }
        if dlo > dhi {
            (dlo, dhi) = (0.0, 1.0);
        }
        let mut lo = self.min.unwrap_or(dlo);
        let mut hi = self.max.unwrap_or(dhi);
        if hi <= lo {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            if self.max.is_none() {
                hi = lo + pad;
            } else {
                lo = hi - pad;
            }
        }
        let step = nice_step(hi - lo, 5);
        if self.min.is_none() {
            lo = (lo / step + 1e-9).floor() * step;
        }
        if self.max.is_none() {
            hi = (hi / step - 1e-9).ceil() * step;
        }
        (lo, hi, step)
    }
}

/// One named set of points (line chart) in a colour (default: the palette in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub colour: Option<String>,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_string(),
            colour: None,
            points,
        }
    }

    /// Sets the colour (any SVG colour, e.g. `#d62728`).
    pub fn colour(mut self, c: &str) -> Series {
        self.colour = Some(c.to_string());
        self
    }
}

/// The plot rectangle inside the drawing, in SVG user units (pixels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotArea {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

fn colour_of(c: &Option<String>, i: usize) -> String {
    c.clone()
        .unwrap_or_else(|| PALETTE[i % PALETTE.len()].to_string())
}

/// Lays the legend out in rows of at most `width`; returns `(x, row)` of each entry and
/// the number of rows.
fn legend_layout(names: &[&str], width: f64) -> (Vec<(f64, usize)>, usize) {
    let mut out = Vec::new();
    let (mut x, mut row) = (0.0, 0usize);
    for n in names {
        let w = 18.0 + CHAR_W * n.chars().count() as f64 + 16.0;
        if x > 0.0 && x + w > width {
            x = 0.0;
            row += 1;
        }
        out.push((x, row));
        x += w;
    }
    let rows = if names.is_empty() { 0 } else { row + 1 };
    (out, rows)
}

/// The parts both charts share: title, legend, frame, grid, ticks and axis labels.
struct Frame<'a> {
    width: f64,
    height: f64,
    title: Option<&'a str>,
    legend: Vec<(&'a str, String)>,
    y: &'a Axis,
    x_label: &'a str,
    /// Extra space under the plot for x tick labels.
    x_tick_room: f64,
}

impl Frame<'_> {
    fn area(&self) -> PlotArea {
        let left = 70.0;
        let right = 16.0;
        let title_h = if self.title.is_some() { 24.0 } else { 0.0 };
        let names: Vec<&str> = self.legend.iter().map(|(n, _)| *n).collect();
        let (_, rows) = legend_layout(&names, self.width - left - right);
        let top = 12.0 + title_h + 18.0 * rows as f64;
        let bottom = self.x_tick_room + if self.x_label.is_empty() { 8.0 } else { 28.0 };
        PlotArea {
            left,
            top,
            width: (self.width - left - right).max(10.0),
            height: (self.height - top - bottom).max(10.0),
        }
    }

    /// The opening tag, title, legend, frame, horizontal grid and y ticks, axis labels.
    fn begin(&self, out: &mut String, y_lo: f64, y_hi: f64, y_step: f64) -> PlotArea {
        let a = self.area();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="{FONT}">"#,
            w = self.width,
            h = self.height
        );
        let _ = write!(
            out,
            r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
            self.width, self.height
        );
        if let Some(t) = self.title {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
                self.width / 2.0,
                esc(t)
            );
        }
        let names: Vec<&str> = self.legend.iter().map(|(n, _)| *n).collect();
        let (pos, _) = legend_layout(&names, a.width);
        let legend_top = a.top - 18.0 * (pos.iter().map(|p| p.1).max().map_or(0, |r| r + 1)) as f64;
        out.push_str(r#"<g class="legend">"#);
        for ((name, colour), (x, row)) in self.legend.iter().zip(&pos) {
            let (x, y) = (a.left + x, legend_top + 18.0 * *row as f64);
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                y + 1.0,
                x + 18.0,
                y + 11.0,
                esc(name)
            );
        }
        out.push_str("</g>");
        // horizontal grid and y ticks
        let py = |v: f64| a.top + a.height * (1.0 - (v - y_lo) / (y_hi - y_lo));
        out.push_str(r#"<g class="y-axis">"#);
        for v in ticks(y_lo, y_hi, y_step) {
            let y = py(v);
            let _ = write!(
                out,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                a.left,
                a.left + a.width,
                a.left - 4.0,
                a.left,
                a.left - 6.0,
                y + 4.0,
                esc(&self.y.format.label(v, y_step))
            );
        }
        if !self.y.label.is_empty() {
            let (x, y) = (14.0, a.top + a.height / 2.0);
            let _ = write!(
                out,
                r#"<text x="{x}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x} {y:.1})">{}</text>"#,
                esc(&self.y.label)
            );
        }
        out.push_str("</g>");
        if !self.x_label.is_empty() {
            let _ = write!(
                out,
                r#"<text class="x-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                a.left + a.width / 2.0,
                self.height - 8.0,
                esc(self.x_label)
            );
        }
        a
    }

    fn end(&self, out: &mut String, a: PlotArea) {
        let _ = write!(
            out,
            r##"<rect class="frame" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/></svg>"##,
            a.left, a.top, a.width, a.height
        );
    }
}

/// Curves over a numeric x axis.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: Option<String>,
    pub width: f64,
    pub height: f64,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

impl LineChart {
    /// A 640×320 chart with these axis labels.
    pub fn new(x_label: &str, y_label: &str) -> LineChart {
        LineChart {
            title: None,
            width: 640.0,
            height: 320.0,
            x: Axis::new(x_label),
            y: Axis::new(y_label),
            series: Vec::new(),
        }
    }

    pub fn title(mut self, t: &str) -> LineChart {
        self.title = Some(t.to_string());
        self
    }

    pub fn size(mut self, width: f64, height: f64) -> LineChart {
        self.width = width;
        self.height = height;
        self
    }

    /// Fixes the x range (else the data's, widened to ticks).
    pub fn x_range(mut self, lo: f64, hi: f64) -> LineChart {
        self.x.min = Some(lo);
        self.x.max = Some(hi);
        self
    }

    /// Fixes the y range (else the data's, widened to ticks).
    pub fn y_range(mut self, lo: f64, hi: f64) -> LineChart {
        self.y.min = Some(lo);
        self.y.max = Some(hi);
        self
    }

    /// Fixes only the lower end of the y axis (e.g. 0 for losses).
    pub fn y_min(mut self, lo: f64) -> LineChart {
        self.y.min = Some(lo);
        self
    }

    pub fn y_format(mut self, f: Format) -> LineChart {
        self.y.format = f;
        self
    }

    pub fn series(mut self, s: Series) -> LineChart {
        self.series.push(s);
        self
    }

    fn frame(&self) -> Frame<'_> {
        Frame {
            width: self.width,
            height: self.height,
            title: self.title.as_deref(),
            legend: self
                .series
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), colour_of(&s.colour, i)))
                .collect(),
            y: &self.y,
            x_label: &self.x.label,
            x_tick_room: 18.0,
        }
    }

    /// Where the plot rectangle lies in the drawing.
    pub fn plot_area(&self) -> PlotArea {
        self.frame().area()
    }

    /// The resolved `(lo, hi)` of the x and y axes.
    pub fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let (xl, xh, _) = self.x_ranges();
        let (yl, yh, _) = self.y_ranges();
        ((xl, xh), (yl, yh))
    }

    fn x_ranges(&self) -> (f64, f64, f64) {
        self.x.resolve(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0)),
        )
    }

    fn y_ranges(&self) -> (f64, f64, f64) {
        self.y.resolve(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
        )
    }

    /// The chart as standalone SVG.
    pub fn to_svg(&self) -> String {
        let (xl, xh, xs) = self.x_ranges();
        let (yl, yh, ys) = self.y_ranges();
        let f = self.frame();
        let mut out = String::new();
        let a = f.begin(&mut out, yl, yh, ys);
        let px = |v: f64| a.left + a.width * (v - xl) / (xh - xl);
        let py = |v: f64| a.top + a.height * (1.0 - (v - yl) / (yh - yl));
        // vertical grid and x ticks
        out.push_str(r#"<g class="x-axis">"#);
        for v in ticks(xl, xh, xs) {
            let x = px(v);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#e3e3e3"/><line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                a.top,
                a.top + a.height,
                a.top + a.height,
                a.top + a.height + 4.0,
                a.top + a.height + 16.0,
                esc(&self.x.format.label(v, xs))
            );
        }
        out.push_str("</g>");
        for (i, s) in self.series.iter().enumerate() {
            let colour = colour_of(&s.colour, i);
            // runs of finite points; points outside the ranges are clipped by the frame
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for &(x, y) in &s.points {
                if x.is_finite() && y.is_finite() {
                    runs.last_mut().expect("one run").push((x, y));
                } else if !runs.last().expect("one run").is_empty() {
                    runs.push(Vec::new());
                }
            }
            for run in runs.iter().filter(|r| !r.is_empty()) {
                let pts: Vec<String> = run
                    .iter()
                    .map(|&(x, y)| {
                        format!(
                            "{:.2},{:.2}",
                            px(x),
                            py(y.clamp(yl - (yh - yl), yh + (yh - yl)))
                        )
                    })
                    .collect();
                let _ = write!(
                    out,
                    r#"<polyline data-series="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" points="{}"><title>{}</title></polyline>"#,
                    esc(&s.name),
                    pts.join(" "),
                    esc(&s.name)
                );
            }
        }
        f.end(&mut out, a);
        out
    }
}

/// One named set of bars: a value (or none) per category.
#[derive(Debug, Clone, PartialEq)]
pub struct BarSeries {
    pub name: String,
    pub colour: Option<String>,
    pub values: Vec<Option<f64>>,
}

impl BarSeries {
    pub fn new(name: &str, values: Vec<Option<f64>>) -> BarSeries {
        BarSeries {
            name: name.to_string(),
            colour: None,
            values,
        }
    }
}

/// Grouped bars: one group per category, one bar per series.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: Option<String>,
    pub width: f64,
    pub height: f64,
    pub categories: Vec<String>,
    pub x_label: String,
    pub y: Axis,
    pub series: Vec<BarSeries>,
}

impl BarChart {
    /// A 760×340 chart over `categories`.
    pub fn new(categories: Vec<String>, x_label: &str, y_label: &str) -> BarChart {
        BarChart {
            title: None,
            width: 760.0,
            height: 340.0,
            categories,
            x_label: x_label.to_string(),
            y: Axis::new(y_label),
            series: Vec::new(),
        }
    }

    pub fn title(mut self, t: &str) -> BarChart {
        self.title = Some(t.to_string());
        self
    }

    pub fn size(mut self, width: f64, height: f64) -> BarChart {
        self.width = width;
        self.height = height;
        self
    }

    pub fn y_range(mut self, lo: f64, hi: f64) -> BarChart {
        self.y.min = Some(lo);
        self.y.max = Some(hi);
        self
    }

    pub fn y_format(mut self, f: Format) -> BarChart {
        self.y.format = f;
        self
    }

    pub fn series(mut self, s: BarSeries) -> BarChart {
        self.series.push(s);
        self
    }

    fn label_room(&self) -> f64 {
        // category labels are turned 30°: their height is about half their length
        let longest = self
            .categories
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0) as f64;
        (18.0 + 0.5 * CHAR_W * longest).min(120.0)
    }

    fn frame(&self) -> Frame<'_> {
        Frame {
            width: self.width,
            height: self.height,
            title: self.title.as_deref(),
            legend: self
                .series
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), colour_of(&s.colour, i)))
                .collect(),
            y: &self.y,
            x_label: &self.x_label,
            x_tick_room: self.label_room(),
        }
    }

    pub fn plot_area(&self) -> PlotArea {
        self.frame().area()
    }

    /// The chart as standalone SVG.
    pub fn to_svg(&self) -> String {
        // bars start at 0, so 0 is always in range
        let data = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .chain([0.0]);
        let (yl, yh, ys) = self.y.resolve(data);
        let f = self.frame();
        let mut out = String::new();
        let a = f.begin(&mut out, yl, yh, ys);
        let py = |v: f64| a.top + a.height * (1.0 - (v.clamp(yl, yh) - yl) / (yh - yl));
        let n = self.categories.len().max(1) as f64;
        let group = a.width / n;
        let bar = group * 0.8 / self.series.len().max(1) as f64;
        for (ci, cat) in self.categories.iter().enumerate() {
            let gx = a.left + ci as f64 * group + group * 0.1;
            for (si, s) in self.series.iter().enumerate() {
                let Some(v) = s
                    .values
                    .get(ci)
                    .copied()
                    .flatten()
                    .filter(|v| v.is_finite())
                else {
                    continue;
                };
                let (y0, y1) = (py(0.0), py(v));
                let _ = write!(
                    out,
                    r#"<rect data-series="{}" data-category="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} — {}: {}</title></rect>"#,
                    esc(&s.name),
                    esc(cat),
                    gx + si as f64 * bar,
                    y0.min(y1),
                    bar * 0.92,
                    (y0 - y1).abs(),
                    colour_of(&s.colour, si),
                    esc(cat),
                    esc(&s.name),
                    esc(&self.y.format.tooltip(v))
                );
            }
            let (x, y) = (gx + group * 0.4, a.top + a.height + 14.0);
            let _ = write!(
                out,
                r#"<text class="category" x="{x:.1}" y="{y:.1}" text-anchor="end" transform="rotate(-30 {x:.1} {y:.1})">{}</text>"#,
                esc(cat)
            );
        }
        f.end(&mut out, a);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_and_ticks() {
        assert_eq!(nice_step(1.0, 4), 0.25);
        assert_eq!(nice_step(999.0, 5), 200.0);
        assert_eq!(nice_step(0.07, 5), 0.02);
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(
            ticks(0.0, 999.0, 200.0),
            vec![0.0, 200.0, 400.0, 600.0, 800.0]
        );
        assert_eq!(ticks(-0.3, 0.3, 0.25), vec![-0.25, 0.0, 0.25]);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(Format::Auto.label(0.25, 0.25), "0.25");
        assert_eq!(Format::Auto.label(0.5, 0.25), "0.50");
        assert_eq!(Format::Auto.label(400.0, 200.0), "400");
        assert_eq!(Format::Auto.label(0.04, 0.02), "0.04");
        assert_eq!(Format::Percent.label(0.25, 0.25), "25%");
        assert_eq!(Format::Percent.label(0.5, 0.2), "50%");
    }
}
