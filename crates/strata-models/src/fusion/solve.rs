//! A dense symmetric positive-definite solver (Cholesky), for the least-squares fit that
//! initialises the learned schedule. The systems are small (hidden width + 1 unknowns), so
//! a few lines of textbook Cholesky serve better than a linear-algebra dependency.

/// Solve the symmetric positive-definite system `A x = b` (Cholesky), `A` n×n row-major,
/// `b` n×m; returns x n×m.
pub(super) fn solve_spd(a: &[f64], b: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = if i == j {
                s.max(1e-300).sqrt()
            } else {
                s / l[j * n + j]
            };
        }
    }
    let mut x = b.to_vec();
    for c in 0..m {
        for i in 0..n {
            let mut s = x[i * m + c];
            for k in 0..i {
                s -= l[i * n + k] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i * m + c];
            for k in i + 1..n {
                s -= l[k * n + i] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spd_solver() {
        let a = [4.0, 1.0, 1.0, 3.0];
        let b = [1.0, 2.0];
        let x = solve_spd(&a, &b, 2, 1);
        assert!((4.0 * x[0] + x[1] - 1.0).abs() < 1e-12 && (x[0] + 3.0 * x[1] - 2.0).abs() < 1e-12);
    }
}
