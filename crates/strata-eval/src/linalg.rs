//! Dense f64 linear algebra for the Fréchet distance: feature covariances (one matrix
//! product) and symmetric eigendecompositions, both through faer (blocked, vectorised and
//! multi-threaded; a 2048² decomposition takes seconds where the textbook loops take
//! minutes). The cyclic Jacobi method stays as a short, independent reference that the
//! unit tests check faer's results against on small matrices.

use faer::linalg::matmul::{matmul, triangular};
use faer::{Accum, Mat, MatRef, Par, Side};

/// A row-major square matrix of side `n`.
#[derive(Debug, Clone, PartialEq)]
pub struct SymMatrix {
    pub n: usize,
    pub data: Vec<f64>,
}

/// Use every rayon thread for products and decompositions.
fn par() -> Par {
    Par::rayon(0)
}

impl SymMatrix {
    pub fn zeros(n: usize) -> SymMatrix {
        SymMatrix {
            n,
            data: vec![0.0; n * n],
        }
    }

    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    #[inline]
    fn set(&mut self, i: usize, j: usize, v: f64) {
        self.data[i * self.n + j] = v;
    }

    /// A faer view of the same storage.
    fn view(&self) -> MatRef<'_, f64> {
        MatRef::from_row_major_slice(&self.data, self.n, self.n)
    }

    /// Copy a square faer matrix into row-major storage.
    fn from_faer(m: MatRef<'_, f64>) -> SymMatrix {
        let n = m.nrows();
        let mut out = SymMatrix::zeros(n);
        for j in 0..n {
            for (i, v) in m.col(j).iter().enumerate() {
                out.data[i * n + j] = *v;
            }
        }
        out
    }

    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.get(i, i)).sum()
    }

    /// `self · other` (both square of the same side).
    pub fn matmul(&self, other: &SymMatrix) -> SymMatrix {
        let mut out = Mat::<f64>::zeros(self.n, self.n);
        matmul(
            out.as_mut(),
            Accum::Replace,
            self.view(),
            other.view(),
            1.0,
            par(),
        );
        SymMatrix::from_faer(out.as_ref())
    }

    /// Average with the transpose (removes rounding asymmetry).
    pub fn symmetrised(&self) -> SymMatrix {
        let mut out = self.clone();
        for i in 0..self.n {
            for j in 0..i {
                let v = 0.5 * (self.get(i, j) + self.get(j, i));
                out.set(i, j, v);
                out.set(j, i, v);
            }
        }
        out
    }
}

/// `XᵀX` for a row-major `rows × cols` matrix `x` (a `cols × cols` symmetric matrix): the
/// unnormalised covariance of centred samples. Only the lower triangle is computed (half
/// the work of a general product) and mirrored.
pub fn gram(x: &[f64], rows: usize, cols: usize) -> SymMatrix {
    assert_eq!(
        x.len(),
        rows * cols,
        "gram: {rows}×{cols} needs {} values",
        rows * cols
    );
    let xv = MatRef::from_row_major_slice(x, rows, cols);
    let mut out = Mat::<f64>::zeros(cols, cols);
    triangular::matmul(
        out.as_mut(),
        triangular::BlockStructure::TriangularLower,
        Accum::Replace,
        xv.transpose(),
        triangular::BlockStructure::Rectangular,
        xv,
        triangular::BlockStructure::Rectangular,
        1.0,
        par(),
    );
    let mut m = SymMatrix::from_faer(out.as_ref());
    let n = m.n;
    for i in 0..n {
        for j in 0..i {
            m.data[j * n + i] = m.data[i * n + j];
        }
    }
    m
}

/// `X Yᵀ` for row-major `X` (`rx × cols`) and `Y` (`ry × cols`), row-major `rx × ry`.
pub fn product_transposed(x: &[f64], rx: usize, y: &[f64], ry: usize, cols: usize) -> Vec<f64> {
    let xv = MatRef::from_row_major_slice(x, rx, cols);
    let yv = MatRef::from_row_major_slice(y, ry, cols);
    let mut out = Mat::<f64>::zeros(rx, ry);
    matmul(out.as_mut(), Accum::Replace, xv, yv.transpose(), 1.0, par());
    let mut data = vec![0.0; rx * ry];
    for j in 0..ry {
        for (i, v) in out.col(j).iter().enumerate() {
            data[i * ry + j] = *v;
        }
    }
    data
}

