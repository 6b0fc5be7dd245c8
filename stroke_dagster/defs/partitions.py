"""Partitioning shared by every daily asset: one partition per UTC day, today's included.

``end_offset=1`` opens today's partition at 00:00 UTC, so a cohort dropped in today is scored
today rather than rejected as an unknown partition until midnight.
"""

from dagster import DailyPartitionsDefinition

daily_partitions = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)

# Days that have ended (the last partition is yesterday): for summaries a schedule builds after
# midnight, which must not pick the day that just opened.
completed_daily_partitions = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")
