//! Confidence intervals for comparisons of generated sets: the percentile bootstrap over
//! test images, and its two-level form over training seeds and test images.
//!
//! A comparison between two caption arms is *paired*: both arms generate the same test
//! captions from the same noise, so a statistic of the difference (arm − reference) is
//! computed on the same resampled images for both arms. The statistic is any function of a
//! resample — a mean of per-image values, a ratio of sums (relation fidelity: honoured over
//! requested triples), or a set-level distance such as a Fréchet distance on the resampled
//! features — so one routine serves every metric.
//!
//! Written here rather than taken from a crate: the statistic must see the resampled
//! *indices* (set-level metrics recompute on them; two arms share them), which the bootstrap
//! crates on crates.io do not offer. Quantiles use linear interpolation between order
//! statistics, numpy's default, which `scipy.stats.bootstrap(method="percentile")` uses;
//! the tests compare with scipy on a committed fixture.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A point estimate with its bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the data as observed (all seeds, all images).
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Resamples whose statistic was defined (a resample can hold no requested relation).
    pub resamples: usize,
}

impl Interval {
    /// Whether the interval lies wholly on one side of zero.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// Settings of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    pub resamples: usize,
    /// Confidence level in (0, 1).
    pub level: f64,
    pub seed: u64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            resamples: 2000,
            level: 0.95,
            seed: 0,
        }
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted values, linear between order statistics (numpy's
/// default `method="linear"`).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of nothing");
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The independent random stream of resample `k`: results do not depend on the number of
/// threads.
fn resample_rng(seed: u64, k: usize) -> ChaCha8Rng {
    let mut z = seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

fn interval(estimate: f64, mut values: Vec<f64>, opts: &BootstrapOptions) -> Option<Interval> {
    values.retain(|v| v.is_finite());
    // a statistic undefined on most resamples has no meaningful interval
    if values.len() * 2 < opts.resamples.max(1) {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let a = (1.0 - opts.level) / 2.0;
    Some(Interval {
        estimate,
        low: quantile_sorted(&values, a),
        high: quantile_sorted(&values, 1.0 - a),
        level: opts.level,
        resamples: values.len(),
    })
}

/// Percentile bootstrap over `n` items: `stat` gets the resampled item indices (drawn with
/// replacement, `n` of them; the identity for the estimate) and returns the statistic, or
/// `None` where it is undefined. `None` when `n` is 0, the estimate is undefined, or fewer
/// than half the resamples give a value.
pub fn bootstrap<F>(n: usize, opts: &BootstrapOptions, stat: F) -> Option<Interval>
where
    F: Fn(&[usize]) -> Option<f64> + Sync,
{
    if n == 0 {
        return None;
    }
    let all: Vec<usize> = (0..n).collect();
    let estimate = stat(&all).filter(|v| v.is_finite())?;
    let values: Vec<f64> = (0..opts.resamples)
        .into_par_iter()
        .filter_map(|k| {
            let mut rng = resample_rng(opts.seed, k);
            let idx: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
            stat(&idx)
        })
        .collect();
    interval(estimate, values, opts)
}

/// Two-level percentile bootstrap over `seeds` training seeds and `n` test images: each
/// resample draws seeds with replacement, then images with replacement (the same image
/// indices for every drawn seed, since each seed generated the same test captions), and
/// averages `stat(seed, images)` over the drawn seeds. The interval therefore holds both
/// the training-seed spread and the test-image spread. The estimate averages `stat` over all
/// seeds on all images. With one seed this is [`bootstrap`].
pub fn bootstrap_seeds<F>(
    seeds: usize,
    n: usize,
    opts: &BootstrapOptions,
    stat: F,
) -> Option<Interval>
where
    F: Fn(usize, &[usize]) -> Option<f64> + Sync,
{
    if seeds == 0 || n == 0 {
        return None;
    }
    let all: Vec<usize> = (0..n).collect();
    let mean_over = |ss: &[usize], idx: &[usize]| -> Option<f64> {
        let mut sum = 0.0;
        for &s in ss {
            sum += stat(s, idx).filter(|v| v.is_finite())?;
        }
        Some(sum / ss.len() as f64)
    };
    let every: Vec<usize> = (0..seeds).collect();
    let estimate = mean_over(&every, &all)?;
    let values: Vec<f64> = (0..opts.resamples)
        .into_par_iter()
        .filter_map(|k| {
            let mut rng = resample_rng(opts.seed, k);
            let ss: Vec<usize> = if seeds == 1 {
                vec![0]
            } else {
                (0..seeds).map(|_| rng.gen_range(0..seeds)).collect()
            };
            let idx: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
            mean_over(&ss, &idx)
        })
        .collect();
    interval(estimate, values, opts)
}

/// Mean of `values` at `idx`, skipping `None` (an image without a value); `None` if none.
pub fn mean_at(values: &[Option<f64>], idx: &[usize]) -> Option<f64> {
    let (mut s, mut c) = (0.0, 0usize);
    for &i in idx {
        if let Some(v) = values[i] {
            s += v;
            c += 1;
        }
    }
    (c > 0).then(|| s / c as f64)
}

/// Ratio of sums at `idx` of `(numerator, denominator)` pairs (e.g. honoured / requested
/// relation triples per image); `None` when the denominators sum to 0.
pub fn ratio_at(pairs: &[Option<(f64, f64)>], idx: &[usize]) -> Option<f64> {
    let (mut a, mut b) = (0.0, 0.0);
    for &i in idx {
        if let Some((x, y)) = pairs[i] {
            a += x;
            b += y;
        }
    }
    (b > 0.0).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        // np.percentile([1, 2, 4, 8], [0, 25, 50, 90, 100]) = 1, 1.75, 3, 6.8, 8
        let s = [1.0, 2.0, 4.0, 8.0];
        for (q, want) in [(0.0, 1.0), (0.25, 1.75), (0.5, 3.0), (0.9, 6.8), (1.0, 8.0)] {
            assert!((quantile_sorted(&s, q) - want).abs() < 1e-12, "q {q}");
        }
    }

    /// Normal data: the 95 % interval of the mean covers the true mean in about 95 % of
    /// repeated experiments (percentile bootstrap, n = 60: a little under nominal).
    #[test]
    fn interval_of_the_mean_has_its_coverage() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let trials = 400;
        let mut covered = 0;
        for t in 0..trials {
            let x: Vec<Option<f64>> = (0..60)
                .map(|_| {
                    // Box-Muller, mean 3, sd 2
                    let (u, v): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
                    Some(3.0 + 2.0 * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos())
                })
                .collect();
            let opts = BootstrapOptions {
                resamples: 600,
                level: 0.95,
                seed: t,
            };
            let ci = bootstrap(x.len(), &opts, |i| mean_at(&x, i)).unwrap();
            if ci.low <= 3.0 && 3.0 <= ci.high {
                covered += 1;
            }
        }
        let rate = covered as f64 / trials as f64;
        assert!((0.90..=0.98).contains(&rate), "coverage {rate}");
    }

    #[test]
    fn a_clear_difference_excludes_zero_and_noise_does_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let noise: Vec<f64> = (0..200).map(|_| rng.gen::<f64>() - 0.5).collect();
        let shifted: Vec<Option<f64>> = noise.iter().map(|v| Some(v + 0.3)).collect();
        let centred: Vec<Option<f64>> = noise.iter().map(|v| Some(*v)).collect();
        let o = BootstrapOptions::default();
        assert!(bootstrap(200, &o, |i| mean_at(&shifted, i))
            .unwrap()
            .excludes_zero());
        // uniform(-0.5, 0.5) has mean 0 exactly; the sample mean's interval holds it
        let c = bootstrap(200, &o, |i| mean_at(&centred, i)).unwrap();
        assert!(c.low < 0.0 && c.high > 0.0, "{c:?}");
    }

    #[test]
    fn seeds_widen_the_interval_when_seeds_disagree() {
        // two seeds whose per-image values differ by a constant offset: the seed level adds
        // the offset's spread, so the two-level interval is wider than the one-seed one
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let base: Vec<f64> = (0..100).map(|_| rng.gen::<f64>()).collect();
        let per_seed: Vec<Vec<Option<f64>>> = [0.0, 0.4]
            .iter()
            .map(|o| base.iter().map(|v| Some(v + o)).collect())
            .collect();
        let o = BootstrapOptions::default();
        let one = bootstrap(100, &o, |i| mean_at(&per_seed[0], i)).unwrap();
        let two = bootstrap_seeds(2, 100, &o, |s, i| mean_at(&per_seed[s], i)).unwrap();
        assert!(
            two.high - two.low > 1.5 * (one.high - one.low),
            "{one:?} {two:?}"
        );
        assert!((two.estimate - (one.estimate + 0.2)).abs() < 1e-12);
    }

    #[test]
    fn results_do_not_depend_on_threads_and_undefined_statistics_give_none() {
        let x: Vec<Option<f64>> = (0..50).map(|i| Some(i as f64)).collect();
        let o = BootstrapOptions::default();
        let a = bootstrap(50, &o, |i| mean_at(&x, i)).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| bootstrap(50, &o, |i| mean_at(&x, i)).unwrap());
        assert_eq!(a, b);
        let none: Vec<Option<(f64, f64)>> = vec![Some((0.0, 0.0)); 10];
        assert!(bootstrap(10, &o, |i| ratio_at(&none, i)).is_none());
        assert!(bootstrap(0, &o, |i| mean_at(&x, i)).is_none());
    }
}