/// Eigenvalues (ascending) and eigenvectors (columns of the returned matrix, row-major) of a
/// symmetric matrix, through faer's self-adjoint eigendecomposition (the lower triangle is
/// read). `None` when the solver does not converge (non-finite input).
pub fn symmetric_eigen(m: &SymMatrix) -> Option<(Vec<f64>, SymMatrix)> {
    let evd = m.view().self_adjoint_eigen(Side::Lower).ok()?;
    let vals = evd.S().column_vector().iter().copied().collect();
    Some((vals, SymMatrix::from_faer(evd.U())))
}

/// Eigenvalues (ascending) of a symmetric matrix (faer; the lower triangle is read); `None`
/// when the solver does not converge.
pub fn symmetric_eigenvalues(m: &SymMatrix) -> Option<Vec<f64>> {
    m.view().self_adjoint_eigenvalues(Side::Lower).ok()
}

/// Eigenvalues and eigenvectors (columns of `vectors`, row-major) of a symmetric matrix by
/// the cyclic Jacobi method, to machine precision. O(n³) per sweep: a reference for small
/// matrices; [`symmetric_eigen`] is the fast path.
pub fn jacobi_eigen(m: &SymMatrix) -> (Vec<f64>, SymMatrix) {
    let n = m.n;
    let mut a = m.symmetrised();
    let mut v = SymMatrix::zeros(n);
    for i in 0..n {
        v.set(i, i, 1.0);
    }
    let scale: f64 = a
        .data
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a.get(i, j) * a.get(i, j))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a.get(p, q);
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let app = a.get(p, p);
                let aqq = a.get(q, q);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a.get(k, p);
                    let akq = a.get(k, q);
                    a.set(k, p, c * akp - s * akq);
                    a.set(k, q, s * akp + c * akq);
                }
                for k in 0..n {
                    let apk = a.get(p, k);
                    let aqk = a.get(q, k);
                    a.set(p, k, c * apk - s * aqk);
                    a.set(q, k, s * apk + c * aqk);
                }
                for k in 0..n {
                    let vkp = v.get(k, p);
                    let vkq = v.get(k, q);
                    v.set(k, p, c * vkp - s * vkq);
                    v.set(k, q, s * vkp + c * vkq);
                }
            }
        }
    }
    ((0..n).map(|i| a.get(i, i)).collect(), v)
}

/// Principal square root of a symmetric positive semi-definite matrix (negative rounding
/// eigenvalues are clamped to 0). All NaN if the eigensolver fails (non-finite input).
pub fn sqrt_psd(m: &SymMatrix) -> SymMatrix {
    let n = m.n;
    let Some((vals, vecs)) = symmetric_eigen(m) else {
        return SymMatrix {
            n,
            data: vec![f64::NAN; n * n],
        };
    };
    let roots: Vec<f64> = clamp_noise(&vals).iter().map(|l| l.sqrt()).collect();
    // V · diag(√λ) · Vᵀ
    let v = vecs.view();
    let scaled = Mat::<f64>::from_fn(n, n, |i, k| v[(i, k)] * roots[k]);
    let mut out = Mat::<f64>::zeros(n, n);
    matmul(
        out.as_mut(),
        Accum::Replace,
        scaled.as_ref(),
        v.transpose(),
        1.0,
        par(),
    );
    SymMatrix::from_faer(out.as_ref()).symmetrised()
}

/// `tr sqrt(A B)` for symmetric PSD `A`, `B`: the sum of the square roots of the
/// eigenvalues of `A B`, which are those of a symmetric PSD matrix similar to it, so only
/// symmetric eigenvalue problems are solved.
///
/// - `A` positive definite (the usual case: more samples than dimensions): with the
///   Cholesky factor `A = L Lᵀ`, `A B` is similar to `Lᵀ B L`. One Cholesky factorisation,
///   two triangular products and one eigenvalues-only decomposition.
/// - Otherwise (rank-deficient `A`, the factorisation stops at a non-positive pivot): with
///   `A = V Λ Vᵀ`, `A B` is similar to `Λ^½ (Vᵀ B V) Λ^½` (that is `A^½ B A^½` in `V`'s
///   basis), with `A`'s rounding-noise eigenvalues set to 0. One full decomposition, two
///   products and one eigenvalues-only decomposition.
///
/// NaN if an eigensolver fails (non-finite input).
pub fn trace_sqrt_product(a: &SymMatrix, b: &SymMatrix) -> f64 {
    let n = a.n;
    assert_eq!(n, b.n, "trace_sqrt_product: {n}×{n} and {0}×{0}", b.n);
    let m = match a.view().llt(Side::Lower) {
        Ok(llt) => cholesky_similar(llt.L(), b),
        Err(_) => match eigen_similar(a, b) {
            Some(m) => m,
            None => return f64::NAN,
        },
    };
    match m.as_ref().self_adjoint_eigenvalues(Side::Lower) {
        Ok(vals) => clamp_noise(&vals).iter().map(|l| l.sqrt()).sum(),
        Err(_) => f64::NAN,
    }
}

