"""``stroke warehouse``: maintenance of the warehouse.

``stroke warehouse migrate`` converts a warehouse written by the single-file layout of earlier
versions (tables inside ``warehouse.duckdb``) to one Parquet file per table and day, keeping the
old file as ``warehouse.v1.duckdb`` (the pipeline also does this on its first access).
``stroke warehouse compact-telemetry`` compacts the API's request log into one file per past day
and deletes days older than the retention (the daily telemetry asset does this too).
``stroke warehouse vacuum`` deletes day files replaced longer ago than the grace period (the
next write of a day does it for that day; the daily telemetry asset for all of them).
``stroke warehouse info`` prints the entry point, the data directory and rows per table.
The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("migrate", help="convert a single-file warehouse of earlier versions")
    compact = sub.add_parser(
        "compact-telemetry", help="one file per past day of telemetry; apply the retention"
    )
    compact.add_argument(
        "--retention-days",
        type=int,
        help="delete telemetry days older than this (default: the warehouse settings, 90)",
    )
    sub.add_parser("vacuum", help="delete day files replaced longer ago than the grace period")
    sub.add_parser("info", help="entry point, data directory, rows per table")


def run(args: argparse.Namespace) -> int:
    from stroke_dagster import warehouse, warehouse_migrate
    from stroke_dagster.settings import load_settings

    wh = warehouse.of(load_settings())
    if args.action == "migrate":
        result = warehouse_migrate.migrate(wh)
        wh.ensure()
        print(json.dumps({"entry_point": str(wh.entry_path), **result.as_dict()}))
    elif args.action == "compact-telemetry":
        from stroke_dagster.api.telemetry import compact_telemetry

        retention = args.retention_days
        if retention is None:
            retention = wh.config.telemetry_retention_days
        summary = compact_telemetry(wh.telemetry_dir, storage=wh.files, retention_days=retention)
        print(json.dumps(summary))
    elif args.action == "vacuum":
        print(json.dumps({"files_removed": wh.vacuum(), "grace_seconds": wh.config.grace_seconds}))
    else:
        rows = {
            table: int(wh.query_df(f"SELECT count(*) AS n FROM {table}")["n"][0])
            for table in wh.schema().tables
        }
        print(
            json.dumps(
                {
                    "entry_point": str(wh.ensure()),
                    "data_dir": str(wh.data_dir),
                    "storage": wh.files.url,
                    "rows": rows,
                }
            )
        )
    return 0
