"""A snapshot of the loaded definitions: every asset (group, partitions, dependencies, automation
condition, pools, retry policy), asset check, job, sensor and schedule. A change to the asset graph
is then a visible diff in review (tests/snapshots/definitions.json), as in dagster-open-platform.

After an intended change, commit the new snapshot written by
``UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/defs/test_definitions_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

SNAPSHOT = Path(__file__).parents[1] / "snapshots" / "definitions.json"


def describe(defs: dg.Definitions) -> dict[str, Any]:
    """The definitions as plain, sorted JSON-able data (no timestamps, no paths)."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        condition = node.automation_condition
        partitions = node.partitions_def
        op = node.assets_def.op if node.is_materializable else None
        retry = op.retry_policy if op is not None else None
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "external": not node.is_materializable,
            "partitions": type(partitions).__name__ if partitions is not None else None,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "automation": condition.get_label() if condition is not None else None,
            "pool": op.pool if op is not None else None,
            "retries": retry.max_retries if retry is not None else None,
            "owners": sorted(node.owners),
        }
    checks = sorted(
        f"{check.asset_key.to_user_string()}:{check.name}" for check in graph.asset_check_keys
    )
    return {
        "assets": assets,
        "asset_checks": checks,
        "jobs": sorted(job.name for job in defs.jobs or []),
        "sensors": {
            sensor.name: {
                "default_status": sensor.default_status.value,
                "minimum_interval_seconds": sensor.minimum_interval_seconds,
            }
            for sensor in defs.sensors or []
        },
        "schedules": sorted(
            (schedule.name, schedule.cron_schedule) for schedule in defs.schedules or []
        ),
    }


def test_the_definitions_match_their_snapshot() -> None:
    from stroke_dagster.definitions import defs

    current = json.loads(json.dumps(describe(defs()), sort_keys=True, default=str))
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the definitions changed: review the difference, then regenerate with "
        "UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/defs/test_definitions_snapshot.py"
    )
