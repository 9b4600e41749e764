"""Error bounds for the Macenko parity tests (not a test module): how far the torch path
(float32) may lie from the numba path (float64 inside) on a given CPU, derived from the
arithmetic rather than from what one machine produced.

Notation: ``u = 2**-24`` is float32's unit roundoff (``eps32 = 2u``). A sum of ``k``
products computed in float32 in *any* order (pairwise, blocked, SIMD lanes, FMA or not)
is off by at most ``k u sum|a_i b_i|`` (Higham, *Accuracy and Stability*, eq. 3.5); for
long sums the order-independent probabilistic bound ``lam sqrt(k) u sum|a_i b_i|``
(Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019, Thm 3.1: fails with probability below
``2k exp(-lam**2 / 2)``) is the realistic one. Both hold whatever order a CPU's SIMD
width, AMX, MKL/oneDNN blocking or numba's reassociation picks.
"""

from __future__ import annotations

import numpy as np

#: float32 unit roundoff (half of ``np.finfo(np.float32).eps``).
U32 = 2.0**-24
#: ``lam`` of the probabilistic bound for the covariance sums: 2 N exp(-lam^2/2) < 1e-5 for N <= 1e6.
LAM = 7.0


def od64(x) -> np.ndarray:
    """Exact (float64) optical densities ``(B, 3, H*W)`` of an RGB batch ``(B, 3, H, W)``."""
    x = np.asarray(x, dtype=np.float64)
    return -np.log(np.clip(x.reshape(x.shape[0], 3, -1), 1.0, 255.0) / 255.0)


def normalize_given_stains(stains, od, target_stains, target_max):
    """Float64 Macenko output of one tile given its stain matrix ``(3, 2)`` and OD ``(3, N)``:
    ``(out (3, N), mat (3, 3), pinv (2, 3), c99 (2,))`` -- the maths both paths implement."""
    pinv = np.linalg.pinv(np.asarray(stains, np.float64))
    c99 = np.percentile(pinv @ od, 99, axis=1)
    mat = np.asarray(target_stains, np.float64) @ ((np.asarray(target_max, np.float64) / np.maximum(c99, 1e-6))[:, None] * pinv)
    return np.minimum(255.0 * np.exp(-(mat @ od)), 255.0), mat, pinv, c99


def torch_output_error(stains, od, target_stains, target_max) -> np.ndarray:
    """Per-pixel bound ``(3, N)`` on ``|torch path - normalize_given_stains(stains)|``, the
    torch path being handed float32 ``stains`` (its own). Stage by stage, in units of ``u``:

    - ``od = -log(I / 255)`` in float32: one division, one log (<= 1 ulp): ``|d od| <= u (1 + 2 od)``;
    - ``pinv`` by float32 SVD of a 3x2 matrix: backward error <= 3u, amplified <= 2 kappa(S)
      (perturbation of the pseudo-inverse): relative ``8 kappa u`` with the final 2-term product;
    - concentrations ``pinv @ od``: 3-term dot, ``3u sum|pinv||od|`` plus the pinv error; the
      99th percentile is an order statistic, 1-Lipschitz in the max norm, so ``c99`` moves by
      at most the largest concentration error;
    - ``mat = ts diag(tmax / c99) pinv`` (2-term sums, a division): ``4u`` more;
    - ``z = mat @ od`` (3-term dot) and ``255 exp(-z)``: ``|dz| <= (3u + e_mat) sum|mat| od + sum|mat| |d od|``,
      then the output's relative error is ``|dz| + 3u`` (exp <= 1 ulp, the product by 255, the cast).
    """
    u = U32
    out, mat, pinv, c99 = normalize_given_stains(stains, od, target_stains, target_max)
    e_pinv = 8.0 * np.linalg.cond(np.asarray(stains, np.float64)) * u
    conc_err = (3.0 * u + e_pinv) * (np.abs(pinv) @ od).max(axis=1) + u * np.abs(pinv).sum(axis=1) * (1.0 + 2.0 * od.max())
    e_mat = e_pinv + float((conc_err / np.maximum(c99, 1e-6)).max()) + 4.0 * u
    a = np.abs(mat) @ od  # sum_k |mat_ck| od_k
    dz = (3.0 * u + e_mat + 2.0 * u) * a + u * np.abs(mat).sum(axis=1)[:, None]
    return out * (dz + 3.0 * u)


def _stains_from_cov(od_tissue, cov, alpha: float) -> np.ndarray:
    """Float64 Macenko stain matrix of the tissue OD ``(3, n)`` given its covariance."""
    _, vecs = np.linalg.eigh(cov)
    plane = vecs[:, 1:3] * np.where(vecs[0, 1:3] < 0, -1.0, 1.0)
    proj = plane.T @ od_tissue
    lo, hi = np.percentile(np.arctan2(proj[1], proj[0]), [alpha, 100.0 - alpha])
    v_lo, v_hi = plane @ [np.cos(lo), np.sin(lo)], plane @ [np.cos(hi), np.sin(hi)]
    he = np.stack([v_lo, v_hi], 1) if v_lo[0] > v_hi[0] else np.stack([v_hi, v_lo], 1)
    he = he * np.where(he.sum(0) < 0, -1.0, 1.0)
    return he / np.linalg.norm(he, axis=0)


def torch_stain_error(od, *, beta: float = 0.15, alpha: float = 1.0, min_fraction: float = 0.01) -> np.ndarray:
    """Entrywise bound ``(3, 2)`` on ``|torch stains - exact stains|`` of one tile (OD ``(3, N)``).

    The torch path forms the tissue covariance in float32 from N-term sums
    (``E[x x^T] - m m^T``): each entry is off by at most ``e_N (S_ij + 2 n m_i m_j) / (n - 1)``
    with ``e_N = (LAM sqrt(n) + 20) u`` (the probabilistic N-term bound, plus the float32 OD
    error ``2u (1 + 2 od) / od <= 17u`` for OD > beta). The stain matrix follows from the
    covariance through eigenvectors and percentile angles, whose first-order sensitivity
    ``dS / dC_ij`` is measured here in float64 (central differences); the bound is
    ``sum_ij |dS / dC_ij| |dC_ij| + 64u`` (the float32 plane, projections, atan2, norms).
    Tiles with too little tissue take the fallback in both paths: bound 0.
    """
    keep = (od > beta).all(axis=0)
    t = od[:, keep]
    n = t.shape[1]
    if n < max(2.0, min_fraction * od.shape[1]):
        return np.zeros((3, 2))
    cov, mean = np.cov(t), t.mean(axis=1)
    mag = (t @ t.T + 2.0 * n * np.outer(mean, mean)) / (n - 1)
    e_n = (LAM * np.sqrt(n) + 20.0) * U32
    bound = np.full((3, 2), 64.0 * U32)
    for i in range(3):
        for j in range(i, 3):
            h = 1e-7 * mag[i, j]
            e = np.zeros((3, 3))
            e[i, j] = e[j, i] = h
            d = (_stains_from_cov(t, cov + e, alpha) - _stains_from_cov(t, cov - e, alpha)) / (2.0 * h)
            bound += np.abs(d) * e_n * mag[i, j]
    return bound


def distance_to_half(v) -> np.ndarray:
    """Distance of each value to the nearest rounding boundary ``k + 0.5``."""
    v = np.asarray(v, np.float64)
    return np.abs(v - np.floor(v) - 0.5)
