"""One whole training run, as ``stroke train`` does it: validate, split, tune, fit, evaluate,
register, gate - all inside one MLflow run (the active one if any, else a new parent run)."""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from stroke_dagster.errors import InputError
from stroke_dagster.features import split_train_holdout
from stroke_dagster.settings import MODEL_NAME, get_settings

log = logging.getLogger(__name__)


def load_training_data(
    data: Path | str | pd.DataFrame, source: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Read (if a path) and validate labelled patients: ``(valid, quarantine, source)``."""
    from stroke_dagster.ingest import read_patient_file
    from stroke_dagster.validation import validate_patients

    if isinstance(data, pd.DataFrame):
        raw, source = data, source or "dataframe"
    else:
        raw, source = read_patient_file(Path(data)), str(data)
    result = validate_patients(raw, require_label=True)
    if result.valid.empty:
        raise InputError(
            f"no valid labelled patients in {source} ({len(result.quarantine)} rejected)"
        )
    return result.valid, result.quarantine, source


def run_training(
    data: Path | str | pd.DataFrame,
    *,
    n_trials: int | None = None,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    auc_floor: float | None = None,
    tolerance: float | None = None,
    cv_folds: int | None = None,
    search_space: Any = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Train, register and gate a new ``StrokeRF`` version; return the JSON-able summary.

    ``data`` is a labelled patient file (CSV/Parquet) or a raw/typed DataFrame (``source`` then
    names it in MLflow and the quarantine). Rows failing validation are counted (and stored in the
    warehouse's quarantine table when the warehouse module is installed), never trained on.
    ``n_trials``/``cv_folds`` default to ``training.DEFAULT_N_TRIALS``/``DEFAULT_CV_FOLDS``;
    ``auc_floor``/``tolerance`` to ``STROKE_GATE_AUC_FLOOR``/``STROKE_GATE_TOLERANCE``.
    """
    from stroke_dagster import registry, training

    started = time.perf_counter()
    settings = get_settings()
    settings.ensure_dirs()
    valid, quarantine, source = load_training_data(data, source)
    train_df, holdout_df = split_train_holdout(valid, holdout_fraction=holdout_fraction, seed=seed)
    n_trials = training.DEFAULT_N_TRIALS if n_trials is None else int(n_trials)
    cv_folds = training.DEFAULT_CV_FOLDS if cv_folds is None else int(cv_folds)

    registry.configure_mlflow(settings)
    import mlflow

    with registry.mlflow_run(run_name="stroke-train", tags={"stroke.stage": "train"}) as run:
        registry.log_params_once(
            {
                "data_source": source[-250:],
                "rows_in": len(valid) + len(quarantine),
                "rows_quarantined": len(quarantine),
                "seed": seed,
                "holdout_fraction": holdout_fraction,
            },
            run.info.run_id,
        )
        tuning = training.tune(
            train_df, n_trials=n_trials, seed=seed, cv_folds=cv_folds, search_space=search_space
        )
        pipeline = training.fit_final(train_df, tuning.best_params)
        evaluation = training.evaluate(pipeline, holdout_df, tuning.thresholds)
        version = registry.register_model(pipeline, train_df, holdout_df, evaluation, tuning)
        decision = registry.gate(version, holdout_df, evaluation, auc_floor, tolerance)
        mlflow.set_tags({"gate_decision": decision.alias, "model_version": version})
        run_id = run.info.run_id

    written = _write_quarantine(quarantine, source)
    return {
        "model_name": MODEL_NAME,
        "version": version,
        "alias": decision.alias,
        "gate_reason": decision.reason,
        "previous_champion": decision.previous_champion,
        "cv_roc_auc": round(tuning.cv_roc_auc, 4),
        "cv_brier": round(tuning.cv_brier, 5),
        "holdout_roc_auc": round(evaluation.roc_auc, 4),
        "holdout_pr_auc": round(evaluation.pr_auc, 4),
        "holdout_brier": round(evaluation.brier, 5),
        "holdout_sensitivity": round(evaluation.sensitivity, 4),
        "holdout_specificity": round(evaluation.specificity, 4),
        "holdout_sensitivity_elevated": round(evaluation.sensitivity_elevated, 4),
        "holdout_specificity_elevated": round(evaluation.specificity_elevated, 4),
        "holdout_tier_counts": evaluation.tier_counts,
        "thresholds": {
            "elevated": round(evaluation.thresholds.elevated, 5),
            "high": round(evaluation.thresholds.high, 5),
        },
        "best_params": tuning.best_params,
        "n_trials": n_trials,
        "rows_in": len(valid) + len(quarantine),
        "rows_quarantined": len(quarantine),
        "quarantine_written": written,
        "data_source": source,
        "rows_train": len(train_df),
        "rows_holdout": len(holdout_df),
        "run_id": run_id,
        "train_seconds": round(time.perf_counter() - started, 2),
    }


def _write_quarantine(quarantine: pd.DataFrame, source: str) -> bool:
    """Store rejected rows in the warehouse when the warehouse module is part of the install."""
    if quarantine.empty or importlib.util.find_spec("stroke_dagster.warehouse") is None:
        return False
    from stroke_dagster import warehouse

    # A training file is not a daily cohort: cohort_date None.
    warehouse.write_quarantine(quarantine, source=f"train:{source}", cohort_date=None)
    return True
