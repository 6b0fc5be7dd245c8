"""Per cohort day, beyond the scores: high-tier explanations, label-free estimates, calibration.

Each function reads the day's rows of the warehouse ``scores`` table (and, for explanations, the
day's validated cohort), computes, and replaces the day's rows of its own table:

- :func:`explain_high_tier` -> ``patient_explanations`` (every feature's signed contribution for
  each patient of the day's ``high`` tier, by the version that scored them);
- :func:`label_free_day` -> ``label_free_estimates`` (expected ROC AUC and observed rate);
- :func:`calibration_day` -> ``performance_calibration`` (once the day's labels arrived).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.clinical.calibration import calibration_report
from stroke_dagster.core.schema import ID, TARGET
from stroke_dagster.monitoring import label_free

log = logging.getLogger(__name__)

EXPLANATIONS_TABLE = "patient_explanations"
LABEL_FREE_TABLE = "label_free_estimates"
CALIBRATION_TABLE = "performance_calibration"


def _day_scores(day: str, settings: Any, tier: str | None = None) -> pd.DataFrame:
    from stroke_dagster.warehouse import store as warehouse

    sql = (
        "SELECT patient_id, stroke_probability, risk_tier, model_name, model_version"
        " FROM scores WHERE cohort_date = ?"
    )
    params: list[Any] = [dt.date.fromisoformat(day)]
    if tier is not None:
        sql += " AND risk_tier = ?"
        params.append(tier)
    return warehouse.query_df(sql, params, settings=settings)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    return str(value)


def explanation_rows(
    explanation: Any, cohort: pd.DataFrame, scored: pd.DataFrame, method: str
) -> pd.DataFrame:
    """Long table (patient x feature, ranked by |contribution|) of one explained batch."""
    from stroke_dagster.core.schema import FEATURES

    contrib = explanation.contributions.to_numpy()
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")
    n, k = contrib.shape
    rows = np.repeat(np.arange(n), k)
    cols = order.ravel()
    features = np.asarray(FEATURES, dtype=object)[cols]
    values = cohort[list(FEATURES)].to_numpy(dtype=object)[rows, cols]
    return pd.DataFrame(
        {
            "patient_id": scored["patient_id"].to_numpy()[rows],
            "model_name": scored["model_name"].to_numpy()[rows],
            "model_version": scored["model_version"].astype(str).to_numpy()[rows],
            "stroke_probability": scored["stroke_probability"].to_numpy()[rows],
            "risk_tier": scored["risk_tier"].to_numpy()[rows],
            "base_value": explanation.base_value[rows],
            "rank": np.tile(np.arange(1, k + 1), n).astype("int32"),
            "feature": features,
            "feature_value": [_text(v) for v in values],
            "contribution": contrib[rows, cols],
            "method": method,
        }
    )


def explain_high_tier(
    settings: Any, day: str, method: str = "treeshap", tier: str = "high"
) -> dict[str, Any]:
    """Explain every patient of ``day``'s ``tier`` with the version that scored them; store them.

    Returns counts and the largest additivity error (|base + sum - stroke_probability|).
    """
    from stroke_dagster.clinical.explain import explain
    from stroke_dagster.model import registry
    from stroke_dagster.scoring.batch import current_cohort, read_cohort
    from stroke_dagster.warehouse import store as warehouse

    scored = _day_scores(day, settings, tier)
    frames, worst = [], 0.0
    if len(scored):
        cohort = read_cohort(settings, current_cohort(settings, day))
        cohort[ID] = cohort[ID].astype(str)
        for version, group in scored.groupby("model_version", sort=True):
            patients = group.merge(cohort, left_on="patient_id", right_on=ID, how="inner")
            if len(patients) != len(group):
                log.warning(
                    "%s: %d scored %s-tier patients not in the cohort file; not explained",
                    day,
                    len(group) - len(patients),
                    tier,
                )
            if patients.empty:
                continue
            model = registry.load_model(str(version), settings=settings)
            e = explain(model.pipeline, patients, method=method)
            total = e.base_value + e.contributions.sum(axis=1).to_numpy()
            worst = max(worst, float(np.max(np.abs(total - patients["stroke_probability"]))))
            frames.append(explanation_rows(e, patients, patients, method))
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_explanations()
    written = warehouse.replace_partition(
        EXPLANATIONS_TABLE,
        day,
        frame,
        extra={"explained_at": dt.datetime.now(dt.UTC)},
        settings=settings,
    )
    n_patients = int(frame["patient_id"].nunique()) if len(frame) else 0
    return {
        "patients_explained": n_patients,
        "rows_written": written,
        "max_additivity_error": worst,
        "method": method,
    }


def _empty_explanations() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.Series(dtype=str),
            "model_name": pd.Series(dtype=str),
            "model_version": pd.Series(dtype=str),
            "stroke_probability": pd.Series(dtype=float),
            "risk_tier": pd.Series(dtype=str),
            "base_value": pd.Series(dtype=float),
            "rank": pd.Series(dtype="int32"),
            "feature": pd.Series(dtype=str),
            "feature_value": pd.Series(dtype=str),
            "contribution": pd.Series(dtype=float),
            "method": pd.Series(dtype=str),
        }
    )


def label_free_day(day: str, settings: Any) -> pd.DataFrame:
    """Expected ROC AUC and observed rate of the day per scoring version; stored."""
    from stroke_dagster.warehouse import store as warehouse

    scored = _day_scores(day, settings)
    rows = []
    for (name, version), group in scored.groupby(["model_name", "model_version"], sort=True):
        e = label_free.estimate(group["stroke_probability"].to_numpy(dtype=float))
        rows.append(
            {
                "model_name": name,
                "model_version": str(version),
                "n_scored": e.n,
                "expected_roc_auc": e.expected_roc_auc,
                "expected_observed_rate": e.expected_observed_rate,
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "model_name",
            "model_version",
            "n_scored",
            "expected_roc_auc",
            "expected_observed_rate",
        ],
    )
    warehouse.replace_partition(
        LABEL_FREE_TABLE,
        day,
        frame,
        extra={"computed_at": dt.datetime.now(dt.UTC)},
        settings=settings,
    )
    return frame


def labelled_scores(day: str, settings: Any) -> pd.DataFrame | None:
    """The day's scores joined with its labels (``stroke``); ``None`` when no labels arrived."""
    from stroke_dagster.io.labels import day_labels

    labels = day_labels(day, settings)
    if labels is None:
        return None
    return _day_scores(day, settings).merge(labels, left_on="patient_id", right_on=ID, how="inner")


def calibration_day(day: str, settings: Any) -> pd.DataFrame | None:
    """Calibration of the day's labelled scores per version; stored. ``None`` without labels."""
    from stroke_dagster.warehouse import store as warehouse

    scored = labelled_scores(day, settings)
    if scored is None:
        return None
    rows = []
    for (name, version), group in scored.groupby(["model_name", "model_version"], sort=True):
        y = group[TARGET].to_numpy(dtype=int)
        r = calibration_report(y, group["stroke_probability"].to_numpy(dtype=float))
        rows.append(
            {
                "model_name": name,
                "model_version": str(version),
                "n_labelled": r.n,
                "n_positive": r.n_events,
                "oe_ratio": r.oe_ratio,
                "mean_difference": r.mean_difference,
                "calibration_intercept": r.calibration_intercept,
                "calibration_slope": r.calibration_slope,
                "ece": r.ece,
                "brier": r.brier,
                "log_loss": r.log_loss,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    warehouse.replace_partition(
        CALIBRATION_TABLE,
        day,
        frame,
        extra={"computed_at": dt.datetime.now(dt.UTC)},
        settings=settings,
    )
    return frame
