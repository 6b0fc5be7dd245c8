"""Partitioning shared by every daily asset: one partition per UTC day."""

from dagster import DailyPartitionsDefinition

daily_partitions = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")
