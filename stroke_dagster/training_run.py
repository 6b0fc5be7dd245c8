"""``stroke train``'s run: the Dagster ``training_job`` itself, executed in-process.

The command line, the benchmarks and the tests train through the very graph the UI runs
(ingest -> labelled cohorts -> validate with the blocking quarantine check -> split -> tune ->
evaluate -> register -> gate), recorded in the Dagster instance under ``DAGSTER_HOME`` (default
``STROKE_HOME/dagster``), so a model trained from the command line shows in the UI with all its
metadata. This module is a shell: it reads no environment itself (the caller passes settings).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from stroke_dagster.errors import InputError
from stroke_dagster.settings import MODEL_NAME, Settings


def _check_file(path: Path) -> None:
    """Fail fast, before anything is tracked, on a missing file or missing columns."""
    from stroke_dagster.ingest import read_patient_file
    from stroke_dagster.validation import check_columns

    if not path.is_file():
        raise InputError(f"training file not found: {path}")
    check_columns(list(read_patient_file(path).columns), require_label=True)


def _metadata(result: Any, node: str) -> dict[str, Any]:
    events = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in events[-1].metadata.items()} if events else {}


def _failure(result: Any) -> str:
    """One line saying why a training run did not finish."""
    for check in result.get_asset_check_evaluations():
        if not check.passed:
            return f"training blocked by check {check.check_name}: {check.description}"
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            user = event.step_failure_data.user_failure_data
            message = (user.description if user and user.description else None) or (
                error.message.strip().splitlines()[-1] if error else "unknown error"
            )
            return f"training failed at {event.step_key}: {message}"
    return "training run failed"


def run_training(
    data: Path | str | pd.DataFrame | None = None,
    *,
    settings: Settings,
    n_trials: int | None = None,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    cv_folds: int | None = None,
    n_estimators: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Run ``training_job`` in-process; return the JSON-able summary of the new version.

    ``data`` is a labelled patient file (CSV/Parquet) or a raw frame (written to a temporary
    Parquet file under ``STROKE_HOME/tmp``); ``None`` trains on ``settings.raw_csv`` (or synthetic
    patients, loudly, when it is absent). Raises :class:`InputError` with one line when the data
    are unusable or the run fails.
    """
    import dagster as dg

    from stroke_dagster import training
    from stroke_dagster.definitions import defs as load_defs
    from stroke_dagster.defs.launcher import process_tags
    from stroke_dagster.defs.training import REGISTRY_POOL

    settings.ensure_dirs()
    temporary: Path | None = None
    if isinstance(data, pd.DataFrame):
        temporary = settings.home / "tmp" / f"train-{uuid.uuid4().hex}.parquet"
        temporary.parent.mkdir(parents=True, exist_ok=True)
        data.astype(str).where(data.notna(), None).to_parquet(temporary, index=False)
        path = temporary
    else:
        path = Path(data) if data is not None else Path(settings.raw_csv)
        if data is not None:
            _check_file(path)
    tuning: dict[str, Any] = {
        "n_trials": training.DEFAULT_N_TRIALS if n_trials is None else int(n_trials),
        "cv_folds": training.DEFAULT_CV_FOLDS if cv_folds is None else int(cv_folds),
        "seed": int(seed),
    }
    if n_estimators is not None:
        tuning["n_estimators"] = list(n_estimators)
    run_config = {
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
        "ops": {
            "tuned_model": {"config": tuning},
            "patient_split": {"config": {"holdout_fraction": holdout_fraction}},
        },
        "resources": {
            "stroke": {
                "config": {
                    "stroke_home": str(settings.home),
                    "raw_csv": str(path),
                    "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                    "auc_floor": settings.gate.auc_floor,
                    "gate_tolerance": settings.gate.tolerance,
                }
            }
        },
    }
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    try:
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            # One registration at a time, also against runs the daemon launches.
            instance.event_log_storage.set_concurrency_slots(REGISTRY_POOL, 1)
            job = load_defs().resolve_job_def("training_job")
            result = job.execute_in_process(
                run_config=run_config,
                instance=instance,
                raise_on_error=False,
                # host and pid: run monitoring fails the run if this process dies mid-run
                tags={"stroke/launched_by": "stroke train", **process_tags()},
            )
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    if not result.success:
        raise InputError(f"{_failure(result)} (Dagster run {result.run_id})")
    raw = _metadata(result, "raw_patients")
    clean = _metadata(result, "clean_patients")
    tuned = _metadata(result, "tuned_model")
    evaluation = _metadata(result, "model_evaluation")
    registered = _metadata(result, "registered_model")
    split = _metadata(result, "patient_split")
    gate_figures = {
        k: v for k, v in registered.items() if k.startswith("gate_") and k != "gate_criteria"
    }
    if "gate_criteria" in registered:  # a table in the UI, a list here
        gate_figures["gate_criteria"] = [r.data for r in registered["gate_criteria"].records]
    return {
        "model_name": MODEL_NAME,
        "version": registered["version"],
        "forest_version": registered.get("forest_version", registered["version"]),
        "recalibrated": bool(registered.get("recalibrated", False)),
        "alias": registered["alias"],
        "gate_reason": registered["gate_reason"],
        "previous_champion": registered["previous_champion"] or None,
        "change_reason": registered.get("change_reason"),
        **{k: v for k, v in gate_figures.items() if k not in ("gate_reason",)},
        "cv_roc_auc": round(tuned["cv_roc_auc"], 4),
        "cv_brier": round(tuned["cv_brier"], 5),
        **{k: round(float(v), 5) for k, v in evaluation.items() if k.startswith("holdout_")},
        "holdout_tier_counts": evaluation.get("tier_counts"),
        "thresholds": {
            "elevated": round(evaluation["threshold_elevated"], 5),
            "high": round(evaluation["threshold_high"], 5),
        },
        "best_params": tuned["best_params"],
        "n_trials": tuned["n_trials"],
        "rows_in": clean["rows_in"],
        "rows_quarantined": clean["rows_quarantined"],
        "data_source": raw.get("source") if temporary is None else "dataframe",
        "synthetic": raw.get("synthetic"),
        "rows_train": split["train_rows"],
        "rows_holdout": split["holdout_rows"],
        "mlflow_run_id": tuned["mlflow_run_id"],
        "dagster_run_id": result.run_id,
    }
