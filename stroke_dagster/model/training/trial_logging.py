"""Optuna trials as nested MLflow runs under the active run."""

from __future__ import annotations

from typing import Any

from stroke_dagster.model.training.cv import CVScores


def active_mlflow() -> Any:
    """The ``mlflow`` module when a run is active (trials are then logged as nested runs)."""
    import mlflow

    return mlflow if mlflow.active_run() is not None else None


def log_trial(
    mlflow: Any, number: int, params: dict[str, Any], scores: CVScores, feasible: bool
) -> None:
    with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True):
        mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})
        mlflow.log_metrics(
            {
                "cv_roc_auc": scores.roc_auc,
                "cv_brier": scores.brier,
                "feasible": float(feasible),
                "folds_run": float(scores.folds_run),
            }
        )
        mlflow.set_tag("stroke.stage", "tuning-trial")


def log_pruned(
    mlflow: Any, number: int, params: dict[str, Any], running_auc: float, folds_run: int
) -> None:
    with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True):
        mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})
        mlflow.log_metrics({"cv_roc_auc_running": running_auc, "folds_run": float(folds_run)})
        mlflow.set_tags({"stroke.stage": "tuning-trial", "pruned": "true"})
