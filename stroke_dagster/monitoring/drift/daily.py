"""One day's drift check, as the Dagster asset and ``stroke drift --cohort-date`` run it.

Reads the day's cohort (``STROKE_HOME/incoming/<day>.csv|.parquet``) through the typed copy
that scoring validates once (:func:`stroke_dagster.scoring.batch.current_cohort`: rejected rows are
quarantined) and the day's scores from the warehouse (for prediction drift), checks both
against the champion's stored detector and replaces the day's rows of ``drift_metrics`` and
``drift_summary`` in one transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stroke_dagster.core.settings import Settings
from stroke_dagster.monitoring.drift.config import DriftConfig
from stroke_dagster.monitoring.drift.report import DriftReport
from stroke_dagster.monitoring.drift.store import LoadedDetector, detector_for_model
from stroke_dagster.scoring.batch import current_cohort, read_cohort

METRICS_TABLE = "drift_metrics"
SUMMARY_TABLE = "drift_summary"


@dataclass
class DayResult:
    """The outcome of one day's check, for metadata, alerts and MLflow."""

    cohort_date: str
    report: DriftReport
    cohort_file: Path
    rows_in: int
    rows_valid: int
    prediction_rows: int
    prediction_note: str
    detector_fitted_now: bool


def read_valid_rows(path: str | Path) -> tuple[pd.DataFrame, int]:
    """The typed valid rows of a patient file (streamed in batches) and the number of rows read."""
    from stroke_dagster.scoring.batch import iter_validated

    frames, rows_in = [], 0
    for valid, quarantine in iter_validated(path):
        rows_in += len(valid) + len(quarantine)
        frames.append(valid)
    valid = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return valid, rows_in


def day_predictions(day: str, model_version: str, settings: Settings) -> tuple[pd.DataFrame, str]:
    """The day's scores from the warehouse made by ``model_version`` (empty when there are none)."""
    from stroke_dagster.warehouse import store as warehouse

    empty = pd.DataFrame({"stroke_probability": [], "risk_tier": []})
    if not warehouse.exists(settings):
        return empty, "no warehouse yet"
    scores = warehouse.query_df(
        "SELECT stroke_probability, risk_tier, model_version FROM scores WHERE cohort_date = ?",
        [dt.date.fromisoformat(day)],
        settings=settings,
    )
    if scores.empty:
        return empty, "the day is not scored yet"
    same = scores[scores["model_version"].astype(str) == str(model_version)]
    if same.empty:
        versions = ", ".join(sorted(scores["model_version"].astype(str).unique()))
        return empty, f"scored by v{versions}, not the reference v{model_version}"
    return same[["stroke_probability", "risk_tier"]].reset_index(drop=True), "ok"


def check_day(
    day: str,
    *,
    config: DriftConfig | None = None,
    settings: Settings,
    loaded: LoadedDetector | None = None,
    run_id: str | None = None,
    write: bool = True,
) -> DayResult:
    """Check the cohort of ``day`` (``YYYY-MM-DD``) against the champion; write the results."""
    dt.date.fromisoformat(day)
    config = config or settings.drift
    # The day's typed valid rows as scoring validated them (validated now if not yet).
    summary = current_cohort(settings, day)
    loaded = loaded or detector_for_model(config=config, settings=settings)
    cohort = read_cohort(settings, summary)
    predictions, note = day_predictions(day, loaded.version, settings)
    report = loaded.detector.check(
        cohort, predictions if not predictions.empty else None, config=config
    )
    if write:
        write_report(day, report, run_id=run_id, settings=settings)
    return DayResult(
        cohort_date=day,
        report=report,
        cohort_file=Path(summary.source_file),
        rows_in=summary.rows_in,
        rows_valid=len(cohort),
        prediction_rows=len(predictions),
        prediction_note=note,
        detector_fitted_now=loaded.fitted_now,
    )


def write_report(
    day: str,
    report: DriftReport,
    *,
    run_id: str | None = None,
    settings: Settings,
) -> int:
    """Replace the day's ``drift_metrics``, then its ``drift_summary`` (the commit of record)."""
    from stroke_dagster.warehouse import store as warehouse

    computed_at = dt.datetime.now(dt.UTC)
    version = report.reference_version or "unknown"
    metrics = report.to_frame()
    summary = pd.DataFrame([report.summary()]).drop(columns=["reference_model_version"])
    common = {"reference_model_version": version, "computed_at": computed_at}
    provenance = warehouse.Provenance(run_id=run_id, model_version=version)
    with warehouse.write_transaction(settings, provenance) as con:
        written = warehouse.replace_rows(
            con, METRICS_TABLE, day, metrics, {**common, "backend": report.backend}
        )
        warehouse.replace_rows(con, SUMMARY_TABLE, day, summary, {**common, "run_id": run_id})
    return written
