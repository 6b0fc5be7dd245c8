"""Drift monitoring in Dagster: daily drift and performance assets, their schedule and sensors.

Thin layer over :mod:`stroke_dagster.drift` (the same code as ``stroke drift --cohort-date``),
:mod:`stroke_dagster.performance` and :mod:`stroke_dagster.alerts`:

* ``drift_metrics`` (daily) checks the day's cohort and scores against the champion's stored
  detector, writes ``drift_metrics``/``drift_summary``, logs to MLflow (``stroke-monitoring``) and
  posts an alert to ``STROKE_ALERT_WEBHOOK`` when the day drifts (a failing webhook is logged,
  never fatal);
* ``performance_metrics`` (daily) computes realized ROC AUC and Brier once ``labels/<day>.csv``
  arrives (``labels_sensor`` starts it);
* ``daily_drift_check`` runs at 00:00 UTC for the day that just ended;
* ``retraining_sensor`` starts ``training_job`` when at least N of the last M checked days drifted
  against the current champion, at most once per cooldown.
"""

import datetime as dt
import json
import os
from dataclasses import dataclass

import dagster as dg

from stroke_dagster.defs.partitions import daily_partitions
from stroke_dagster.defs.resources import StrokeSettings

GROUP = "monitoring"
OWNERS = ["team:ml-platform"]
TRAINING_JOB = "training_job"


