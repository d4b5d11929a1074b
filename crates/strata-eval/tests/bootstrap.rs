//! The bootstrap intervals of `strata_eval::stats` against scipy.stats.bootstrap
//! (percentile method) on the data of scripts/fixtures/eval_bootstrap.py. Both sides draw
//! their own resamples, so the bounds agree within Monte Carlo error: with 20 000 resamples
//! here and 40 000 there, the standard error of a 2.5 % quantile is about 0.03 of the
//! bootstrap distribution's standard deviation; the tolerance is 0.15 of it (5 standard
//! errors).

use serde_json::Value;
use strata_eval::stats::{bootstrap, mean_at, ratio_at, BootstrapOptions};

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn percentile_intervals_match_scipy() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bootstrap.json"
    ))
    .unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let opts = BootstrapOptions {
        resamples: 20_000,
        level: 0.95,
        seed: 9,
    };
    for case in fx["cases"].as_array().unwrap() {
        let ci = match case["kind"].as_str().unwrap() {
            "mean_difference" => {
                let (a, b) = (floats(&case["a"]), floats(&case["b"]));
                let d: Vec<Option<f64>> = a.iter().zip(&b).map(|(x, y)| Some(y - x)).collect();
                bootstrap(d.len(), &opts, |i| mean_at(&d, i)).unwrap()
            }
            "ratio_difference" => {
                let req = floats(&case["requested"]);
                let pa: Vec<Option<(f64, f64)>> = floats(&case["honoured_a"])
                    .iter()
                    .zip(&req)
                    .map(|(h, r)| Some((*h, *r)))
                    .collect();
                let pb: Vec<Option<(f64, f64)>> = floats(&case["honoured_b"])
                    .iter()
                    .zip(&req)
                    .map(|(h, r)| Some((*h, *r)))
                    .collect();
                bootstrap(req.len(), &opts, |i| {
                    Some(ratio_at(&pb, i)? - ratio_at(&pa, i)?)
                })
                .unwrap()
            }
            k => panic!("unknown case {k}"),
        };
        let sd = case["boot_sd"].as_f64().unwrap();
        let tol = 0.15 * sd;
        let est = case["estimate"].as_f64().unwrap();
        assert!((ci.estimate - est).abs() < 1e-12, "{case:?}");
        for (got, want) in [(ci.low, &case["low"]), (ci.high, &case["high"])] {
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() < tol,
                "{}: {got} vs scipy {want} (tolerance {tol})",
                case["kind"]
            );
        }
    }
}
