"""Backend-independent statistics: effect sizes and multiple-testing corrections (NumPy only)."""

from __future__ import annotations

import numpy as np

PSI_EPSILON = 1e-4  # proportion used for an empty bin, so PSI stays finite


def psi(reference_share: np.ndarray, cohort_share: np.ndarray) -> float:
    """Population stability index between two vectors of bin (or category) proportions."""
    ref = np.clip(np.asarray(reference_share, dtype=float), PSI_EPSILON, None)
    cur = np.clip(np.asarray(cohort_share, dtype=float), PSI_EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference quantiles (duplicates dropped for discrete features)."""
    if reference.size == 0:
        return np.array([])
    inner = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def binned_share(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each of the ``len(edges) + 1`` bins (right-closed)."""
    if values.size == 0:
        return np.zeros(edges.size + 1)
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return counts / values.size


def category_share(codes: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Share of each of ``categories`` among ``codes`` (codes outside them are ignored)."""
    if codes.size == 0:
        return np.zeros(categories.size)
    return np.array([(codes == c).sum() for c in categories], dtype=float) / codes.size


def normalised_wasserstein(sorted_reference: np.ndarray, cohort: np.ndarray, scale: float) -> float:
    """Wasserstein-1 distance between the two empirical distributions, in units of ``scale``.

    For a pure location shift the distance equals the shift, so 0.25 means "a quarter of a reference
    standard deviation". Computed as the area between the two empirical CDFs.
    """
    if sorted_reference.size == 0 or cohort.size == 0:
        return float("nan")
    cur = np.sort(cohort)
    grid = np.concatenate([sorted_reference, cur])
    grid.sort(kind="mergesort")
    widths = np.diff(grid)
    ref_cdf = np.searchsorted(sorted_reference, grid[:-1], side="right") / sorted_reference.size
    cur_cdf = np.searchsorted(cur, grid[:-1], side="right") / cur.size
    distance = float(np.sum(np.abs(ref_cdf - cur_cdf) * widths))
    return distance / scale if scale > 0 else distance


def corrected_thresholds(p_values: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """Per-test significance threshold after the correction over the whole family of tests.

    ``bonferroni``: alpha / m for every test. ``fdr`` (Benjamini-Hochberg): the step-up cut-off
    k·alpha/m for the largest k with p_(k) < k·alpha/m, the same for every test (alpha/m when no
    test passes). NaN p-values (tests that could not run) are outside the family.
    """
    p = np.asarray(p_values, dtype=float)
    valid = ~np.isnan(p)
    m = int(valid.sum())
    if m == 0:
        return np.full(p.shape, alpha)
    if method == "bonferroni":
        return np.full(p.shape, alpha / m)
    if method != "fdr":
        raise ValueError(f"unknown correction {method!r}")
    ranked = np.sort(p[valid])
    steps = alpha * np.arange(1, m + 1) / m
    passing = np.nonzero(ranked < steps)[0]
    cutoff = steps[passing.max()] if passing.size else alpha / m
    return np.full(p.shape, cutoff)
