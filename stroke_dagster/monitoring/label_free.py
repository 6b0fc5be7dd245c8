"""Performance estimates before outcomes arrive (confidence-based performance estimation).

If the model's probabilities are calibrated for the scored population, each patient's stroke is a
Bernoulli draw with the predicted probability, so the expected confusion counts at every
threshold - and from them the expected ROC curve - follow from the probabilities alone (the idea
of NannyML's CBPE). Expected observed rate is the mean probability. The estimate is as good as
the calibration: it cannot see a change in how outcomes depend on the features (concept shift).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LabelFreeEstimate:
    """Expected ROC AUC and observed rate of one scored day, from probabilities alone."""

    n: int
    expected_roc_auc: float | None
    expected_observed_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_roc_auc(p: np.ndarray) -> float | None:
    """Expected ROC AUC when each outcome is drawn with its predicted probability.

    Sorted by decreasing ``p``, the expected true and false positives above each cut are the
    running sums of ``p`` and ``1 - p``; the area under the expected (FPR, TPR) curve is the
    estimate (ties handled as one step). ``None`` when every probability is 0 or 1.
    """
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    if len(p) == 0:
        return None
    values, inverse = np.unique(-p, return_inverse=True)
    pos = np.bincount(inverse, weights=p)
    neg = np.bincount(inverse, weights=1.0 - p)
    if pos.sum() <= 0 or neg.sum() <= 0:
        return None
    tpr = np.concatenate([[0.0], np.cumsum(pos) / pos.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(neg) / neg.sum()])
    return float(np.trapz(tpr, fpr))


def estimate(p: np.ndarray) -> LabelFreeEstimate:
    """The day's label-free estimate from its predicted probabilities."""
    p = np.asarray(p, dtype=float)
    return LabelFreeEstimate(
        n=len(p),
        expected_roc_auc=expected_roc_auc(p),
        expected_observed_rate=float(p.mean()) if len(p) else float("nan"),
    )
