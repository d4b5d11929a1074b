//! Range-checked parsers for numeric options. Every numeric flag goes through one of these,
//! so `--cfg nan`, `--steps 0` or `--strength 7` stop at parse time with the accepted range
//! in the message instead of running (or running for hours) on a value that means nothing.
//!
//! clap's own `value_parser!(u32).range(..)` covers integers only and prints Rust range
//! syntax; these give the same message shape for floats and integers.

use std::fmt::Display;
use std::str::FromStr;

/// How a bound of a float range treats its end point.
#[derive(Clone, Copy)]
pub enum End {
    Closed(f64),
    Open(f64),
    None,
}

fn describe(lo: End, hi: End) -> String {
    match (lo, hi) {
        (End::None, End::None) => "a finite number".to_string(),
        (End::Closed(a), End::None) => format!("a finite number ≥ {a}"),
        (End::Open(a), End::None) => format!("a finite number > {a}"),
        (End::None, End::Closed(b)) => format!("a finite number ≤ {b}"),
        (End::None, End::Open(b)) => format!("a finite number < {b}"),
        (l, h) => {
            let left = match l {
                End::Closed(a) => format!("[{a}"),
                End::Open(a) => format!("({a}"),
                End::None => unreachable!(),
            };
            let right = match h {
                End::Closed(b) => format!("{b}]"),
                End::Open(b) => format!("{b})"),
                End::None => unreachable!(),
            };
            format!("a finite number in {left}, {right}")
        }
    }
}

fn check_f64(s: &str, lo: End, hi: End) -> Result<f64, String> {
    let want = describe(lo, hi);
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number; expected {want}"))?;
    let ok = v.is_finite()
        && match lo {
            End::Closed(a) => v >= a,
            End::Open(a) => v > a,
            End::None => true,
        }
        && match hi {
            End::Closed(b) => v <= b,
            End::Open(b) => v < b,
            End::None => true,
        };
    if ok {
        Ok(v)
    } else {
        Err(format!("{s} is out of range; expected {want}"))
    }
}

/// A float parser accepting values between `lo` and `hi` (NaN and ±inf always refused).
pub fn float(lo: End, hi: End) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    move |s| check_f64(s, lo, hi)
}

/// Any finite float.
pub fn finite(s: &str) -> Result<f64, String> {
    check_f64(s, End::None, End::None)
}

/// A float in [0, 1].
pub fn unit(s: &str) -> Result<f64, String> {
    check_f64(s, End::Closed(0.0), End::Closed(1.0))
}

/// A float > 0.
pub fn positive(s: &str) -> Result<f64, String> {
    check_f64(s, End::Open(0.0), End::None)
}

/// A float ≥ 0.
pub fn non_negative(s: &str) -> Result<f64, String> {
    check_f64(s, End::Closed(0.0), End::None)
}

/// `unit` for f32 options.
pub fn unit_f32(s: &str) -> Result<f32, String> {
    unit(s).map(|v| v as f32)
}

/// An integer in `[lo, hi]`.
pub fn int<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |s| {
        let v: T = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a whole number; expected one in [{lo}, {hi}]"))?;
        if v < lo || v > hi {
            return Err(format!(
                "{s} is out of range; expected a whole number in [{lo}, {hi}]"
            ));
        }
        Ok(v)
    }
}

/// Largest image side accepted by the options that set one (64 K pixels: far beyond any
/// model; the memory estimate refuses long before).
pub const MAX_SIDE: usize = 65_536;

/// Largest step / count an option accepts where no natural bound exists: a typo guard
/// (10⁹), not a policy.
pub const MAX_COUNT: usize = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_refuse_nan_inf_and_out_of_range_with_the_range_named() {
        for bad in ["nan", "NaN", "inf", "-inf", "1e400"] {
            let e = finite(bad).unwrap_err();
            assert!(e.contains("finite number"), "{bad}: {e}");
        }
        assert_eq!(unit("0.25"), Ok(0.25));
        let e = unit("1.5").unwrap_err();
        assert!(e.contains("[0, 1]"), "{e}");
        let e = positive("0").unwrap_err();
        assert!(e.contains("> 0"), "{e}");
        let e = float(End::Open(0.0), End::Closed(1.0))("0").unwrap_err();
        assert!(e.contains("(0, 1]"), "{e}");
        assert!(finite("abc").unwrap_err().contains("not a number"));
    }

    #[test]
    fn integers_name_their_range() {
        let p = int(1usize, 100);
        assert_eq!(p("7"), Ok(7));
        let e = p("0").unwrap_err();
        assert!(e.contains("[1, 100]"), "{e}");
        assert!(p("-3").unwrap_err().contains("not a whole number"));
        assert!(p("2.5").unwrap_err().contains("not a whole number"));
    }
}
