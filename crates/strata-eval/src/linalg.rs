//! Small dense f64 linear algebra for the Fréchet distance: feature statistics and the
//! cyclic Jacobi eigendecomposition of symmetric matrices.

/// A row-major square matrix of side `n`.
#[derive(Debug, Clone, PartialEq)]
pub struct SymMatrix {
    pub n: usize,
    pub data: Vec<f64>,
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

    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.get(i, i)).sum()
    }

    /// `self · other` (both square of the same side).
    pub fn matmul(&self, other: &SymMatrix) -> SymMatrix {
        let n = self.n;
        let mut out = SymMatrix::zeros(n);
        for i in 0..n {
            for k in 0..n {
                let a = self.get(i, k);
                if a == 0.0 {
                    continue;
                }
                let row = &other.data[k * n..(k + 1) * n];
                let dst = &mut out.data[i * n..(i + 1) * n];
                for (d, b) in dst.iter_mut().zip(row) {
                    *d += a * b;
                }
            }
        }
        out
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

/// Eigenvalues and eigenvectors (columns of `vectors`, row-major) of a symmetric matrix by
/// the cyclic Jacobi method, to machine precision.
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
/// eigenvalues are clamped to 0).
pub fn sqrt_psd(m: &SymMatrix) -> SymMatrix {
    let n = m.n;
    let (vals, vecs) = jacobi_eigen(m);
    let roots: Vec<f64> = clamp_noise(&vals).iter().map(|l| l.sqrt()).collect();
    let mut out = SymMatrix::zeros(n);
    for i in 0..n {
        for j in 0..n {
            let mut s = 0.0;
            for (k, r) in roots.iter().enumerate() {
                s += vecs.get(i, k) * r * vecs.get(j, k);
            }
            out.set(i, j, s);
        }
    }
    out
}

/// `tr sqrt(A B)` for symmetric PSD `A`, `B`, through the identity
/// `tr sqrt(A B) = tr sqrt(A^½ B A^½)` (the right side is symmetric PSD, so only real
/// symmetric eigendecompositions are needed).
pub fn trace_sqrt_product(a: &SymMatrix, b: &SymMatrix) -> f64 {
    let ah = sqrt_psd(a);
    let m = ah.matmul(b).matmul(&ah).symmetrised();
    let (vals, _) = jacobi_eigen(&m);
    clamp_noise(&vals).iter().map(|l| l.sqrt()).sum()
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
