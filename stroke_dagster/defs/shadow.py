"""Silent (shadow) scoring: thin assets over :mod:`stroke_dagster.scoring.shadow`.

* ``shadow_scores`` scores each day with the versions in shadow, after (never before) the
  champion's ``cohort_scores``: its own step and its own failure, so it can neither delay nor
  fail the day's scoring. A new champion's rescoring does not trigger it; a new cohort file does.
* ``shadow_comparison`` pairs them with the champion once the day's labels arrive, and judges an
  inconclusive challenger again on the pooled live evidence (one gate at a time: the registry
  pool, as for ``registered_model``).
"""

from typing import Any

import dagster as dg

from stroke_dagster.core.errors import InputError
from stroke_dagster.defs.automation import on_new_upstream_data
from stroke_dagster.defs.daily import daily_asset
from stroke_dagster.defs.metadata import ROW_COUNT, glance, records_table, table_metadata
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import cohort_scores, daily_cohort
from stroke_dagster.defs.sources import cohort_labels
from stroke_dagster.defs.training import REGISTRY_POOL
from stroke_dagster.model import registry
from stroke_dagster.scoring import batch as scoring
from stroke_dagster.scoring import shadow

GROUP = "shadow"


@daily_asset(
    group=GROUP,
    kinds={"python", "deltalake"},
    deps=[daily_cohort, cohort_scores],
    metadata=table_metadata("score_history"),
    # after the champion's scores exist; a champion rescoring does not re-run it
    automation_condition=on_new_upstream_data(ignore=[cohort_scores.key]),
    description=(
        "The day scored silently by the versions in shadow (the latest challenger and the "
        "version with the alias `shadow`): one `score_history` slice each, role 'shadow', never "
        "current, never in `scores`, never alerting."
    ),
)
def shadow_scores(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    day, settings = context.partition_key, stroke.settings()
    try:
        cohort = scoring.current_cohort(settings, day)
    except InputError as exc:  # the champion's step already failed on the same file
        raise dg.Failure(f"{day}: {exc}", allow_retries=False) from None
    run = shadow.score_day(settings, cohort, run_id=context.run_id)
    for version, summary in run.scored.items():
        context.log.info(f"shadow v{version} scored {day}: {summary.rows_scored} rows")
    if run.failed:  # the scored versions' slices are kept
        message = f"shadow scoring of {day} failed for " + "; ".join(
            f"v{v}: {e}" for v, e in run.failed.items()
        )
        if run.permanent:  # the version itself is unusable: no retry
            raise dg.Failure(message, allow_retries=False)
        raise RuntimeError(message)  # the step's retry policy tries again
    return glance(
        dg.MaterializeResult(
            metadata={
                ROW_COUNT: sum(s.rows_scored for s in run.scored.values()),
                "shadow_versions": ", ".join(f"v{v}" for v in run.scored) or "none in shadow",
                **{f"v{v}_high_risk": s.tier_counts.get("high", 0) for v, s in run.scored.items()},
            }
        )
    )


COMPARISON_COLUMNS = {
    "shadow_version": "string",
    "champion_version": "string",
    "n_patients": "int",
    "n_events": "int",
    "auc_difference": "float",
    "auc_difference_low": "float",
    "auc_difference_high": "float",
    "shadow_oe": "float",
    "champion_oe": "float",
}


@daily_asset(
    group=GROUP,
    kinds={"python", "deltalake"},
    deps=[shadow_scores, cohort_scores, cohort_labels],
    metadata=table_metadata(shadow.TABLE),
    pool=REGISTRY_POOL,  # it may move the champion alias
    description=(
        "Once the day's labels arrive: each shadow version against the champion on the same "
        "labelled patients (paired AUC difference with its 95% CI, O/E, net benefit at the tier "
        "thresholds) into `shadow_comparison`; the pooled figures over every labelled day, and "
        "an inconclusive challenger judged again by the gate on them (promoted when the live "
        "evidence shows non-inferiority)."
    ),
)
def shadow_comparison(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    day, settings = context.partition_key, stroke.settings()
    frame = shadow.compare_day(settings, day)
    if frame is None or frame.empty:
        return glance(dg.MaterializeResult(metadata={ROW_COUNT: 0}))
    metadata: dict[str, Any] = {
        ROW_COUNT: len(frame),
        "day": records_table(
            frame[list(COMPARISON_COLUMNS)].to_dict("records"), COMPARISON_COLUMNS
        ),
    }
    champion = registry.resolve_alias(registry.CHAMPION, settings=settings)
    for version in sorted(set(frame["shadow_version"]), key=int):
        if champion is None:
            break
        pooled = shadow.pooled(settings, version, champion)
        metadata[f"v{version}_pooled"] = dg.MetadataValue.json(_plain(pooled))
        verdict = shadow.rejudge(settings, version)
        if verdict is not None:
            context.log.info(f"v{version} judged on live days -> {verdict.alias}: {verdict.reason}")
            metadata[f"v{version}_live_verdict"] = f"{verdict.outcome}: {verdict.reason}"
    return glance(dg.MaterializeResult(metadata=metadata))


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if v is None or v != v else v) for k, v in values.items()}
