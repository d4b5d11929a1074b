//! The charts read back from their SVG: curves land where their values say, breaks at
//! missing values, bars proportional to their values, text escaped.

use strata_report::chart::{BarChart, BarSeries, Format, LineChart, Series};

/// `(series, [(x, y)])` of every `<polyline>`, in drawing order.
fn polylines(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out = Vec::new();
    for part in svg.split("<polyline").skip(1) {
        let name = attr(part, "data-series");
        let pts = attr(part, "points")
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        out.push((name, pts));
    }
    out
}

/// `(series, category, y, height)` of every bar.
fn bars(svg: &str) -> Vec<(String, String, f64, f64)> {
    svg.split("<rect data-series=")
        .skip(1)
        .map(|p| {
            let p = format!(" data-series={p}");
            (
                attr(&p, "data-series"),
                attr(&p, "data-category"),
                attr(&p, "y").parse().unwrap(),
                attr(&p, "height").parse().unwrap(),
            )
        })
        .collect()
}

fn attr(tag: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    let i = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    tag[i..i + tag[i..].find('"').unwrap()].to_string()
}

#[test]
fn line_chart_maps_values_into_the_plot_area() {
    let c = LineChart::new("step", "loss")
        .x_range(0.0, 10.0)
        .y_range(0.0, 2.0)
        .series(Series::new("a", vec![(0.0, 2.0), (5.0, 1.0), (10.0, 0.0)]))
        .series(Series::new("b <&>", vec![(0.0, 0.5), (10.0, 0.5)]).colour("#123456"));
    let a = c.plot_area();
    let svg = c.to_svg();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.ends_with("</svg>"));
    let lines = polylines(&svg);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].0, "a");
    let close = |p: (f64, f64), q: (f64, f64)| (p.0 - q.0).abs() < 0.01 && (p.1 - q.1).abs() < 0.01;
    // (0, 2) is the top-left corner, (10, 0) the bottom-right, (5, 1) the centre
    assert!(close(lines[0].1[0], (a.left, a.top)), "{lines:?} {a:?}");
    assert!(close(
        lines[0].1[1],
        (a.left + a.width / 2.0, a.top + a.height / 2.0)
    ));
    assert!(close(lines[0].1[2], (a.left + a.width, a.top + a.height)));
    // 0.5 of 0..2 is a quarter of the way up
    assert!((lines[1].1[0].1 - (a.top + 0.75 * a.height)).abs() < 0.01);
    // names are escaped, the given colour is used, the axes are labelled
    assert_eq!(lines[1].0, "b &lt;&amp;&gt;");
    assert!(svg.contains("stroke=\"#123456\""));
    assert!(svg.contains(">step</text>") && svg.contains(">loss</text>"));
    // ticks: 0, 2, 4, ... on x; 0.0 ... 2.0 on y
    for t in [">0<", ">2<", ">10<", ">0.0<", ">1.0<", ">2.0<"] {
        assert!(svg.contains(t), "tick {t} missing");
    }
}

#[test]
fn missing_values_break_the_curve() {
    let c = LineChart::new("x", "y").series(Series::new(
        "s",
        vec![
            (0.0, 1.0),
            (1.0, 2.0),
            (2.0, f64::NAN),
            (3.0, 1.0),
            (4.0, 3.0),
        ],
    ));
    let lines = polylines(&c.to_svg());
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0].1.len(), lines[1].1.len()), (2, 2));
    // the automatic y range covers the data: 3 is at or under the top edge, 1 above bottom
    let a = c.plot_area();
    assert!(lines[1].1[1].1 >= a.top - 0.01);
    assert!(lines[0].1[0].1 <= a.top + a.height + 0.01);
}

#[test]
fn bars_are_proportional_and_missing_ones_absent() {
    let c = BarChart::new(
        vec!["near".into(), "left of".into()],
        "relation",
        "honoured",
    )
    .y_range(0.0, 1.0)
    .y_format(Format::Percent)
    .series(BarSeries::new("flat", vec![Some(0.25), Some(1.0)]))
    .series(BarSeries::new("real", vec![None, Some(0.5)]));
    let svg = c.to_svg();
    let a = c.plot_area();
    let b = bars(&svg);
    assert_eq!(b.len(), 3);
    let h = |s: &str, cat: &str| {
        b.iter()
            .find(|x| x.0 == s && x.1 == cat)
            .map(|x| x.3)
            .unwrap()
    };
    assert!((h("flat", "near") - 0.25 * a.height).abs() < 0.1);
    assert!((h("flat", "left of") - a.height).abs() < 0.1);
    assert!((h("real", "left of") - 0.5 * a.height).abs() < 0.1);
    // every bar stands on the baseline
    for (_, _, y, hh) in &b {
        assert!((y + hh - (a.top + a.height)).abs() < 0.1);
    }
    assert!(svg.contains(">100%<") && svg.contains(">0%<"));
    assert!(svg.contains("near — flat: 25.0%"));
}
