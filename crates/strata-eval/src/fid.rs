//! Fréchet distance (FID's formula) and KID (unbiased polynomial-kernel MMD over subsets) on
//! feature matrices, whatever network produced the features.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::EvalError;
use crate::linalg::{
    gram, product_transposed, symmetric_eigenvalues, trace_sqrt_product, SymMatrix,
};

/// `n` feature vectors of dimension `d`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub n: usize,
    pub d: usize,
    pub data: Vec<f64>,
}

impl Features {
    pub fn new(n: usize, d: usize, data: Vec<f64>) -> Result<Features, EvalError> {
        if data.len() != n * d {
            return Err(EvalError::FeatureShape {
                what: format!("{} values for {n} rows of dimension {d}", data.len()),
            });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::FeatureShape {
                what: format!("value {} at row {} is not finite", data[i], i / d.max(1)),
            });
        }
        Ok(Features { n, d, data })
    }

    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Features, EvalError> {
        let d = rows.first().map_or(0, |r| r.len());
        if let Some(i) = rows.iter().position(|r| r.len() != d) {
            return Err(EvalError::FeatureShape {
                what: format!("row {i} has {} values, row 0 has {d}", rows[i].len()),
            });
        }
        Features::new(rows.len(), d, rows.iter().flatten().copied().collect())
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Mean vector and unbiased (n−1) covariance, as `numpy.cov(rowvar=False)`.
    pub fn stats(&self) -> Result<GaussianStats, EvalError> {
        if self.n < 2 {
            return Err(EvalError::TooFewSamples {
                what: "a covariance".into(),
                need: 2,
                got: self.n,
            });
        }
        let (mean, centred) = centre(self);
        let mut cov = gram(&centred, self.n, self.d);
        for v in &mut cov.data {
            *v /= (self.n - 1) as f64;
        }
        Ok(GaussianStats {
            n: self.n,
            mean,
            cov,
        })
    }
}

/// Mean and covariance of a feature set.
#[derive(Debug, Clone)]
pub struct GaussianStats {
    pub n: usize,
    pub mean: Vec<f64>,
    pub cov: SymMatrix,
}

/// The Fréchet distance between two Gaussians:
/// `|μ1−μ2|² + tr Σ1 + tr Σ2 − 2 tr sqrt(Σ1 Σ2)`, with the last trace computed as
/// `tr sqrt(Σ1^½ Σ2 Σ1^½)` by symmetric eigendecomposition (f64).
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64, EvalError> {
    if a.mean.len() != b.mean.len() {
        return Err(EvalError::FeatureShape {
            what: format!(
                "feature dimensions differ: {} vs {}",
                a.mean.len(),
                b.mean.len()
            ),
        });
    }
    let diff: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let tr = trace_sqrt_product(&a.cov, &b.cov);
    if !tr.is_finite() {
        return Err(not_converged());
    }
    Ok(diff + a.cov.trace() + b.cov.trace() - 2.0 * tr)
}

/// FID-style Fréchet distance straight from two feature sets. When there are fewer
/// samples than dimensions (`n_a + n_b ≤ d`, e.g. a few hundred images of 2048-d Inception
/// features) it works in sample space ([`frechet_distance_sample_space`]), which is exact
/// and avoids d×d eigendecompositions.
pub fn frechet_distance_features(a: &Features, b: &Features) -> Result<f64, EvalError> {
    if a.d == b.d && a.n + b.n <= a.d {
        return frechet_distance_sample_space(a, b);
    }
    frechet_distance(&a.stats()?, &b.stats()?)
}

/// The Fréchet distance through the n×n problem instead of the d×d one. With centred
/// sample matrices `A` (n_a×d) and `B` (n_b×d), `Σ_a = AᵀA/(n_a−1)`, `tr Σ_a = ‖A‖²_F/(n_a−1)`,
/// and the non-zero eigenvalues of `Σ_a Σ_b` are those of `M Mᵀ/((n_a−1)(n_b−1))` with
/// `M = A Bᵀ`, so `tr sqrt(Σ_a Σ_b)` is the sum of M's singular values over
/// `sqrt((n_a−1)(n_b−1))`. Cost O((n_a+n_b)·n_a·d + n_a³) instead of O(d³).
pub fn frechet_distance_sample_space(a: &Features, b: &Features) -> Result<f64, EvalError> {
    if a.d != b.d {
        return Err(EvalError::FeatureShape {
            what: format!("feature dimensions differ: {} vs {}", a.d, b.d),
        });
    }
    for f in [a, b] {
        if f.n < 2 {
            return Err(EvalError::TooFewSamples {
                what: "a covariance".into(),
                need: 2,
                got: f.n,
            });
        }
    }
    let d = a.d;
    let (ma, ca) = centre(a);
    let (mb, cb) = centre(b);
    let diff: f64 = ma.iter().zip(&mb).map(|(x, y)| (x - y) * (x - y)).sum();
    let tr_a = ca.iter().map(|v| v * v).sum::<f64>() / (a.n - 1) as f64;
    let tr_b = cb.iter().map(|v| v * v).sum::<f64>() / (b.n - 1) as f64;
    // M = A Bᵀ (n_a × n_b), then the symmetric PSD M Mᵀ (n_a × n_a).
    let m = product_transposed(&ca, a.n, &cb, b.n, d);
    let mmt = SymMatrix {
        n: a.n,
        data: product_transposed(&m, a.n, &m, a.n, b.n),
    }
    .symmetrised();
    let vals = symmetric_eigenvalues(&mmt).ok_or_else(not_converged)?;
    let top = vals.iter().fold(0.0f64, |t, v| t.max(v.abs()));
    let nuclear: f64 = vals
        .iter()
        .filter(|&&l| l > 1e-12 * top)
        .map(|l| l.sqrt())
        .sum();
    let tr = nuclear / (((a.n - 1) * (b.n - 1)) as f64).sqrt();
    Ok(diff + tr_a + tr_b - 2.0 * tr)
}

