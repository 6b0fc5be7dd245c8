"""Risk-tier thresholds from out-of-fold training predictions (never the holdout).

``elevated`` is the highest threshold still catching ``ELEVATED_SENSITIVITY`` (80 %) of the
training strokes - a screening net; ``high`` flags the ``HIGH_RISK_SHARE`` (10 %) of training
patients with the highest predicted risk - a follow-up list a clinic can act on.
"""

from __future__ import annotations

import numpy as np

from stroke_dagster.core.risk import RiskThresholds

ELEVATED_SENSITIVITY = 0.80
HIGH_RISK_SHARE = 0.10


def choose_thresholds(
    y: np.ndarray,
    probabilities: np.ndarray,
    *,
    elevated_sensitivity: float = ELEVATED_SENSITIVITY,
    high_share: float = HIGH_RISK_SHARE,
) -> RiskThresholds:
    """Tier thresholds from (out-of-fold) training predictions.

    ``elevated``: the highest threshold at which at least ``elevated_sensitivity`` of the positive
    patients score ``>=`` it. ``high``: the threshold above which the top ``high_share`` of all
    patients fall. ``elevated`` is capped at ``high`` (tiers stay ordered).
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    positives = np.sort(p[y == 1])
    if positives.size == 0:
        raise ValueError("threshold selection needs at least one positive patient")
    # Keep the ceil(sensitivity * n_pos) highest-scoring positives at or above the threshold.
    keep = int(np.ceil(elevated_sensitivity * positives.size))
    elevated = float(positives[positives.size - keep])
    high = float(np.quantile(p, 1.0 - high_share, method="higher"))
    high = min(max(high, 0.0), 1.0)
    return RiskThresholds(elevated=min(elevated, high), high=high)
