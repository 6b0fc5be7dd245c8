"""Nightly cohort scoring: daily-partitioned assets, the schedule and the sensors that start them.

The assets are thin calls into :mod:`stroke_dagster.scoring` (the same code as ``stroke score``):

* ``daily_cohort`` validates ``STROKE_HOME/incoming/<day>.csv`` (or ``.parquet``) into a typed
  Parquet file under ``STROKE_HOME/cohorts`` and quarantines the rejected rows;
* ``cohort_scores`` scores it with the champion and replaces the day in the ``scores`` table.

Both write to DuckDB, which admits one writer process at a time: they run in the ``duckdb``
concurrency pool (limit 1, see ``dagster.yaml``) and every write also takes the warehouse's file
lock, so runs started outside Dagster (``stroke score``) queue behind them instead of failing.
"""

import datetime as dt
import json

import dagster as dg

from stroke_dagster import scoring, warehouse
from stroke_dagster.defs.partitions import daily_partitions
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.errors import InputError
from stroke_dagster.settings import COHORT_SUFFIXES, Settings, get_settings

GROUP = "scoring"
OWNERS = ["team:ml-platform"]
KINDS = {"duckdb", "python"}
SENSOR_READ_TIMEOUT_S = 20.0


def _cohort(settings: Settings, day: str, *, revalidate: bool) -> scoring.CohortSummary:
    """The day's validated cohort (validated now, or the current copy); a missing file fails."""
    try:
        if revalidate:
            return scoring.validate_day(settings, day)
        return scoring.current_cohort(settings, day)
    except InputError as exc:
        raise dg.Failure(description=str(exc)) from None


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    owners=OWNERS,
    pool="duckdb",
    description=(
        "The day's patient cohort from STROKE_HOME/incoming/<day>.csv|.parquet, validated against "
        "the patient schema into a typed Parquet file (STROKE_HOME/cohorts/<day>.parquet); every "
        "rejected row goes to the DuckDB `quarantine` table with its reason and the cohort date."
    ),
)
def daily_cohort(context: dg.AssetExecutionContext, stroke: StrokeSettings) -> dg.MaterializeResult:
    day = context.partition_key
    summary = _cohort(stroke.settings(), day, revalidate=True)
    context.log.info(
        f"cohort {day}: {summary.rows_valid} valid, {summary.rows_quarantined} quarantined"
    )
    return dg.MaterializeResult(
        metadata={
            "rows_in": summary.rows_in,
            "rows_valid": summary.rows_valid,
            "rows_quarantined": summary.rows_quarantined,
            "source_file": dg.MetadataValue.path(summary.source_file),
            "path": dg.MetadataValue.path(summary.path),
        }
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    owners=OWNERS,
    pool="duckdb",
    deps=[daily_cohort, dg.AssetKey("registered_model")],
    description=(
        "Stroke probability and risk tier (thresholds recorded with the model at training time) "
        "of every valid patient of the day, scored by the StrokeRF champion; replaces the day's "
        "rows of the DuckDB `scores` table in one transaction (re-runs never duplicate)."
    ),
)
def cohort_scores(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    day = context.partition_key
    settings = stroke.settings()
    cohort = _cohort(settings, day, revalidate=False)
    model = scoring.load_serving_model("champion")
    scored = scoring.score_file(cohort.path, model, cohort_date=day, quarantine_source=None)
    if scored.rows_scored != cohort.rows_valid:
        raise dg.Failure(f"scored {scored.rows_scored} rows of {cohort.rows_valid} valid ones")
    rows_in = cohort.rows_in
    context.log.info(
        f"scored {day} with {model.name} v{model.version}: {scored.rows_scored} of {rows_in} "
        f"rows, tiers {scored.tier_counts}"
    )
    tiers = scored.tier_counts
    return dg.MaterializeResult(
        metadata={
            "rows_in": rows_in,
            "rows_scored": scored.rows_scored,
            "rows_quarantined": cohort.rows_quarantined,
            **{f"tier_{name}": count for name, count in tiers.items()},
            "high_risk_share": round(tiers.get("high", 0) / max(scored.rows_scored, 1), 4),
            "model_version": model.version,
            "risk_thresholds": dg.MetadataValue.json(json.loads(model.thresholds.to_json())),
            "seconds": scored.seconds,
        }
    )


cohort_scoring_job = dg.define_asset_job(
    "cohort_scoring_job",
    selection=dg.AssetSelection.assets(daily_cohort, cohort_scores),
    partitions_def=daily_partitions,
    description="Validate and score one day's cohort into the warehouse.",
)


def _is_partition(day: str) -> bool:
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        return False
    first = dt.date.fromisoformat(daily_partitions.start.strftime("%Y-%m-%d"))
    return first <= date <= dt.datetime.now(dt.UTC).date()


@dg.schedule(
    default_status=dg.DefaultScheduleStatus.RUNNING,
    job=cohort_scoring_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description=(
        "Every night at 02:00 UTC, score yesterday's cohort (UTC) unless it is already scored or "
        "its file has not arrived."
    ),
)
def nightly_cohort_scoring(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    day = (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).date()
    key = day.isoformat()
    done = context.instance.get_materialized_partitions(cohort_scores.key)
    if key in done:
        return dg.SkipReason(f"{key} is already scored")
    source = get_settings().incoming_file(key)
    if source is None:
        return dg.SkipReason(f"no cohort file for {key} in {get_settings().incoming_dir}")
    return dg.RunRequest(run_key=f"nightly-{key}", partition_key=key)


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    job=cohort_scoring_job,
    minimum_interval_seconds=30,
    description=(
        "Starts the scoring of a day as soon as STROKE_HOME/incoming/<day>.csv|.parquet appears "
        "(or is replaced); the cursor remembers each file's modification time, so every file "
        "version is scored once."
    ),
)
def incoming_cohort_sensor(
    context: dg.SensorEvaluationContext,
) -> dg.SensorResult | dg.SkipReason:
    incoming = get_settings().incoming_dir
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for path in sorted(incoming.glob("*")) if incoming.is_dir() else []:
        if path.suffix not in COHORT_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        day, mtime = path.stem, path.stat().st_mtime_ns
        if seen.get(path.name) == mtime or not _is_partition(day):
            continue
        seen[path.name] = mtime
        requests.append(dg.RunRequest(run_key=f"{path.name}:{mtime}", partition_key=day))
    if not requests:
        return dg.SkipReason(f"no new cohort file in {incoming}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    job=cohort_scoring_job,
    minimum_interval_seconds=60,
    description=(
        "When the StrokeRF `champion` alias moves to another version, rescores the latest scored "
        "day with it (cursor = champion version)."
    ),
)
def champion_rescoring_sensor(
    context: dg.SensorEvaluationContext,
) -> dg.SensorResult | dg.SkipReason:
    from stroke_dagster import registry

    version = registry.resolve_alias("champion")
    if version is None:
        return dg.SkipReason("no champion registered yet")
    if context.cursor == version:
        return dg.SkipReason(f"champion is still v{version}")
    try:
        latest = warehouse.query_df(
            "SELECT strftime(cohort_date, '%Y-%m-%d') AS day, any_value(model_version) AS version "
            "FROM scores WHERE cohort_date = (SELECT max(cohort_date) FROM scores) GROUP BY 1",
            timeout=SENSOR_READ_TIMEOUT_S,
        )
    except warehouse.WarehouseBusyError:
        return dg.SkipReason("warehouse busy; checking again on the next tick")
    if latest.empty:
        return dg.SensorResult(skip_reason="no scored day to rescore", cursor=version)
    day, scored_with = str(latest["day"][0]), str(latest["version"][0])
    if scored_with == version:
        return dg.SensorResult(
            skip_reason=f"{day} is already scored with v{version}", cursor=version
        )
    request = dg.RunRequest(run_key=f"champion-v{version}-{day}", partition_key=day)
    return dg.SensorResult(run_requests=[request], cursor=version)
