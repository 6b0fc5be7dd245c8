"""The statistics every comparison uses: ROC AUC, DeLong's intervals and paired-mean intervals.

One definition of each, so that the gate, recalibration, subgroups, the shadow comparison and
the performance tables report the same number for the same patients:

* :func:`auc`: ROC AUC, ``None`` when only one class is present;
* :func:`auc_ci`: an AUC with its 95 % DeLong interval (DeLong, DeLong & Clarke-Pearson 1988);
* :func:`paired_auc_difference`: two models' AUCs on the same patients and the 95 % interval of
  their difference (DeLong's paired test, in the fast form of Sun & Xu 2014);
* :func:`mean_ci`: the mean of paired per-patient differences with a normal 95 % interval;
* :func:`paired_ratio`: a ratio of paired means with its delta-method interval.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile: two-sided 95 % intervals


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC of ``p`` for the 0/1 outcomes ``y``; ``None`` without both classes."""
    y = np.asarray(y, dtype=int)
    m = int(y.sum())
    if m == 0 or m == len(y):
        return None
    return float(delong_components(y, np.asarray(p, dtype=float)[None, :])[0][0])


def delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """AUCs and DeLong structural components ``(aucs, v10, v01)`` of ``scores`` (models x patients).

    ``v10``: per positive, the share of negatives ranked below it; ``v01``: per negative, the
    share of positives ranked above it (ties count one half).
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    aucs, v10, v01 = [], [], []
    for k in range(scores.shape[0]):
        tx, ty = rankdata(pos[k]), rankdata(neg[k])
        tz = rankdata(np.concatenate([pos[k], neg[k]]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    return np.array(aucs), np.array(v10), np.array(v01)


def auc_ci(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """ROC AUC and its 95 % DeLong confidence interval ``(auc, low, high)``, within [0, 1]."""
    y = np.asarray(y, dtype=int)
    m, n = int(y.sum()), int(len(y) - y.sum())
    if m == 0 or n == 0:
        raise ValueError("AUC needs both classes")
    aucs, v10, v01 = delong_components(y, np.asarray(p, dtype=float)[None, :])
    value = float(aucs[0])
    var = (np.var(v10[0], ddof=1) / m if m > 1 else 0.0) + (
        np.var(v01[0], ddof=1) / n if n > 1 else 0.0
    )
    se = float(np.sqrt(var))
    return value, float(max(value - Z_95 * se, 0.0)), float(min(value + Z_95 * se, 1.0))


def paired_auc_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray
) -> tuple[float, float, float, float, float]:
    """``(AUC a, AUC b, a - b, CI low, CI high)`` of two models scored on the same patients."""
    y = np.asarray(y, dtype=int)
    scores = np.vstack([np.asarray(p_a, float), np.asarray(p_b, float)])
    m, n = int(y.sum()), int((1 - y).sum())
    if m < 2 or n < 2:
        raise ValueError("the paired AUC difference needs at least two patients of each class")
    aucs, v10, v01 = delong_components(y, scores)
    cov = np.cov(v10) / m + np.cov(v01) / n
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    half = Z_95 * math.sqrt(max(variance, 0.0))
    return float(aucs[0]), float(aucs[1]), diff, diff - half, diff + half


def mean_ci(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of paired per-patient differences and its 95 % CI (normal approximation)."""
    mean = float(np.mean(diff))
    se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
    return mean, mean - Z_95 * se, mean + Z_95 * se


def paired_ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """``(ratio, CI low, CI high)`` of ``mean(a) / mean(b)`` for paired per-patient values.

    The delta method for a ratio of paired means: SE = sd(a - r b) / (sqrt(n) mean(b)).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ratio = float(np.mean(a) / np.mean(b))
    if len(a) < 2:
        return ratio, -math.inf, math.inf
    se = float(np.std(a - ratio * b, ddof=1) / (math.sqrt(len(a)) * np.mean(b)))
    return ratio, ratio - Z_95 * se, ratio + Z_95 * se
