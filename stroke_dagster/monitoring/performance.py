"""Realized performance once outcomes arrive.

The day's outcome labels (:func:`stroke_dagster.io.labels.day_labels`) joined with that day's
``scores`` give the realized ROC AUC and Brier score of the model that scored the day
(``performance_metrics``).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from stroke_dagster.clinical.stats import auc
from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import (
    ID,
    TARGET,
)
from stroke_dagster.core.settings import Settings
from stroke_dagster.io.labels import day_labels

log = logging.getLogger(__name__)

TABLE = "performance_metrics"


def day_performance(day: str, settings: Settings) -> pd.DataFrame | None:
    """One row per model version that scored ``day``; ``None`` when no labels arrived yet."""
    from stroke_dagster.warehouse import store as warehouse

    labels = day_labels(day, settings)
    if labels is None:
        return None
    scores = warehouse.query_df(
        "SELECT patient_id, stroke_probability, model_name, model_version FROM scores"
        " WHERE cohort_date = ?",
        [dt.date.fromisoformat(day)],
        settings=settings,
    )
    if scores.empty:
        raise InputError(f"labels arrived for {day} but the day has no scores")
    joined = scores.merge(labels, how="left", left_on="patient_id", right_on=ID)
    rows = []
    for (name, version), group in joined.groupby(["model_name", "model_version"], sort=True):
        labelled = group.dropna(subset=[TARGET])
        y = labelled[TARGET].to_numpy(dtype=int)
        p = labelled["stroke_probability"].to_numpy(dtype=float)
        rows.append(
            {
                "model_name": name,
                "model_version": str(version),
                "n_scored": len(group),
                "n_labelled": len(labelled),
                "n_positive": int(y.sum()),
                "roc_auc": auc(y, p),
                "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
                "mean_probability": float(p.mean()) if len(p) else None,
                "observed_rate": float(y.mean()) if len(y) else None,
            }
        )
    return pd.DataFrame(rows)


def write_performance(day: str, frame: pd.DataFrame, settings: Settings) -> int:
    """Replace the day's ``performance_metrics`` partition (atomically)."""
    from stroke_dagster.warehouse import store as warehouse

    return warehouse.replace_partition(
        TABLE, day, frame, extra={"computed_at": dt.datetime.now(dt.UTC)}, settings=settings
    )
