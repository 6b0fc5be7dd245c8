"""Stratified cross-validation of one parameter set, and the no-skill Brier score.

When a patient has several rows (labelled cohort days), the folds are grouped by patient
(``StratifiedGroupKFold``), so that no fold validates on a patient its model trained on; with one
row per patient they are plain stratified folds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from stroke_dagster.core.features import feature_frame, has_recurring_patients, patient_keys
from stroke_dagster.model.training.pipeline import build_pipeline, labels


def no_skill_brier(y: np.ndarray) -> float:
    """Brier score of always predicting the prevalence: ``p * (1 - p)``."""
    p = float(np.mean(y))
    return p * (1.0 - p)


@dataclass
class CVScores:
    """Cross-validated scores of one parameter set (means over the folds that ran)."""

    roc_auc: float
    brier: float
    oof: np.ndarray = field(repr=False)
    folds_run: int
    complete: bool


def folds(
    train_df: pd.DataFrame, cv_folds: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(fit rows, validation rows)`` of each fold: stratified, grouped by patient when a
    patient has several rows (a patient is never on both sides of a fold)."""
    y = labels(train_df)
    if has_recurring_patients(train_df):
        grouped = StratifiedGroupKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
        yield from grouped.split(train_df, y, groups=patient_keys(train_df).to_numpy())
    else:
        yield from StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(
            train_df, y
        )


def cross_validate(
    train_df: pd.DataFrame,
    params: dict[str, Any],
    cv_folds: int,
    seed: int,
    *,
    stop_above_brier: float | None = None,
    on_fold: Callable[[int, float], None] | None = None,
) -> CVScores:
    """Mean fold ROC AUC, mean fold Brier and out-of-fold probabilities of one parameter set.

    With ``stop_above_brier``, folds stop as soon as one fold's Brier score exceeds it (the
    parameter set is hopelessly mis-calibrated; the means then cover the folds run so far and
    the out-of-fold array is incomplete: ``complete`` is False). ``on_fold(step, mean_auc)`` is
    called after every other fold with the running mean ROC AUC (Optuna pruning hooks in here).
    """
    x, y = feature_frame(train_df), labels(train_df)
    oof = np.full(len(y), np.nan)
    aucs, briers = [], []
    for fit_idx, val_idx in folds(train_df, cv_folds, seed):
        model = build_pipeline(params).fit(x.iloc[fit_idx], y[fit_idx])
        prob = model.predict_proba(x.iloc[val_idx])[:, 1]
        oof[val_idx] = prob
        aucs.append(roc_auc_score(y[val_idx], prob))
        briers.append(brier_score_loss(y[val_idx], prob))
        if stop_above_brier is not None and briers[-1] > stop_above_brier:
            break
        if on_fold is not None:
            on_fold(len(aucs) - 1, float(np.mean(aucs)))
    return CVScores(
        roc_auc=float(np.mean(aucs)),
        brier=float(np.mean(briers)),
        oof=oof,
        folds_run=len(aucs),
        complete=len(aucs) == cv_folds,
    )
