"""The online service's daily figures: one partition per UTC day, logged to MLflow.

``inference_daily_summary`` aggregates the day's request telemetry (the Parquet segments behind
the warehouse view ``inference_log``; see :mod:`stroke_dagster.warehouse.telemetry`) and logs it as
one
MLflow run per day in the experiment ``stroke-inference`` (re-materialising a day updates that
run). It then compacts every past day of telemetry into one file per day and deletes the days
older than the retention (``warehouse.telemetry_retention_days``, default 90). Parquet only: it
runs beside the scoring assets and never waits for them.
"""

import datetime as dt
import time

import dagster as dg

from stroke_dagster.core.settings import Settings
from stroke_dagster.defs.metadata import glance, mlflow_run_url
from stroke_dagster.defs.partitions import completed_daily_partitions as daily_partitions
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.warehouse import store as warehouse
from stroke_dagster.warehouse.telemetry import compact_telemetry, summarize_day

GROUP = "monitoring"
INFERENCE_EXPERIMENT = "stroke-inference"
DAY_TAG = "stroke.inference_date"


def log_summary_to_mlflow(settings: Settings, summary: dict) -> str:
    """Log ``summary`` to the day's run of the ``stroke-inference`` experiment; its run id."""
    import mlflow
    from mlflow.entities import Metric, Param

    from stroke_dagster.model.registry import configure_mlflow

    configure_mlflow(settings)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(INFERENCE_EXPERIMENT)
    if experiment is None:
        location = None
        if not settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
            settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
            location = settings.mlflow_artifacts_dir.resolve().as_uri()
        experiment_id = client.create_experiment(INFERENCE_EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    day = summary["date"]
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{DAY_TAG}` = '{day}'")
    if runs:
        run_id = runs[0].info.run_id
    else:
        run = client.create_run(experiment_id, run_name=f"inference-{day}", tags={DAY_TAG: day})
        run_id = run.info.run_id
    timestamp = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), timestamp, 0)
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    versions = ",".join(summary["model_versions"]) or "none"
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, "model_versions", versions)
    existing = client.get_run(run_id).data.params
    if "date" not in existing:
        client.log_batch(run_id, params=[Param("date", day)])
    client.set_terminated(run_id)
    return run_id


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"mlflow", "parquet"},
    owners=["team:ml-platform"],
    description=(
        "The scoring API's day (UTC): request count, error rates, latency p50/p99, patients "
        "scored, mean predicted probability and risk-tier counts, from the telemetry segments "
        "under telemetry/ of the file storage (STROKE_HOME or storage.url); logged to the MLflow "
        "experiment 'stroke-inference'. Then compacts past days to one file each and applies the "
        "telemetry retention."
    ),
)
def inference_daily_summary(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    settings = stroke.settings()
    summary = summarize_day(settings, context.partition_key)
    run_id = log_summary_to_mlflow(settings, summary)
    wh = warehouse.of(settings)
    compaction = compact_telemetry(
        wh.telemetry_dir,
        storage=wh.files,
        retention_days=wh.config.telemetry_retention_days,
        keep_from=dt.date.fromisoformat(context.partition_key),
    )
    context.log.info(
        f"{summary['date']}: {summary['request_count']} requests, "
        f"{summary['patients_scored']} patients scored (MLflow run {run_id})"
    )
    metadata = {
        key: (round(value, 6) if isinstance(value, float) else value)
        for key, value in summary.items()
        if value is not None and key != "model_versions"
    }
    metadata["model_versions"] = ", ".join(summary["model_versions"]) or "none"
    metadata["mlflow_run"] = mlflow_run_url(settings, run_id)
    metadata["days_compacted"] = len(compaction["compacted"])
    metadata["days_deleted"] = len(compaction["deleted"])
    return glance(dg.MaterializeResult(metadata=metadata))


inference_summary_job = dg.define_asset_job(
    "inference_summary_job",
    selection=dg.AssetSelection.assets(inference_daily_summary),
    partitions_def=daily_partitions,
    description="Summarise one day of the scoring API's telemetry into MLflow.",
)

inference_summary_schedule = dg.build_schedule_from_partitioned_job(
    inference_summary_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    name="inference_summary_schedule",
    hour_of_day=0,
    minute_of_hour=30,
    description="At 00:30 UTC, summarise the previous UTC day of API telemetry.",
)
