"""Clinical governance in Dagster: the daily alert burden and its band check, and feedback.

Thin shell over :mod:`stroke_dagster.monitoring.alert_burden`:

* ``alert_burden`` (daily) runs once the day is scored, and again when it is rescored or its
  labels arrive (``cohort_labels``): unlike ``performance_metrics`` it does not wait for the
  labels, which only fill in PPV, sensitivity and NNE;
* ``feedback`` records the day's feedback file as it arrives (``clinician_feedback``); the
  alert burden of that day and of the day before (feedback on a day's flags comes that day or
  the next) runs again with it;
* its ``high_share_in_band`` check WARNs when the day's high-tier share leaves mean +- k sd of
  the daily shares of the days before it (``alert_burden.band_*`` settings).
"""

from typing import TYPE_CHECKING, Any

import dagster as dg

from stroke_dagster.defs.automation import HANDLED, permanent_failure
from stroke_dagster.defs.daily import daily_asset
from stroke_dagster.defs.metadata import ROW_COUNT, glance, pct, table_metadata
from stroke_dagster.defs.partitions import daily_partitions
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.sources import clinician_feedback, cohort_labels

if TYPE_CHECKING:
    from stroke_dagster.monitoring.alert_burden import Band

GROUP = "governance"
BAND_CHECK = "high_share_in_band"


def on_scores_or_labels() -> dg.AutomationCondition:
    """Like :func:`.automation.on_new_upstream_data`, but labels and feedback need not exist
    yet: the day runs once scored and again when its labels or feedback arrive."""
    labels = dg.AssetSelection.keys(cohort_labels.key, dg.AssetKey("feedback"))
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated())
        .since(HANDLED)
        .with_label("new scores or labels since last handled")
        & ~dg.AutomationCondition.any_deps_missing().ignore(labels)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("on new scores or labels")


def _band_check(band: "Band") -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {
        "day": band.day,
        "high_share_pct": pct(band.share),
        "reference_days": band.reference_days,
    }
    if band.mean is not None:
        metadata |= {
            "band_low_pct": pct(max(band.low, 0.0)),
            "band_high_pct": pct(band.high),
            "reference_mean_pct": pct(band.mean),
            "reference_sd_pct": pct(band.sd),
        }
    return dg.AssetCheckResult(
        check_name=BAND_CHECK,
        passed=band.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=band.reason,
        metadata=metadata,
    )


@daily_asset(
    group=GROUP,
    kinds={"duckdb", "python"},
    deps=[
        dg.AssetKey("cohort_scores"),
        cohort_labels,
        # feedback on a day's flags arrives that day or the next
        dg.AssetDep(
            "feedback",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=0, end_offset=1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    metadata=table_metadata("alert_burden"),
    automation_condition=on_scores_or_labels(),
    checks={
        BAND_CHECK: "WARN when the day's high-tier share leaves mean +- k sd of the daily "
        "shares of the days before it (STROKE_ALERT_BAND_K, STROKE_ALERT_BAND_DAYS); passes "
        "with the reason while fewer than STROKE_ALERT_BAND_MIN_DAYS reference days exist."
    },
    description=(
        "Alert burden of the day's scores: share of patients per risk tier and alerts per 100 "
        "patients (an alert: a patient in the high tier, or from STROKE_ALERT_FROM_TIER up); "
        "once `labels/<day>.csv` arrives, PPV, sensitivity and number needed to evaluate "
        "(1/PPV) flagging at or above elevated and at or above high; feedback overrides. "
        "Replaces the day's rows of the DuckDB table alert_burden "
        "(see sql/queries/alert_burden.sql)."
    ),
)
def alert_burden(context: dg.AssetExecutionContext, stroke: StrokeSettings) -> dg.MaterializeResult:
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.monitoring.alert_burden import burden_band, day_burden, write_burden

    day, settings = context.partition_key, stroke.settings()
    try:
        frame = day_burden(day, settings)
    except InputError as exc:
        raise permanent_failure(context, f"{day}: {exc}", day=day) from None
    written = write_burden(day, frame, settings)
    metadata: dict[str, Any] = {ROW_COUNT: written, "labelled": False}
    if len(frame):
        latest = frame.loc[frame["model_version"].astype(int).idxmax()]
        metadata |= {
            "model_version": str(latest["model_version"]),
            "n_patients": int(latest["n_patients"]),
            "alert_from_tier": str(latest["alert_from_tier"]),
            "alerts_per_100": float(latest["alerts_per_100"]),
            **{f"{t}_pct": pct(float(latest[f"share_{t}"])) for t in ("low", "elevated", "high")},
            "labelled": bool(latest.notna()["n_labelled"]),
            "n_feedback": int(latest["n_feedback"]),
            "alerts_overridden": int(latest["alerts_overridden"]),
        }
        for name in ("ppv_elevated", "ppv_high", "nne_high", "sensitivity_high", "override_rate"):
            value = latest[name]
            metadata[name] = None if value is None or value != value else float(value)
    band = burden_band(day, settings)
    context.log.info(f"{day}: {band.reason}")
    return glance(dg.MaterializeResult(metadata=metadata, check_results=[_band_check(band)]))


@daily_asset(
    group=GROUP,
    kinds={"python", "deltalake"},
    deps=[clinician_feedback],
    metadata=table_metadata("feedback"),
    description=(
        "The day's feedback file `STROKE_HOME/feedback/<day>.csv` recorded in the `feedback` "
        "table, each row linked to the prediction it answers (an API request id, or a day's "
        "batch score of the patient); a row naming no known prediction, or malformed, is "
        "quarantined with its reason (source `feedback`). Importing the file again replaces "
        "its rows."
    ),
)
def feedback(context: dg.AssetExecutionContext, stroke: StrokeSettings) -> dg.MaterializeResult:
    from stroke_dagster.audit.feedback import import_csv
    from stroke_dagster.core.errors import InputError

    day, settings = context.partition_key, stroke.settings()
    path = settings.feedback_dir / f"{day}.csv"
    try:
        with settings.files.local_copy(path) as local:
            summary = import_csv(local, settings=settings)
    except (InputError, FileNotFoundError) as exc:
        raise permanent_failure(context, f"feedback/{day}.csv: {exc}", day=day) from None
    context.log.info(
        f"feedback/{day}.csv: {summary.recorded} recorded, {summary.quarantined} quarantined"
    )
    return glance(
        dg.MaterializeResult(
            metadata={
                ROW_COUNT: summary.recorded,
                "rows_in": summary.rows_in,
                "recorded": summary.recorded,
                "quarantined": summary.quarantined,
            }
        )
    )


alert_burden_job = dg.define_asset_job(
    "alert_burden_job",
    selection=[alert_burden],
    partitions_def=daily_partitions,
    description="The day's alert burden (backfill past days oldest first: each day's band "
    "learns from the days before it).",
)
