"""The command line beside the daily loop: ``stroke score --cohort-date`` and Dagster's days.

A day that the daily loop manages (its cohort file arrived, or any Dagster run was made for it)
is written only by Dagster: its runs are serialised per day and retried, which a command run
by hand cannot join. So ``stroke score --cohort-date D`` refuses such a day with one line. A
day it may write is reported to the Dagster instance as a materialization of ``cohort_scores``
(model version, rows), so drift, performance and rescoring learn of it like any scored day.
With no Dagster instance under ``DAGSTER_HOME`` (a bare scoring machine) there is nothing to
tell, and nothing is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stroke_dagster.core.errors import InputError

if TYPE_CHECKING:
    from stroke_dagster.core.settings import Settings
    from stroke_dagster.scoring.batch import ScoreSummary

SCORES = "cohort_scores"
ARRIVALS = "incoming_cohort"


def _instance(settings: Settings) -> Any:
    home = settings.dagster_home
    if not (home / "dagster.yaml").is_file() and not (home / "history").is_dir():
        return None
    import dagster as dg

    return dg.DagsterInstance.from_config(str(home))


def refuse_managed_day(settings: Settings, day: str) -> None:
    """Raise :class:`InputError` (one line) when the daily loop manages ``day``."""
    instance = _instance(settings)
    if instance is None:
        return
    import dagster as dg

    with instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": day}), limit=1)
        arrived = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(ARRIVALS), asset_partitions=[day]),
            limit=1,
        ).records
    if runs or arrived:
        raise InputError(
            f"{day} is scored by the daily loop (Dagster instance {settings.dagster_home}): "
            f"replace incoming/{day}.csv to score it again, or rescore it in Dagster "
            f"(runbook: rescore a day)"
        )


def report_scores(settings: Settings, summary: ScoreSummary) -> str | None:
    """Tell the Dagster instance that ``summary``'s day was scored; a warning if it could not."""
    instance = _instance(settings)
    if instance is None or summary.cohort_date is None:
        return None
    import dagster as dg

    try:
        with instance:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    SCORES,
                    partition=summary.cohort_date,
                    description="written by stroke score --cohort-date",
                    metadata={
                        "rows_in": summary.rows_in,
                        "rows_scored": summary.rows_scored,
                        "rows_quarantined": summary.rows_quarantined,
                        "model_version": summary.model_version,
                        "written_by": "stroke score",
                    },
                )
            )
    except Exception as exc:  # the warehouse is written; say what Dagster missed
        return f"warning: Dagster was not told of {summary.cohort_date}'s scores: {exc}"
    return None
