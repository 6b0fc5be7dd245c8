"""``stroke train``'s run: the Dagster ``training_job`` itself, executed in-process.

The command line, the benchmarks and the tests train through the very graph the UI runs
(ingest -> labelled cohorts -> validate with the blocking quarantine check -> split -> tune ->
evaluate -> register -> gate), recorded in the Dagster instance under ``DAGSTER_HOME`` (default
``STROKE_HOME/dagster``), so a model trained from the command line shows in the UI with all its
metadata. This module is a shell: it reads no environment itself (the caller passes settings).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import MODEL_NAME, Settings

log = logging.getLogger(__name__)


def _check_file(path: Path) -> None:
    """Fail fast, before anything is tracked, on a missing file or missing columns."""
    from stroke_dagster.io.readers import read_patient_file
    from stroke_dagster.io.validation import check_columns

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
    Parquet file under ``STROKE_HOME/tmp``); ``None`` trains on ``settings.raw_csv`` (or, when it
    is absent and ``settings.allow_synthetic``, on synthetic patients, saying so in the summary
    and the version's tags). Raises :class:`InputError` with one line when the data are unusable
    (before anything is tracked) or the run fails.
    """
    from stroke_dagster.model.training_data import missing_raw_file

    # Refused before Dagster is even imported: one line, nothing created or tracked.
    if data is None and (refusal := missing_raw_file(settings)) is not None:
        raise InputError(refusal)
    if data is not None and not isinstance(data, pd.DataFrame):
        _check_file(Path(data))

    import dagster as dg

    from stroke_dagster.definitions import defs as load_defs
    from stroke_dagster.defs.launcher import process_tags
    from stroke_dagster.defs.training import REGISTRY_POOL
    from stroke_dagster.model import training

    settings.ensure_dirs()
    temporary: Path | None = None
    if isinstance(data, pd.DataFrame):
        temporary = settings.home / "tmp" / f"train-{uuid.uuid4().hex}.parquet"
        temporary.parent.mkdir(parents=True, exist_ok=True)
        data.astype(str).where(data.notna(), None).to_parquet(temporary, index=False)
        path = temporary
    else:
        path = Path(data) if data is not None else Path(settings.raw_csv)
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
    facts = _registry_facts(str(registered["version"]), settings)
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
        **facts,
    }


def _registry_facts(version: str, settings: Settings) -> dict[str, Any]:
    """The version's training-source tags and the champion after the gate, from the registry
    (what the summary states is what the registry says, not what this process assumed)."""
    from stroke_dagster.model import registry
    from stroke_dagster.model.training_data import (
        SOURCE_PATH_TAG,
        SOURCE_SHA256_TAG,
        SOURCE_TAG,
    )

    facts: dict[str, Any] = {
        "training_data": None,
        "training_data_path": None,
        "training_data_sha256": None,
        "champion_version": None,
        "champion_holdout_roc_auc": None,
    }
    try:
        client = registry.client(settings)
        tags = client.get_model_version(MODEL_NAME, version).tags
        facts["training_data"] = tags.get(SOURCE_TAG)
        facts["training_data_path"] = tags.get(SOURCE_PATH_TAG)
        facts["training_data_sha256"] = tags.get(SOURCE_SHA256_TAG)
        champion = registry.resolve_alias("champion", settings=settings)
        if champion is not None:
            facts["champion_version"] = champion
            auc = client.get_model_version(MODEL_NAME, champion).tags.get("holdout_roc_auc")
            facts["champion_holdout_roc_auc"] = round(float(auc), 4) if auc else None
    except Exception as exc:  # the run succeeded; the summary says what it could not read
        log.warning("registry facts of v%s unavailable: %s", version, exc)
    return facts


def describe(summary: dict[str, Any], settings: Settings) -> list[str]:
    """The human summary of a training run: the gate's outcome, the champion, the data it
    learnt from, where the state lives and what to run next."""
    version, alias = summary["version"], summary["alias"]
    outcome = "became champion" if alias == "champion" else f"stayed {alias}"
    lines = [
        f"Trained {summary['model_name']} v{version} on {summary['rows_train']} patients "
        f"({summary['rows_holdout']} held out), Dagster run {summary['dagster_run_id'][:8]}.",
        f"Gate: v{version} {outcome}: {summary['gate_reason']}",
    ]
    champion = summary.get("champion_version")
    auc = summary.get("champion_holdout_roc_auc")
    if champion is None:
        lines.append("Champion: none yet (nothing scores until a version passes the gate).")
    else:
        lines.append(
            f"Champion: v{champion}, holdout ROC AUC "
            + (f"{auc:.3f}." if auc is not None else "unknown.")
        )
    source = summary.get("training_data")
    if source == "synthetic":
        lines.append(
            f"Training data: SYNTHETIC patients (no file at {summary['training_data_path']}; "
            "STROKE_ALLOW_SYNTHETIC is on). Not for real patients: put the Kaggle file there "
            "and train again."
        )
    elif source == "real":
        digest = summary.get("training_data_sha256") or ""
        where = "a data frame" if summary.get("data_source") == "dataframe" else "the real file"
        path = "" if where == "a data frame" else f" {summary['training_data_path']}"
        lines.append(f"Training data: {where}{path} (sha256 {digest[:12]}).")
    else:
        lines.append(f"Training data: {summary.get('data_source')} (source tag unavailable).")
    lines += [
        f"State: STROKE_HOME={settings.home}",
        f"       MLflow tracking URI={settings.mlflow_tracking_uri}",
        f"       DAGSTER_HOME={settings.dagster_home}",
        "Next:  make ui     (Dagster webserver + daemon, "
        f"{settings.alerts.dagster_ui}: schedules and sensors tick)",
        f"       drop a cohort into {settings.incoming_dir}/<YYYY-MM-DD>.csv "
        "(or: stroke simulate --n 500 --date YYYY-MM-DD); the daemon scores it",
        "       stroke score --input patients.csv --output scores.csv   (score a file now)",
    ]
    return lines
