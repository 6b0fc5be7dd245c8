"""Drift results logged to MLflow: one run per checked day in the ``stroke-monitoring`` experiment.

Uses the client API (no fluent active run), so it never interferes with a training run that may be
active in the same process.
"""

from __future__ import annotations

import time

from stroke_dagster.core.settings import Settings
from stroke_dagster.monitoring.drift.report import DriftReport

MONITORING_EXPERIMENT = "stroke-monitoring"
MONITORING_DESCRIPTION = (
    "Daily drift checks of the scored cohorts against the champion's training data: one run "
    "per checked day (`drift-<day>`), with every test's statistic, p-value and effect size."
)


def _experiment_id(client, settings: Settings) -> str:  # noqa: ANN001 - mlflow.MlflowClient
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    if experiment is not None:
        if "mlflow.experimentKind" not in (experiment.tags or {}):
            from stroke_dagster.model.registry import describe_experiment

            describe_experiment(
                client, experiment, experiment.experiment_id, MONITORING_DESCRIPTION
            )
        return experiment.experiment_id
    location = None
    if not settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
        settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        location = settings.mlflow_artifacts_dir.resolve().as_uri()
    try:
        return client.create_experiment(
            MONITORING_EXPERIMENT,
            artifact_location=location,
            tags={
                "mlflow.experimentKind": "custom_model_development",
                "mlflow.note.content": MONITORING_DESCRIPTION,
            },
        )
    except Exception:  # created concurrently by another process
        experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
        if experiment is None:
            raise
        return experiment.experiment_id


def log_drift_run(
    cohort_date: str,
    report: DriftReport,
    *,
    dagster_run_id: str | None = None,
    settings: Settings,
) -> str:
    """Log the day's verdict, per-feature p-values and effect sizes; returns the MLflow run id."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    from stroke_dagster.model.registry import configure_mlflow

    configure_mlflow(settings)
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    tags = {
        "cohort_date": cohort_date,
        "reference_model_version": report.reference_version or "",
        "is_drift": str(report.is_drift).lower(),
        "drifted_features": ",".join(report.drifted_features),
    }
    if dagster_run_id:
        url = f"{settings.alerts.dagster_ui}/runs/{dagster_run_id}"
        tags["dagster_run_id"] = dagster_run_id
        tags["dagster_run_url"] = url
        # the run's description (Markdown in MLflow's UI): the way back to the Dagster run
        tags["mlflow.note.content"] = (
            f"Drift check of {cohort_date} by Dagster run [{dagster_run_id[:8]}]({url})."
        )
    run = client.create_run(
        _experiment_id(client, settings), run_name=f"drift-{cohort_date}", tags=tags
    )
    now = int(time.time() * 1000)
    metrics = [
        Metric("is_drift", float(report.is_drift), now, 0),
        Metric("share_drifted", report.share_drifted, now, 0),
        Metric("n_drifted", float(len(report.drifted_features)), now, 0),
        Metric("n_cohort", float(report.n_cohort), now, 0),
    ]
    for row in report.results:
        if row.p_value == row.p_value:  # not NaN
            metrics.append(Metric(f"p_value.{row.feature}", row.p_value, now, 0))
        if row.effect_size == row.effect_size:
            metrics.append(Metric(f"effect_size.{row.feature}", row.effect_size, now, 0))
    params = [
        Param("backend", report.backend),
        Param("correction", report.correction),
        Param("alpha", str(report.alpha)),
    ]
    try:
        client.log_batch(
            run.info.run_id, metrics=metrics, params=params, tags=[RunTag("app", "stroke-dagster")]
        )
        client.log_dict(run.info.run_id, report.to_json(), "drift_report.json")
        client.log_table(run.info.run_id, report.to_frame(), "drift_metrics.json")
    finally:
        client.set_terminated(run.info.run_id)
    return run.info.run_id
