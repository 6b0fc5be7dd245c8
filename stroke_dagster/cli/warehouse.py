"""``stroke warehouse``: maintenance of the warehouse's Delta tables.

``stroke warehouse info`` prints each table's location, version and rows, and any write whose
commit of record is missing. ``stroke warehouse maintain`` applies the retention (score slices no
longer current, older than ``warehouse.history_days``), compacts small files, checkpoints and
vacuums every table (the daily ``warehouse_maintenance`` asset does the same).
``stroke warehouse migrate`` converts a warehouse of an earlier layout (the first access does it
too). ``stroke warehouse compact-telemetry`` compacts the API's request log into one file per past
day and deletes days older than the retention (the daily telemetry asset does this too).
The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("info", help="tables: location, version, rows; incomplete writes")
    sub.add_parser("maintain", help="retention, compaction, checkpoint and vacuum of every table")
    sub.add_parser("migrate", help="convert a warehouse of an earlier layout to Delta tables")
    compact = sub.add_parser(
        "compact-telemetry", help="one file per past day of telemetry; apply the retention"
    )
    compact.add_argument(
        "--retention-days",
        type=int,
        help="delete telemetry days older than this (default: the warehouse settings, 90)",
    )


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.warehouse import migrate as warehouse_migrate
    from stroke_dagster.warehouse import store as warehouse

    wh = warehouse.of(load_settings())
    if args.action == "migrate":
        result = warehouse_migrate.migrate(wh)
        wh.ensure()
        print(json.dumps(result.as_dict()))
    elif args.action == "maintain":
        print(json.dumps(wh.maintain()))
    elif args.action == "compact-telemetry":
        from stroke_dagster.warehouse.telemetry import compact_telemetry

        retention = args.retention_days
        if retention is None:
            retention = wh.config.telemetry_retention_days
        summary = compact_telemetry(wh.telemetry_dir, storage=wh.files, retention_days=retention)
        print(json.dumps(summary))
    else:
        con = wh.connect()
        try:
            tables = {
                name: {
                    "location": wh.table_uri(name),
                    "version": version,
                    "rows": con.execute(f"SELECT count(*) FROM {name}").fetchone()[0],
                }
                for name, version in con.execute(
                    f"SELECT * FROM {warehouse.SNAPSHOT_TABLE} ORDER BY 1"
                ).fetchall()
            }
        finally:
            con.close()
        info = {"tables": tables, "incomplete_writes": wh.incomplete_writes()}
        print(json.dumps(info))
    return 0
