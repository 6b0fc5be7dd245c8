"""Holdout evaluation of a fitted pipeline: metrics, tiers and plots."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline

from stroke_dagster.core.features import feature_frame
from stroke_dagster.core.risk import RiskThresholds, assign_tiers
from stroke_dagster.core.schema import ID, TARGET
from stroke_dagster.model.training.pipeline import labels
from stroke_dagster.model.training.plots import calibration_plot, roc_plot


@dataclass
class Evaluation:
    """Holdout metrics of one fitted pipeline (classification metrics at ``thresholds.high``)."""

    roc_auc: float
    pr_auc: float
    brier: float
    accuracy: float
    sensitivity: float
    specificity: float
    sensitivity_elevated: float
    specificity_elevated: float
    n_holdout: int
    n_positive: int
    thresholds: RiskThresholds
    tier_counts: dict[str, int]
    predictions: pd.DataFrame = field(repr=False)
    roc_png: bytes = field(repr=False, default=b"")
    calibration_png: bytes = field(repr=False, default=b"")

    def metrics(self, prefix: str = "holdout_") -> dict[str, float]:
        """Numeric metrics for MLflow / asset metadata."""
        names = (
            "roc_auc",
            "pr_auc",
            "brier",
            "accuracy",
            "sensitivity",
            "specificity",
            "sensitivity_elevated",
            "specificity_elevated",
        )
        values = {f"{prefix}{n}": float(getattr(self, n)) for n in names}
        values[f"{prefix}prevalence"] = self.n_positive / max(self.n_holdout, 1)
        return values


def _rates(y: np.ndarray, flagged: np.ndarray) -> tuple[float, float, float]:
    """Sensitivity, specificity and accuracy of a 0/1 flag against labels."""
    tp = np.sum(flagged & (y == 1))
    tn = np.sum(~flagged & (y == 0))
    pos, neg = np.sum(y == 1), np.sum(y == 0)
    sens = tp / pos if pos else float("nan")
    spec = tn / neg if neg else float("nan")
    return float(sens), float(spec), float((tp + tn) / len(y))


def evaluate(
    pipeline: Pipeline, holdout_df: pd.DataFrame, thresholds: RiskThresholds
) -> Evaluation:
    """Score the holdout and compute metrics; ``thresholds`` come from training data only."""
    y = labels(holdout_df)
    prob = pipeline.predict_proba(feature_frame(holdout_df))[:, 1]
    tiers = assign_tiers(prob, thresholds)
    sens, spec, acc = _rates(y, prob >= thresholds.high)
    sens_e, spec_e, _ = _rates(y, prob >= thresholds.elevated)
    predictions = pd.DataFrame(
        {
            ID: holdout_df[ID].to_numpy() if ID in holdout_df else np.arange(len(y)).astype(str),
            "stroke_probability": prob,
            "risk_tier": tiers,
            TARGET: y,
        }
    )
    counts = pd.Series(tiers).value_counts()
    return Evaluation(
        roc_auc=float(roc_auc_score(y, prob)),
        pr_auc=float(average_precision_score(y, prob)),
        brier=float(brier_score_loss(y, prob)),
        accuracy=acc,
        sensitivity=sens,
        specificity=spec,
        sensitivity_elevated=sens_e,
        specificity_elevated=spec_e,
        n_holdout=len(y),
        n_positive=int(y.sum()),
        thresholds=thresholds,
        tier_counts={t: int(counts.get(t, 0)) for t in ("low", "elevated", "high")},
        predictions=predictions,
        roc_png=roc_plot(y, prob),
        calibration_png=calibration_plot(y, prob),
    )