/// The lower triangle of `Lᵀ B L` for lower-triangular `L`.
fn cholesky_similar(l: MatRef<'_, f64>, b: &SymMatrix) -> Mat<f64> {
    use triangular::BlockStructure::{Rectangular, TriangularLower, TriangularUpper};
    let n = b.n;
    let mut bl = Mat::<f64>::zeros(n, n);
    triangular::matmul(
        bl.as_mut(),
        Rectangular,
        Accum::Replace,
        b.view(),
        Rectangular,
        l,
        TriangularLower,
        1.0,
        par(),
    );
    let mut m = Mat::<f64>::zeros(n, n);
    triangular::matmul(
        m.as_mut(),
        TriangularLower,
        Accum::Replace,
        l.transpose(),
        TriangularUpper,
        bl.as_ref(),
        Rectangular,
        1.0,
        par(),
    );
    m
}

/// `Λ^½ (Vᵀ B V) Λ^½` for `A = V Λ Vᵀ` (noise eigenvalues of `A` set to 0), symmetrised.
fn eigen_similar(a: &SymMatrix, b: &SymMatrix) -> Option<Mat<f64>> {
    let n = a.n;
    let (vals, vecs) = symmetric_eigen(a)?;
    let roots: Vec<f64> = clamp_noise(&vals).iter().map(|l| l.sqrt()).collect();
    let v = vecs.view();
    let mut bv = Mat::<f64>::zeros(n, n);
    matmul(bv.as_mut(), Accum::Replace, b.view(), v, 1.0, par());
    let mut c = Mat::<f64>::zeros(n, n);
    matmul(
        c.as_mut(),
        Accum::Replace,
        v.transpose(),
        bv.as_ref(),
        1.0,
        par(),
    );
    Some(Mat::<f64>::from_fn(n, n, |i, j| {
        roots[i] * 0.5 * (c[(i, j)] + c[(j, i)]) * roots[j]
    }))
}