# ----------------------------------------------------------------------------------- assets
@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"duckdb", "python", "mlflow"},
    owners=OWNERS,
    pool="duckdb",
    deps=[dg.AssetKey("cohort_scores")],
    description=(
        "Drift of the day's cohort against the champion's training data: per input KS + "
        "Mann-Whitney (numeric) or chi-squared (categorical), missing-value rates, and the "
        "stroke_probability / risk-tier mix against the champion's holdout; Bonferroni-corrected "
        "and gated by an effect-size floor (Wasserstein / PSI). Replaces the day's rows of the "
        "DuckDB tables drift_metrics and drift_summary, logs to the MLflow experiment "
        "stroke-monitoring and alerts STROKE_ALERT_WEBHOOK when the day drifts."
    ),
)
def drift_metrics(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.alerts import drift_alert_text, post_alert
    from stroke_dagster.drift.daily import check_day
    from stroke_dagster.errors import InputError

    day = context.partition_key
    settings = stroke.settings()
    try:
        result = check_day(day, settings=settings, run_id=context.run_id)
    except InputError as exc:
        raise dg.Failure(description=str(exc)) from None
    report = result.report
    context.log.info(
        f"{day}: drift={report.is_drift} ({', '.join(report.drifted_features) or 'none'}) "
        f"vs StrokeRF v{report.reference_version}"
    )
    mlflow_run = _log_mlflow(context, day, report)
    alert = None
    if report.is_drift:
        alert = post_alert(
            drift_alert_text(
                day,
                report.drifted_features,
                context.run_id,
                model_version=report.reference_version,
                share_drifted=report.share_drifted,
                dagster_url=settings.alerts.dagster_url,
            ),
            url=settings.alerts.webhook,
        )
        if not alert.sent:
            context.log.warning(f"drift alert not delivered: {alert.error}")
    return dg.MaterializeResult(
        metadata={
            "is_drift": report.is_drift,
            "drifted_features": ", ".join(report.drifted_features) or "none",
            "n_drifted": len(report.drifted_features),
            "share_drifted": dg.MetadataValue.float(report.share_drifted),
            "reference_model_version": report.reference_version or "",
            "rows_checked": result.rows_valid,
            "rows_in": result.rows_in,
            "prediction_drift_rows": result.prediction_rows,
            "prediction_drift_note": result.prediction_note,
            "backend": report.backend,
            "correction": report.correction,
            "detector_fitted_now": result.detector_fitted_now,
            "alert_sent": bool(alert and alert.sent),
            "mlflow_run_id": mlflow_run or "",
            "tests": dg.MetadataValue.md(_markdown(report)),
        }
    )


def _log_mlflow(context: dg.AssetExecutionContext, day: str, report) -> str | None:  # noqa: ANN001
    """Log to MLflow; monitoring must not fail because the tracking store is unavailable."""
    from stroke_dagster.drift.tracking import log_drift_run

    try:
        return log_drift_run(day, report, dagster_run_id=context.run_id)
    except Exception as exc:
        context.log.warning(f"MLflow logging of the drift check failed: {exc}")
        return None


def _markdown(report) -> str:  # noqa: ANN001 - DriftReport
    lines = [
        "| feature | test | p-value | threshold | effect | floor | drift |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        p = "n/a" if r.p_value != r.p_value else f"{r.p_value:.3g}"
        lines.append(
            f"| {r.feature} | {r.test} | {p} | {r.threshold:.3g} | "
            f"{r.effect_metric} {r.effect_size:.3g} | {r.effect_floor:g} | "
            f"{'**yes**' if r.is_drift else 'no'} |"
        )
    return "\n".join(lines)


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"duckdb", "python"},
    owners=OWNERS,
    pool="duckdb",
    deps=[dg.AssetKey("cohort_scores")],
    description=(
        "Realized ROC AUC and Brier score of the day's scores once its outcome labels arrive "
        "(STROKE_HOME/labels/<day>.csv, columns id,stroke); replaces the day's rows of the DuckDB "
        "table performance_metrics. Without labels yet, it records nothing."
    ),
)
def performance_metrics(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.errors import InputError
    from stroke_dagster.performance import day_performance, write_performance

    day = context.partition_key
    try:
        frame = day_performance(day, stroke.settings())
    except InputError as exc:
        raise dg.Failure(description=str(exc)) from None
    if frame is None:
        context.log.info(f"no labels for {day} yet")
        return dg.MaterializeResult(metadata={"labelled": False, "rows_written": 0})
    written = write_performance(day, frame)
    first = frame.iloc[0]
    return dg.MaterializeResult(
        metadata={
            "labelled": True,
            "rows_written": written,
            "model_version": str(first["model_version"]),
            "n_labelled": int(first["n_labelled"]),
            "n_positive": int(first["n_positive"]),
            "roc_auc": _number(first["roc_auc"]),
            "brier": _number(first["brier"]),
        }
    )


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if number != number else number


# ------------------------------------------------------------------------ jobs and schedule
drift_job = dg.define_asset_job(
    "drift_job",
    selection=[drift_metrics],
    partitions_def=daily_partitions,
    description="The day's drift check (drift_metrics).",
)

performance_job = dg.define_asset_job(
    "performance_job",
    selection=[performance_metrics],
    partitions_def=daily_partitions,
    description="The day's realized performance once its labels arrived.",
)

daily_drift_check = dg.build_schedule_from_partitioned_job(
    drift_job,
    name="daily_drift_check",
    hour_of_day=0,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 00:00 UTC: drift check of the day that just ended.",
)


# ----------------------------------------------------------------------------- labels sensor
@dg.sensor(
    job=performance_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts performance_metrics for a day when STROKE_HOME/labels/<day>.csv appears "
    "or changes (cursor: modification time per file).",
)
def labels_sensor(context: dg.SensorEvaluationContext):
    from stroke_dagster.performance import labelled_days
    from stroke_dagster.settings import get_settings

    settings = get_settings()
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for day in labelled_days(settings):
        if day < daily_partitions.start.strftime("%Y-%m-%d"):
            continue
        mtime = (settings.labels_dir / f"{day}.csv").stat().st_mtime_ns
        if seen.get(day) == mtime:
            continue
        seen[day] = mtime
        requests.append(dg.RunRequest(run_key=f"labels-{day}-{mtime}", partition_key=day))
    if not requests:
        return dg.SkipReason(f"no new or changed label files in {settings.labels_dir}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


# ------------------------------------------------------------------------- retraining sensor
@dataclass(frozen=True)
class RetrainPolicy:
    """Retrain when ``drifted_days`` of the last ``window_days`` checked days drifted against
    the current champion, and no training run started within ``cooldown_hours``."""

    drifted_days: int = 3
    window_days: int = 7
    cooldown_hours: float = 72.0

    @classmethod
    def from_env(cls) -> "RetrainPolicy":
        return cls(
            drifted_days=int(os.environ.get("STROKE_RETRAIN_DRIFTED_DAYS", cls.drifted_days)),
            window_days=int(os.environ.get("STROKE_RETRAIN_WINDOW_DAYS", cls.window_days)),
            cooldown_hours=float(
                os.environ.get("STROKE_RETRAIN_COOLDOWN_HOURS", cls.cooldown_hours)
            ),
        )


def _recent_days(version: str, window: int):  # noqa: ANN202 - DataFrame
    from stroke_dagster import warehouse

    if not warehouse.warehouse_path().exists():
        import pandas as pd

        return pd.DataFrame({"cohort_date": [], "is_drift": []})
    return warehouse.query_df(
        "SELECT cohort_date, is_drift FROM drift_summary WHERE reference_model_version = ?"
        " ORDER BY cohort_date DESC LIMIT ?",
        [version, window],
        timeout=20.0,
    )


def _recent_training_run(instance: dg.DagsterInstance, since: dt.datetime):  # noqa: ANN202
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=TRAINING_JOB, created_after=since), limit=1
    )
    return runs[0] if runs else None


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts training_job (train, evaluate, register, gate) when drift persists: "
    "N of the last M checked days drifted against the current champion "
    "(STROKE_RETRAIN_DRIFTED_DAYS=3, STROKE_RETRAIN_WINDOW_DAYS=7), at most once per "
    "STROKE_RETRAIN_COOLDOWN_HOURS=72.",
)
def retraining_sensor(context: dg.SensorEvaluationContext):
    from stroke_dagster import registry

    policy = RetrainPolicy.from_env()
    now = dt.datetime.now(dt.UTC)
    state = json.loads(context.cursor) if context.cursor else {}
    champion = registry.resolve_alias("champion")
    if champion is None:
        return dg.SkipReason("no champion registered yet: nothing to compare drift against")
    days = _recent_days(champion, policy.window_days)
    drifted = [
        str(d)[:10] for d, flag in zip(days["cohort_date"], days["is_drift"], strict=True) if flag
    ]
    summary = (
        f"{len(drifted)} of the last {len(days)} checked day(s) drifted against champion "
        f"v{champion} (retrain at {policy.drifted_days} of {policy.window_days})"
    )
    if len(drifted) < policy.drifted_days:
        return dg.SkipReason(f"{summary}: not enough drift")
    cooldown = dt.timedelta(hours=policy.cooldown_hours)
    last = state.get("last_request_at")
    if last and now - dt.datetime.fromisoformat(last) < cooldown:
        return dg.SkipReason(
            f"{summary}, but retraining was requested at {last}: cooldown of "
            f"{policy.cooldown_hours:g} h not over"
        )
    run = _recent_training_run(context.instance, now - cooldown)
    if run is not None:
        return dg.SkipReason(
            f"{summary}, but {TRAINING_JOB} run {run.run_id} started within the cooldown of "
            f"{policy.cooldown_hours:g} h"
        )
    context.log.info(f"{summary}: requesting {TRAINING_JOB}")
    state = {"last_request_at": now.isoformat(), "champion": champion, "drifted_days": drifted}
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"retrain-v{champion}-{drifted[0]}",
                tags={
                    "stroke/trigger": "drift",
                    "stroke/champion": champion,
                    "stroke/drifted_days": ",".join(sorted(drifted)),
                },
            )
        ],
        cursor=json.dumps(state),
    )
