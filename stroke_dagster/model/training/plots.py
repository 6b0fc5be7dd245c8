"""ROC and calibration plots as PNG bytes (for MLflow and the Dagster UI)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(4.5, 4.5))


def roc_plot(y: np.ndarray, prob: np.ndarray) -> bytes:
    """ROC curve (PNG bytes)."""
    fpr, tpr, _ = roc_curve(y, prob)
    fig, ax = _figure()
    ax.plot(fpr, tpr, label=f"ROC AUC = {roc_auc_score(y, prob):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title("Holdout ROC curve")
    ax.legend(loc="lower right")
    return _png(fig)


def calibration_plot(y: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> bytes:
    """Reliability diagram over quantile bins of predicted risk (PNG bytes)."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, prob, n_bins=n_bins, strategy="quantile")
    fig, ax = _figure()
    top = float(max(predicted.max(initial=0), observed.max(initial=0), 0.05)) * 1.1
    ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.plot(predicted, observed, marker="o", label=f"model (Brier {brier_score_loss(y, prob):.4f})")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("Mean predicted stroke probability")
    ax.set_ylabel("Observed stroke rate")
    ax.set_title("Holdout calibration (quantile bins)")
    ax.legend(loc="upper left")
    return _png(fig)
