"""The warehouse's daily upkeep: retention, compaction, checkpoints and vacuum of its Delta tables.

A thin shell over :meth:`stroke_dagster.warehouse.store.Warehouse.maintain` (``stroke warehouse
maintain`` runs the same). It runs beside the daily loop: Delta's conflict detection refuses a
compaction that races a writer of the same day (the next day's run compacts it), and vacuum
deletes only files no table version of the time-travel window still references.
"""

import dagster as dg

from stroke_dagster.defs.automation import TRANSIENT_RETRY
from stroke_dagster.defs.metadata import glance
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.warehouse import store as warehouse

MAINTENANCE_CRON = "15 1 * * *"  # 01:15 UTC, after the night's scoring of the previous day


@dg.asset(
    group_name="monitoring",
    kinds={"deltalake"},
    owners=["team:ml-platform"],
    automation_condition=dg.AutomationCondition.on_cron(MAINTENANCE_CRON),
    retry_policy=TRANSIENT_RETRY,
    description=(
        "Daily upkeep of every warehouse Delta table: deletes score slices no longer current "
        "and older than warehouse.history_days (default 183), compacts small files, writes a "
        "checkpoint, and cleans up commits and removed files older than "
        "warehouse.time_travel_days (default 7)."
    ),
)
def warehouse_maintenance(stroke: StrokeSettings) -> dg.MaterializeResult:
    settings = stroke.settings()
    wh = warehouse.of(settings)
    summary = wh.maintain()
    return glance(
        dg.MaterializeResult(
            metadata={
                **summary,
                "history_days": wh.config.history_days,
                "time_travel_days": wh.config.time_travel_days,
                "incomplete_writes": len(wh.incomplete_writes()),
            }
        )
    )