/// Column means of a feature matrix and the matrix with them subtracted (row-major).
fn centre(f: &Features) -> (Vec<f64>, Vec<f64>) {
    let d = f.d;
    let mut mean = vec![0.0; d];
    for i in 0..f.n {
        for (m, v) in mean.iter_mut().zip(f.row(i)) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= f.n as f64;
    }
    let mut c = f.data.clone();
    for row in c.chunks_mut(d.max(1)) {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
    (mean, c)
}

fn not_converged() -> EvalError {
    EvalError::FeatureShape {
        what: "the eigendecomposition of the covariances did not converge; check the features \
               for huge or non-finite values"
            .into(),
    }
}

/// The polynomial kernel of KID: `(x·y / d + 1)³`.
fn poly_kernel(x: &[f64], y: &[f64]) -> f64 {
    let d = x.len() as f64;
    let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    (dot / d + 1.0).powi(3)
}

/// Unbiased MMD² between the rows `ia` of `a` and the rows `ib` of `b` (same count `m`):
/// off-diagonal means of K_XX and K_YY minus twice the mean of K_XY.
pub fn mmd_unbiased(a: &Features, ia: &[usize], b: &Features, ib: &[usize]) -> f64 {
    let m = ia.len() as f64;
    let mut sxx = 0.0;
    let mut syy = 0.0;
    let mut sxy = 0.0;
    for (p, &i) in ia.iter().enumerate() {
        for (q, &j) in ia.iter().enumerate() {
            if p != q {
                sxx += poly_kernel(a.row(i), a.row(j));
            }
        }
    }
    for (p, &i) in ib.iter().enumerate() {
        for (q, &j) in ib.iter().enumerate() {
            if p != q {
                syy += poly_kernel(b.row(i), b.row(j));
            }
        }
    }
    for &i in ia {
        for &j in ib {
            sxy += poly_kernel(a.row(i), b.row(j));
        }
    }
    sxx / (m * (m - 1.0)) + syy / (m * (m - 1.0)) - 2.0 * sxy / (m * m)
}

/// The KID protocol and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: usize,
    pub seed: u64,
}

/// KID from explicit subset index lists (one list per subset for each side).
pub fn kid_with_subsets(
    a: &Features,
    b: &Features,
    subsets_a: &[Vec<usize>],
    subsets_b: &[Vec<usize>],
) -> Result<(f64, f64), EvalError> {
    if a.d != b.d {
        return Err(EvalError::FeatureShape {
            what: format!("feature dimensions differ: {} vs {}", a.d, b.d),
        });
    }
    if subsets_a.is_empty() || subsets_a.len() != subsets_b.len() {
        return Err(EvalError::FeatureShape {
            what: format!(
                "{} subsets for the first set, {} for the second",
                subsets_a.len(),
                subsets_b.len()
            ),
        });
    }
    let mut vals = Vec::with_capacity(subsets_a.len());
    for (ia, ib) in subsets_a.iter().zip(subsets_b) {
        if ia.len() != ib.len() || ia.len() < 2 {
            return Err(EvalError::FeatureShape {
                what: format!(
                    "subset sizes {} and {} (need equal, ≥ 2)",
                    ia.len(),
                    ib.len()
                ),
            });
        }
        if let Some(&i) = ia.iter().find(|&&i| i >= a.n) {
            return Err(EvalError::FeatureShape {
                what: format!("subset index {i} ≥ {} rows", a.n),
            });
        }
        if let Some(&i) = ib.iter().find(|&&i| i >= b.n) {
            return Err(EvalError::FeatureShape {
                what: format!("subset index {i} ≥ {} rows", b.n),
            });
        }
        vals.push(mmd_unbiased(a, ia, b, ib));
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64;
    Ok((mean, var.sqrt()))
}

/// KID with `subsets` random subsets of `subset_size` rows from each side, drawn without
/// replacement with a seeded RNG. `subset_size` is capped at the smaller set's size (the
/// small-sample case of this field), which the returned protocol records.
pub fn kid(
    a: &Features,
    b: &Features,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<Kid, EvalError> {
    let size = subset_size.min(a.n).min(b.n);
    if size < 2 {
        return Err(EvalError::TooFewSamples {
            what: "KID".into(),
            need: 2,
            got: a.n.min(b.n),
        });
    }
    let subsets = subsets.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sa = Vec::with_capacity(subsets);
    let mut sb = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        sa.push(sample(&mut rng, a.n, size).into_vec());
        sb.push(sample(&mut rng, b.n, size).into_vec());
    }
    let (mean, std) = kid_with_subsets(a, b, &sa, &sb)?;
    Ok(Kid {
        mean,
        std,
        subsets,
        subset_size: size,
        seed,
    })
}