/// Eigenvalues of a PSD matrix with rounding noise removed: negative values and values
/// below `1e-12 · max |λ|` (what f64 rounding leaves in the null space of a rank-deficient
/// covariance, e.g. fewer images than feature dimensions) become 0.
fn clamp_noise(vals: &[f64]) -> Vec<f64> {
    let top = vals.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    vals.iter()
        .map(|&l| if l <= 1e-12 * top { 0.0 } else { l })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_reconstructs_matrix() {
        let n = 6;
        let mut m = SymMatrix::zeros(n);
        for i in 0..n {
            for j in 0..=i {
                let v = ((i * 7 + j * 3) % 11) as f64 - 4.0;
                m.set(i, j, v);
                m.set(j, i, v);
            }
        }
        let (vals, v) = jacobi_eigen(&m);
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| v.get(i, k) * vals[k] * v.get(j, k)).sum();
                assert!(
                    (r - m.get(i, j)).abs() < 1e-10,
                    "{i},{j}: {r} vs {}",
                    m.get(i, j)
                );
            }
        }
        assert!((vals.iter().sum::<f64>() - m.trace()).abs() < 1e-10);
    }

    /// A symmetric test matrix with distinct-ish eigenvalues.
    fn sym(n: usize, salt: usize) -> SymMatrix {
        let mut m = SymMatrix::zeros(n);
        for i in 0..n {
            for j in 0..=i {
                let v = (((i * 7 + j * 3 + salt) % 11) as f64 - 4.0) * 0.5
                    + ((i * j + salt) as f64 * 0.37).sin();
                m.set(i, j, v);
                m.set(j, i, v);
            }
        }
        m
    }

    #[test]
    fn faer_eigen_agrees_with_jacobi_and_reconstructs() {
        for (n, salt) in [(1, 0), (6, 1), (17, 2), (40, 3)] {
            let m = sym(n, salt);
            let (mut want, _) = jacobi_eigen(&m);
            want.sort_by(f64::total_cmp);
            let (vals, v) = symmetric_eigen(&m).unwrap();
            let only = symmetric_eigenvalues(&m).unwrap();
            for ((a, b), c) in vals.iter().zip(&want).zip(&only) {
                assert!((a - b).abs() < 1e-10, "n={n}: {a} vs Jacobi {b}");
                assert!((c - b).abs() < 1e-10, "n={n}: {c} vs Jacobi {b}");
            }
            for i in 0..n {
                for j in 0..n {
                    let r: f64 = (0..n).map(|k| v.get(i, k) * vals[k] * v.get(j, k)).sum();
                    assert!((r - m.get(i, j)).abs() < 1e-10, "n={n} {i},{j}");
                }
            }
        }
    }

    #[test]
    fn products_match_the_defining_sums() {
        let (r, c) = (9, 5);
        let x: Vec<f64> = (0..r * c).map(|i| (i as f64 * 0.61).cos()).collect();
        let y: Vec<f64> = (0..4 * c).map(|i| (i as f64 * 0.29).sin()).collect();
        let g = gram(&x, r, c);
        for a in 0..c {
            for b in 0..c {
                let want: f64 = (0..r).map(|k| x[k * c + a] * x[k * c + b]).sum();
                assert!((g.get(a, b) - want).abs() < 1e-12, "{a},{b}");
            }
        }
        let p = product_transposed(&x, r, &y, 4, c);
        for i in 0..r {
            for j in 0..4 {
                let want: f64 = (0..c).map(|k| x[i * c + k] * y[j * c + k]).sum();
                assert!((p[i * 4 + j] - want).abs() < 1e-12, "{i},{j}");
            }
        }
        let (a, b) = (sym(7, 4), sym(7, 5));
        let ab = a.matmul(&b);
        for i in 0..7 {
            for j in 0..7 {
                let want: f64 = (0..7).map(|k| a.get(i, k) * b.get(k, j)).sum();
                assert!((ab.get(i, j) - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn trace_sqrt_product_matches_the_jacobi_formulation() {
        // PSD A = XᵀX and B = YᵀY, one of them rank-deficient
        let n = 12;
        let noise = |i: usize| ((i * i * 7919 + i * 104_729) % 1009) as f64 / 1009.0 - 0.5;
        let x: Vec<f64> = (0..20 * n).map(noise).collect();
        let y: Vec<f64> = (0..8 * n).map(|i| noise(i + 5000)).collect();
        let (a, b) = (gram(&x, 20, n), gram(&y, 8, n));
        // reference: A^½ from Jacobi, then Jacobi eigenvalues of A^½ B A^½
        let (va, ea) = jacobi_eigen(&a);
        let ra: Vec<f64> = clamp_noise(&va).iter().map(|l| l.sqrt()).collect();
        let mut ah = SymMatrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                ah.set(
                    i,
                    j,
                    (0..n).map(|k| ea.get(i, k) * ra[k] * ea.get(j, k)).sum(),
                );
            }
        }
        let (vm, _) = jacobi_eigen(&ah.matmul(&b).matmul(&ah).symmetrised());
        let want: f64 = clamp_noise(&vm).iter().map(|l| l.sqrt()).sum();
        // A positive definite: the Cholesky path
        let got = trace_sqrt_product(&a, &b);
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        // tr sqrt(BA) = tr sqrt(AB), with rank-deficient B first
        let swapped = trace_sqrt_product(&b, &a);
        assert!((swapped - want).abs() < 1e-9 * want, "{swapped} vs {want}");
        // the eigendecomposition path, used when the Cholesky factorisation stops
        let m = eigen_similar(&a, &b).unwrap();
        let vals = m.as_ref().self_adjoint_eigenvalues(Side::Lower).unwrap();
        let by_eigen: f64 = clamp_noise(&vals).iter().map(|l| l.sqrt()).sum();
        assert!(
            (by_eigen - want).abs() < 1e-9 * want,
            "{by_eigen} vs {want}"
        );
        assert!(a.view().llt(Side::Lower).is_ok());
        let r = sqrt_psd(&a);
        for (p, q) in r.data.iter().zip(&ah.data) {
            assert!((p - q).abs() < 1e-9, "{p} vs {q}");
        }
    }

    #[test]
    fn sqrt_squares_back() {
        // a PSD matrix X^T X
        let n = 5;
        let mut x = SymMatrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                x.set(i, j, ((i * 5 + j * 2) % 7) as f64 * 0.3 - 0.8);
            }
        }
        let mut xt = SymMatrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                xt.set(i, j, x.get(j, i));
            }
        }
        let p = xt.matmul(&x);
        let r = sqrt_psd(&p);
        let back = r.matmul(&r);
        for (a, b) in back.data.iter().zip(&p.data) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }
}
