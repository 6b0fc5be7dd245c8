"""Drift monitoring in Dagster: the daily drift and realized-performance assets and their checks.

Thin layer over :mod:`stroke_dagster.monitoring.drift` (the same code as ``stroke drift
--cohort-date``),
:mod:`stroke_dagster.monitoring.performance` and :mod:`stroke_dagster.monitoring.alerts`:

* ``drift_metrics`` (daily) runs once the day is scored, and again when it is rescored
  (automation condition). It checks the day's cohort and scores against the champion's stored
  detector, writes ``drift_metrics``/``drift_summary``, logs to MLflow (``stroke-monitoring``)
  and posts one alert per (day, model version) to the webhook when the day drifts (a failing
  webhook is logged, never fatal); the ``no_drift`` check turns WARN on a drifting day;
* ``performance_metrics`` (daily) computes realized ROC AUC and Brier once the day's labels
  arrived (``cohort_labels``) and the day is scored; labels that arrive first wait for the
  scores. Its ``calibrated`` check compares the observed stroke rate with the mean predicted
  probability.
"""

import math

import dagster as dg

from stroke_dagster.core.settings import Settings
from stroke_dagster.defs.automation import permanent_failure
from stroke_dagster.defs.daily import daily_asset
from stroke_dagster.defs.metadata import (
    ROW_COUNT,
    glance,
    mlflow_run_url,
    pct,
    records_table,
    table_metadata,
)
from stroke_dagster.defs.partitions import daily_partitions
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.sources import cohort_labels

GROUP = "monitoring"
DRIFT_CHECK = "no_drift"
CALIBRATION_CHECK = "calibrated"
# Observed stroke rate within this many standard errors of the mean predicted probability.
CALIBRATION_Z = 3.0


# ----------------------------------------------------------------------------------- assets
@daily_asset(
    group=GROUP,
    kinds={"duckdb", "python", "mlflow"},
    deps=[dg.AssetKey("cohort_scores")],
    metadata=table_metadata("drift_metrics"),
    checks={DRIFT_CHECK: "WARN when the day's cohort or scores drifted from the champion's data."},
    description=(
        "Drift of the day's cohort against the champion's training data: per input KS + "
        "Mann-Whitney (numeric) or chi-squared (categorical), missing-value rates, and the "
        "stroke_probability / risk-tier mix against the champion's holdout; Bonferroni-corrected "
        "and gated by an effect-size floor (Wasserstein / PSI). Replaces the day's rows of the "
        "DuckDB tables drift_metrics and drift_summary, logs to the MLflow experiment "
        "stroke-monitoring and alerts the webhook once per (day, model version) when it drifts."
    ),
)
def drift_metrics(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.monitoring.alerts import drift_alert_text, post_alert
    from stroke_dagster.monitoring.drift.daily import check_day

    day = context.partition_key
    settings = stroke.settings()
    try:
        result = check_day(day, settings=settings, run_id=context.run_id)
    except InputError as exc:
        raise permanent_failure(context, f"{day}: {exc}", day=day) from None
    report = result.report
    context.log.info(
        f"{day}: drift={report.is_drift} ({', '.join(report.drifted_features) or 'none'}) "
        f"vs StrokeRF v{report.reference_version}"
    )
    mlflow_run = _log_mlflow(context, day, report, settings)
    alert = None
    version = report.reference_version or ""
    already = report.is_drift and _alerted_before(context, day, version)
    if already:
        context.log.info(f"drift of {day} vs v{version} was alerted before: not alerting again")
    elif report.is_drift:
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
    features = ", ".join(report.drifted_features) or "none"
    return glance(
        dg.MaterializeResult(
            metadata={
                ROW_COUNT: len(report.results),
                "is_drift": report.is_drift,
                "drifted_features": ", ".join(report.drifted_features) or "none",
                "n_drifted": len(report.drifted_features),
                "drifted_tests_pct": pct(report.share_drifted),
                "reference_model_version": report.reference_version or "",
                "rows_checked": result.rows_valid,
                "rows_in": result.rows_in,
                "prediction_drift_rows": result.prediction_rows,
                "prediction_drift_note": result.prediction_note,
                "backend": report.backend,
                "correction": report.correction,
                "detector_fitted_now": result.detector_fitted_now,
                "alert_sent": bool(already or (alert and alert.sent)),
                "mlflow_run": mlflow_run_url(settings, mlflow_run) if mlflow_run else "",
                "tests": _tests_table(report),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=DRIFT_CHECK,
                    passed=not report.is_drift,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=f"{day} drifted vs v{version}: {features}"
                    if report.is_drift
                    else f"{day}: no drift vs v{version}",
                    metadata={"day": day, "drifted_features": features, "model_version": version},
                )
            ],
        )
    )


