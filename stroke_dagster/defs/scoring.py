"""Cohort scoring: the daily-partitioned assets that validate and score each day's cohort.

The assets are thin calls into :mod:`stroke_dagster.scoring.batch` (the same code as ``stroke
score``):

* ``daily_cohort`` validates ``STROKE_HOME/incoming/<day>.csv`` (or ``.parquet``) into a typed
  Parquet file under ``STROKE_HOME/cohorts`` and quarantines the rejected rows;
* ``cohort_scores`` scores it with the champion and replaces the day in the ``scores`` table.

Both run as soon as the day's file is reported (``incoming_cohort``, see :mod:`.sources`) through
their automation condition (:func:`.automation.on_new_upstream_data`); a new champion rescores
``cohort_scores`` only (``champion_rescoring`` sensor). Both write one warehouse file per day
(no lock), so days of a backfill proceed in parallel; runs of the same day wait for each other
(the instance's per-day run limit, ``dagster.yaml``).
"""

import json

import dagster as dg

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import Settings
from stroke_dagster.defs.automation import on_new_upstream_data, permanent_failure
from stroke_dagster.defs.daily import daily_asset
from stroke_dagster.defs.metadata import (
    COLUMN_SCHEMA,
    ROW_COUNT,
    glance,
    mlflow_version_url,
    patient_schema,
    pct,
    table_metadata,
)
from stroke_dagster.defs.partitions import daily_partitions
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.sources import champion_model, incoming_cohort
from stroke_dagster.model import registry
from stroke_dagster.scoring import batch as scoring
from stroke_dagster.warehouse import store as warehouse

GROUP = "scoring"
KINDS = {"duckdb", "python"}
ROWS_CHECK = "rows_accounted"


def _cohort(
    context: dg.AssetExecutionContext, settings: Settings, day: str, *, revalidate: bool
) -> scoring.CohortSummary:
    """The day's validated cohort (validated now, or the current copy).

    A missing or unusable file is a permanent failure (one line naming the day and the problem,
    no retry); anything else (the object store away) fails the step for its retry policy.
    """
    try:
        if revalidate:
            return scoring.validate_day(settings, day)
        return scoring.current_cohort(settings, day)
    except InputError as exc:
        found = settings.incoming_file(day)
        name = f"incoming/{found.name}" if found is not None else f"incoming/{day}.*"
        raise permanent_failure(context, f"{name}: {exc}", day=day, file=name) from None


@daily_asset(
    group=GROUP,
    kinds=KINDS,
    deps=[incoming_cohort],
    metadata={COLUMN_SCHEMA: patient_schema()},
    description=(
        "The day's patient cohort from `STROKE_HOME/incoming/<day>.csv|.parquet`, validated "
        "against the patient schema into a typed Parquet file "
        "(`STROKE_HOME/cohorts/<day>.parquet`); every rejected row goes to the DuckDB "
        "`quarantine` table with its reason and the cohort date."
    ),
)
def daily_cohort(context: dg.AssetExecutionContext, stroke: StrokeSettings) -> dg.MaterializeResult:
    day = context.partition_key
    summary = _cohort(context, stroke.settings(), day, revalidate=True)
    context.log.info(
        f"cohort {day}: {summary.rows_valid} valid, {summary.rows_quarantined} quarantined"
    )
    return glance(
        dg.MaterializeResult(
            metadata={
                ROW_COUNT: summary.rows_valid,
                "rows_in": summary.rows_in,
                "rows_valid": summary.rows_valid,
                "rows_quarantined": summary.rows_quarantined,
                "source_file": dg.MetadataValue.path(summary.source_file),
                "path": dg.MetadataValue.path(summary.path),
            }
        )
    )


@daily_asset(
    group=GROUP,
    kinds=KINDS,
    deps=[daily_cohort, champion_model],
    metadata=table_metadata("score_history"),
    # A new champion rescores through the champion_rescoring sensor (recent days only).
    automation_condition=on_new_upstream_data(ignore=[champion_model.key]),
    checks={
        ROWS_CHECK: "Every input row of the day is scored or quarantined: "
        "rows_in = rows_scored + rows_quarantined."
    },
    description=(
        "Stroke probability and risk tier (thresholds recorded with the model at training time) "
        "of every valid patient of the day, scored by the StrokeRF champion: one Delta commit "
        "replaces the day's slice of `score_history` (re-runs never duplicate; an earlier "
        "model's slice is kept, no longer current) and the `scores` view shows it."
    ),
)
def cohort_scores(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    day = context.partition_key
    settings = stroke.settings()
    cohort = _cohort(context, settings, day, revalidate=False)
    model = registry.load_model(registry.CHAMPION, settings=settings)  # resolved afresh
    provenance = warehouse.Provenance(  # a summary of an older version has no hash: the
        run_id=context.run_id,  # scored copy is hashed instead (see scoring.score_file)
        input_file=cohort.source_file if cohort.source_sha256 else cohort.path,
        input_sha256=cohort.source_sha256,
    )
    with settings.files.local_copy(cohort.path) as cohort_file:  # a download on object storage
        scored = scoring.score_file(
            cohort_file,
            model,
            cohort_date=day,
            quarantine_source=None,
            provenance=provenance,
            settings=settings,
        )
    rows_in = cohort.rows_in
    accounted = scored.rows_scored + cohort.rows_quarantined
    context.log.info(
        f"scored {day} with {model.name} v{model.version}: {scored.rows_scored} of {rows_in} "
        f"rows, tiers {scored.tier_counts}"
    )
    if scored.engine_fallback_batches:
        context.log.warning(
            f"the compiled engine failed on {scored.engine_fallback_batches} batch(es) of {day}: "
            "scikit-learn scored them (see the process log for the error)"
        )
    tiers = scored.tier_counts
    return glance(
        dg.MaterializeResult(
            metadata={
                ROW_COUNT: scored.rows_scored,
                "rows_in": rows_in,
                "rows_scored": scored.rows_scored,
                "rows_quarantined": cohort.rows_quarantined,
                **{f"tier_{name}": count for name, count in tiers.items()},
                "high_risk_pct": pct(tiers.get("high", 0) / max(scored.rows_scored, 1)),
                "model_version": model.version,
                "mlflow_version": mlflow_version_url(settings, model.version),
                "risk_thresholds": dg.MetadataValue.json(json.loads(model.thresholds.to_json())),
                "seconds": scored.seconds,
                # batches scikit-learn scored because the compiled engine failed on them
                "engine_fallback_batches": scored.engine_fallback_batches,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=ROWS_CHECK,
                    passed=accounted == rows_in,
                    description=f"{rows_in} rows in = {scored.rows_scored} scored + "
                    f"{cohort.rows_quarantined} quarantined"
                    if accounted == rows_in
                    else f"{rows_in} rows in but {scored.rows_scored} scored + "
                    f"{cohort.rows_quarantined} quarantined",
                    metadata={
                        "rows_in": rows_in,
                        "rows_scored": scored.rows_scored,
                        "rows_quarantined": cohort.rows_quarantined,
                    },
                )
            ],
        )
    )


cohort_scoring_job = dg.define_asset_job(
    "cohort_scoring_job",
    selection=dg.AssetSelection.assets(daily_cohort, cohort_scores),
    partitions_def=daily_partitions,
    description="Validate and score one day's cohort into the warehouse (by hand or backfill; "
    "the automation runs the same assets on its own).",
)
