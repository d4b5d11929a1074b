//! Fréchet distance and KID against the scipy / numpy references of
//! scripts/fixtures/eval_fid_kid.py.

use serde_json::Value;
use strata_eval::{frechet_distance_features, kid, kid_with_subsets, Features};

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fid_kid.json"
    ))
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn features(v: &Value) -> Features {
    let rows: Vec<Vec<f64>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    Features::from_rows(&rows).unwrap()
}

fn indices(v: &Value) -> Vec<Vec<usize>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        })
        .collect()
}

#[test]
fn frechet_distance_matches_scipy() {
    let cs = cases();
    assert_eq!(cs.len(), 3);
    for c in cs {
        let a = features(&c["a"]);
        let b = features(&c["b"]);
        let want = c["fid"].as_f64().unwrap();
        let got = frechet_distance_features(&a, &b).unwrap();
        let tol = 1e-9 * want.abs().max(1.0);
        assert!(
            (got - want).abs() < tol,
            "{}: {got} vs scipy {want}",
            c["name"]
        );
    }
}

#[test]
fn identical_sets_give_zero_fid_and_shift_grows_it() {
    let c = &cases()[2];
    let a = features(&c["a"]);
    assert!(frechet_distance_features(&a, &a).unwrap().abs() < 1e-9);
    // a mean shift of s in every one of d dimensions adds exactly d·s²
    let d = a.d;
    let shifted = Features::new(a.n, d, a.data.iter().map(|v| v + 0.5).collect()).unwrap();
    let f = frechet_distance_features(&a, &shifted).unwrap();
    assert!((f - 0.25 * d as f64).abs() < 1e-9, "{f}");
}

#[test]
fn kid_matches_numpy_with_the_same_subsets() {
    for c in cases() {
        let a = features(&c["a"]);
        let b = features(&c["b"]);
        let (mean, std) = kid_with_subsets(
            &a,
            &b,
            &indices(&c["subset_indices_a"]),
            &indices(&c["subset_indices_b"]),
        )
        .unwrap();
        let wm = c["kid_subset_mean"].as_f64().unwrap();
        let ws = c["kid_subset_std"].as_f64().unwrap();
        assert!(
            (mean - wm).abs() < 1e-9 * wm.abs().max(1.0),
            "{}: {mean} vs {wm}",
            c["name"]
        );
        assert!(
            (std - ws).abs() < 1e-9 * ws.abs().max(1.0),
            "{}: {std} vs {ws}",
            c["name"]
        );
        if let Some(full) = c["kid_full"].as_f64() {
            let all: Vec<usize> = (0..a.n).collect();
            let (m, s) = kid_with_subsets(
                &a,
                &b,
                std::slice::from_ref(&all),
                std::slice::from_ref(&all),
            )
            .unwrap();
            assert!(
                (m - full).abs() < 1e-9 * full.abs().max(1.0),
                "{m} vs {full}"
            );
            assert_eq!(s, 0.0);
        }
    }
}

#[test]
fn kid_is_seeded_and_caps_subset_size() {
    let c = &cases()[1];
    let a = features(&c["a"]);
    let b = features(&c["b"]);
    let k1 = kid(&a, &b, 10, 1000, 3).unwrap();
    let k2 = kid(&a, &b, 10, 1000, 3).unwrap();
    assert_eq!(k1.mean, k2.mean);
    assert_eq!(k1.subset_size, b.n.min(a.n));
    let k3 = kid(&a, &b, 10, 20, 4).unwrap();
    assert_ne!(k1.mean, k3.mean);
    // these sets differ, the estimate says so
    assert!(k1.mean > 0.1, "{}", k1.mean);
}

#[test]
fn bad_inputs_are_errors() {
    assert!(Features::new(2, 3, vec![0.0; 5]).is_err());
    assert!(Features::new(1, 2, vec![0.0, f64::NAN]).is_err());
    let one = Features::new(1, 2, vec![0.0, 1.0]).unwrap();
    assert!(frechet_distance_features(&one, &one).is_err());
    let a = Features::new(3, 2, vec![0.0; 6]).unwrap();
    let b = Features::new(3, 3, vec![0.0; 9]).unwrap();
    assert!(frechet_distance_features(&a, &b).is_err());
    assert!(kid(&a, &b, 2, 2, 0).is_err());
}