def _alerted_before(context: dg.AssetExecutionContext, day: str, version: str) -> bool:
    """Whether an earlier materialization of ``day`` sent a drift alert against ``version``."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[day]), limit=100
    ).records
    for record in records:
        event = record.asset_materialization
        if event is None:
            continue
        meta = {k: v.value for k, v in event.metadata.items()}
        if meta.get("alert_sent") is True and str(meta.get("reference_model_version")) == version:
            return True
    return False


def _log_mlflow(
    context: dg.AssetExecutionContext,
    day: str,
    report,  # noqa: ANN001
    settings: Settings,
) -> str | None:
    """Log to MLflow; monitoring must not fail because the tracking store is unavailable."""
    from stroke_dagster.monitoring.drift.tracking import log_drift_run

    try:
        return log_drift_run(day, report, dagster_run_id=context.run_id, settings=settings)
    except Exception as exc:
        context.log.warning(f"MLflow logging of the drift check failed: {exc}")
        return None


TESTS_COLUMNS = {
    "feature": "string",
    "test": "string",
    "p_value": "float",
    "threshold": "float",
    "effect": "string",
    "effect_size": "float",
    "floor": "float",
    "drift": "bool",
}


def _tests_table(report) -> dg.TableMetadataValue:  # noqa: ANN001 - DriftReport
    """The day's tests as a table the UI shows inline (4 significant digits)."""
    rows = [
        {
            "feature": r.feature,
            "test": r.test,
            "p_value": r.p_value,
            "threshold": r.threshold,
            "effect": r.effect_metric,
            "effect_size": r.effect_size,
            "floor": r.effect_floor,
            "drift": r.is_drift,
        }
        for r in report.results
    ]
    return records_table(rows, TESTS_COLUMNS)


@daily_asset(
    group=GROUP,
    kinds={"duckdb", "python"},
    deps=[dg.AssetKey("cohort_scores"), cohort_labels],
    metadata=table_metadata("performance_metrics"),
    checks={
        CALIBRATION_CHECK: f"WARN when the observed stroke rate is more than {CALIBRATION_Z:g} "
        "standard errors from the mean predicted probability (latest model version)."
    },
    description=(
        "Realized ROC AUC and Brier score of the day's scores once its outcome labels arrive "
        "(`STROKE_HOME/labels/<day>.csv`, columns id,stroke) and the day is scored; replaces the "
        "day's rows of the DuckDB table performance_metrics."
    ),
)
def performance_metrics(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.monitoring.performance import day_performance, write_performance

    day = context.partition_key
    settings = stroke.settings()
    try:
        frame = day_performance(day, settings)
    except InputError as exc:
        raise permanent_failure(context, f"{day}: {exc}", day=day) from None
    if frame is None:
        raise permanent_failure(context, f"no labels file for {day} in {settings.labels_dir}")
    written = write_performance(day, frame, settings)
    latest = frame.loc[frame["model_version"].astype(int).idxmax()]
    return glance(
        dg.MaterializeResult(
            metadata={
                ROW_COUNT: written,
                "labelled": True,
                "rows_written": written,
                "model_version": str(latest["model_version"]),
                "n_labelled": int(latest["n_labelled"]),
                "n_positive": int(latest["n_positive"]),
                "roc_auc": _number(latest["roc_auc"]),
                "brier": _number(latest["brier"]),
            },
            check_results=[_calibration(latest)],
        )
    )


def _calibration(row) -> dg.AssetCheckResult:  # noqa: ANN001 - pandas Series
    """Observed stroke rate against the mean predicted probability, in binomial standard errors."""
    n = int(row["n_labelled"])
    observed, predicted = _number(row["observed_rate"]), _number(row["mean_probability"])
    if not n or observed is None or predicted is None:
        return dg.AssetCheckResult(
            check_name=CALIBRATION_CHECK,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="no labelled scored rows: nothing to compare",
        )
    se = math.sqrt(max(predicted * (1 - predicted), 1e-12) / n)
    z = (observed - predicted) / se
    passed = abs(z) <= CALIBRATION_Z
    return dg.AssetCheckResult(
        check_name=CALIBRATION_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"observed stroke rate {observed:.2%} vs mean predicted {predicted:.2%} "
        f"(z = {z:+.1f}, n = {n}, v{row['model_version']})",
        metadata={
            "observed_rate": observed,
            "mean_predicted": predicted,
            "z": round(z, 3),
            "n_labelled": n,
            "model_version": str(row["model_version"]),
        },
    )


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if number != number else number


# ---------------------------------------------------- jobs (by hand, backfills)
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
