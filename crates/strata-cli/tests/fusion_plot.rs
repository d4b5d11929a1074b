//! `strata encode --plot`: the fusion weights w(t) drawn as an SVG line chart (strata-report's
//! chart module). Moved here from strata-models' text_fusion tests when the plot moved out
//! of strata-models; it checks the same things about the curves, now on the SVG: all three
//! are drawn over the whole plot width, the scene weight is high at the right (t = T−1, the
//! start of denoising) and low at the left, and each curve follows the fixed schedule's
//! w(t) as strata-models computes it.

use std::process::Command;

use strata_models::fusion::FixedSchedule;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn attr(tag: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    let i = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    tag[i..i + tag[i..].find('"').unwrap()].to_string()
}

/// `(series, colour, [(x, y)])` of one curve.
type Curve = (String, String, Vec<(f64, f64)>);

/// Every curve of the drawing.
fn polylines(svg: &str) -> Vec<Curve> {
    svg.split("<polyline")
        .skip(1)
        .map(|p| {
            let pts = attr(p, "points")
                .split(' ')
                .map(|q| {
                    let (x, y) = q.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            (attr(p, "data-series"), attr(p, "stroke"), pts)
        })
        .collect()
}

#[test]
fn plot_draws_the_three_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("weights.svg");
    let o = strata()
        .args(["encode", "--plot"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(&p).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    // the plot rectangle: x = t over [0, T−1], y = weight over [0, 1] (top = 1)
    let frame = &svg[svg.find("<rect class=\"frame\"").expect("plot frame")..];
    let num = |n: &str| attr(frame, n).parse::<f64>().unwrap();
    let (left, top, width, height) = (num("x"), num("y"), num("width"), num("height"));

    let curves = polylines(&svg);
    let names: Vec<&str> = curves.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["scene", "relation", "elements"]);
    let colours: std::collections::BTreeSet<&str> = curves.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(colours.len(), 3, "three distinct colours: {colours:?}");
    for (name, _, pts) in &curves {
        assert!(pts.len() > 200, "{name} has {} points", pts.len());
        assert!(
            (pts[0].0 - left).abs() < 0.01,
            "{name} starts at the left edge"
        );
        assert!(
            (pts.last().unwrap().0 - (left + width)).abs() < 0.01,
            "{name} ends at the right edge"
        );
    }
    // Scene (red) is high on the right (t = T−1) and low on the left.
    let scene = &curves[0].2;
    let mid = top + height / 2.0;
    assert!(
        scene.last().unwrap().1 < mid,
        "scene weight at T−1 above 0.5"
    );
    assert!(scene[0].1 > mid, "scene weight at t = 0 below 0.5");
    // every point is w(t) of the default fixed schedule (independently computed here)
    let f = FixedSchedule::default();
    let t_max = (f.num_train_timesteps - 1) as f64;
    for (i, (name, _, pts)) in curves.iter().enumerate() {
        for &(x, y) in pts {
            let t = (x - left) / width * t_max;
            let w = 1.0 - (y - top) / height;
            let want = f.weights(t)[i];
            assert!(
                (w - want).abs() < 1e-3,
                "{name} at t = {t:.1}: plotted {w:.4}, schedule {want:.4}"
            );
        }
    }
}

#[test]
fn a_png_plot_path_is_refused_with_the_svg_alternative() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("weights.png");
    let o = strata()
        .args(["encode", "--plot"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("weights.png") && err.contains(".svg"), "{err}");
    assert!(!p.exists());
}
