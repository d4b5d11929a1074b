#!/usr/bin/env python3
"""Peer timings for `cargo bench -p strata-eval --bench fid`.

Reads two feature matrices written by the benchmark (raw little-endian float64, N x D,
row-major), computes the mean and covariance of each with numpy (`np.cov(rowvar=False)`,
as pytorch-fid's `calculate_activation_statistics` does) and the Frechet distance three ways:

- pytorch-fid: its own `calculate_frechet_distance` (scipy.linalg.sqrtm of sigma1 @ sigma2,
  a Schur-based square root of a non-symmetric matrix);
- eigvals: the sum of square roots of the eigenvalues of sigma1 @ sigma2 (the shortcut
  torchmetrics' FID uses), with numpy.linalg.eigvals;
- eigh: the symmetric formulation strata uses, tr sqrt(A^1/2 B A^1/2) through two
  scipy.linalg.eigh calls (LAPACK), i.e. the same mathematics on OpenBLAS.

Prints one JSON object per line: {"method", "stats_s", "distance_s", "total_s", "fid"}.
Thread count: whatever OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say (the bench sets them to
the number of threads strata uses).

Run: .venv/bin/python scripts/bench/fid_peer.py A.f64 B.f64 N D [--skip-sqrtm]
"""
import json
import sys
import time

import numpy as np
from scipy import linalg


def load(path, n, d):
    return np.fromfile(path, dtype="<f8").reshape(n, d)


def frechet_sqrtm(mu1, s1, mu2, s2):
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance
    except ImportError:  # same formula, copied from pytorch-fid 0.3.0
        def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
            diff = mu1 - mu2
            covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
            if not np.isfinite(covmean).all():
                offset = np.eye(sigma1.shape[0]) * eps
                covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
            covmean = covmean.real
            return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def frechet_eigvals(mu1, s1, mu2, s2):
    ev = np.linalg.eigvals(s1 @ s2)
    tr = np.sqrt(ev.astype(complex)).real.sum()
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr)


def frechet_eigh(mu1, s1, mu2, s2):
    w, v = linalg.eigh(s1)
    top = np.abs(w).max()
    r = np.sqrt(np.where(w > 1e-12 * top, w, 0.0))
    c = v.T @ s2 @ v
    m = r[:, None] * (0.5 * (c + c.T)) * r[None, :]
    lam = linalg.eigh(m, eigvals_only=True)
    top = np.abs(lam).max()
    tr = np.sqrt(np.where(lam > 1e-12 * top, lam, 0.0)).sum()
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    skip_sqrtm = "--skip-sqrtm" in sys.argv
    if len(args) != 4:
        sys.exit(__doc__)
    pa, pb, n, d = args[0], args[1], int(args[2]), int(args[3])
    a, b = load(pa, n, d), load(pb, n, d)
    methods = [("eigh", frechet_eigh), ("eigvals", frechet_eigvals)]
    if not skip_sqrtm:
        methods.append(("pytorch-fid sqrtm", frechet_sqrtm))
    for name, fn in methods:
        t0 = time.perf_counter()
        mu1, s1 = a.mean(axis=0), np.cov(a, rowvar=False)
        mu2, s2 = b.mean(axis=0), np.cov(b, rowvar=False)
        t1 = time.perf_counter()
        fid = fn(mu1, s1, mu2, s2)
        t2 = time.perf_counter()
        print(json.dumps({"method": name, "stats_s": t1 - t0, "distance_s": t2 - t1,
                          "total_s": t2 - t0, "fid": fid}), flush=True)


if __name__ == "__main__":
    main()
