"""Scoring as Dagster runs it: partitions into a real warehouse, the sensors, the schedule, and
concurrent writers that must never hit DuckDB's lock."""

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from stroke_dagster import warehouse
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import (
    champion_rescoring_sensor,
    cohort_scores,
    cohort_scoring_job,
    daily_cohort,
    incoming_cohort_sensor,
    nightly_cohort_scoring,
)
from stroke_dagster.simulate import simulate_patients

DAY = "2026-01-05"


RESOURCES = {"stroke": StrokeSettings()}


def write_cohort(home: Path, day: str, n: int = 200, bad: int = 0, seed: int = 0) -> Path:
    """``incoming/<day>.csv`` with ``n`` rows, the first ``bad`` of them with an impossible age."""
    df = simulate_patients(n, seed=seed, with_label=False).astype({"age": object})
    if bad:
        df.loc[: bad - 1, "age"] = "250"
    path = home / "incoming" / f"{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, na_rep="N/A")
    return path


def day_count(day: str = DAY) -> int:
    sql = "SELECT count(*) AS n FROM scores WHERE cohort_date = ?"
    return int(warehouse.query_df(sql, [dt.date.fromisoformat(day)])["n"].item())


def materialize(day: str, instance: dg.DagsterInstance | None = None, **kwargs):
    return dg.materialize(
        [daily_cohort, cohort_scores],
        partition_key=day,
        resources=RESOURCES,
        instance=instance,
        **kwargs,
    )


def test_definitions_pick_up_the_scoring_objects() -> None:
    from stroke_dagster.definitions import defs

    loaded = defs()
    assert "stroke" in loaded.resources  # the project's settings resource, used by name
    graph = loaded.resolve_asset_graph()
    for key in (daily_cohort.key, cohort_scores.key):
        node = graph.get(key)
        assert node.partitions_def is not None and node.owners and node.description
        assert {"dagster/kind/duckdb", "dagster/kind/python"} <= set(node.tags)
        assert node.pools == {"duckdb"}
    assert loaded.resolve_job_def("cohort_scoring_job").partitions_def is not None
    assert loaded.resolve_schedule_def("nightly_cohort_scoring")
    assert loaded.resolve_sensor_def("incoming_cohort_sensor")
    assert loaded.resolve_sensor_def("champion_rescoring_sensor")


def test_partition_materializes_and_rewrites_the_day(champion_home: Path) -> None:
    write_cohort(champion_home, DAY, n=300, bad=4)
    result = materialize(DAY)
    assert result.success
    meta = result.asset_materializations_for_node("cohort_scores")[0].metadata
    rows_in, scored, quarantined = (
        meta[k].value for k in ("rows_in", "rows_scored", "rows_quarantined")
    )
    assert (rows_in, scored, quarantined) == (300, 296, 4)
    assert sum(meta[f"tier_{t}"].value for t in ("low", "elevated", "high")) == scored
    assert meta["model_version"].value == "1"
    assert day_count() == 296
    quarantine = warehouse.query_df("SELECT cohort_date, reason FROM quarantine")
    assert len(quarantine) == 4 and quarantine["reason"].str.contains("age out of range").all()

    # Same day again, with a corrected file: replaced, never duplicated.
    write_cohort(champion_home, DAY, n=250, bad=0, seed=1)
    assert materialize(DAY).success
    assert day_count() == 250
    assert warehouse.query_df("SELECT count(*) AS n FROM quarantine")["n"].item() == 0


def test_cohort_scores_alone_validates_a_new_file(champion_home: Path) -> None:
    write_cohort(champion_home, DAY, n=120)
    result = dg.materialize(
        [daily_cohort, cohort_scores],
        partition_key=DAY,
        resources=RESOURCES,
        selection=[cohort_scores],
    )
    assert result.success
    assert day_count() == 120


def test_missing_cohort_file_fails_with_a_clear_message(stroke_home: Path) -> None:
    result = materialize(DAY, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert f"no cohort file for {DAY}" in failure.description


def test_file_sensor_requests_each_new_file_once(stroke_home: Path) -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance)
        skipped = incoming_cohort_sensor(context)
        assert isinstance(skipped, dg.SkipReason) and "no new cohort file" in skipped.skip_message

        write_cohort(stroke_home, "2026-01-03", n=10)
        write_cohort(stroke_home, "2026-01-04", n=10)
        (stroke_home / "incoming" / "notes.csv").write_text("not a cohort\n")
        (stroke_home / "incoming" / "2026-01-05.txt").write_text("wrong suffix\n")
        first = incoming_cohort_sensor(dg.build_sensor_context(instance=instance))
        assert sorted(r.partition_key for r in first.run_requests) == ["2026-01-03", "2026-01-04"]
        assert len({r.run_key for r in first.run_requests}) == 2

        again = incoming_cohort_sensor(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert isinstance(again, dg.SkipReason)

        path = write_cohort(stroke_home, "2026-01-04", n=12, seed=3)  # the file is replaced
        later = path.stat().st_mtime_ns + 1_000_000_000
        os.utime(path, ns=(later, later))
        replaced = incoming_cohort_sensor(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert [r.partition_key for r in replaced.run_requests] == ["2026-01-04"]
        assert json.loads(replaced.cursor)["2026-01-04.csv"] == later


def test_nightly_schedule_scores_yesterday_utc(stroke_home: Path) -> None:
    with dg.instance_for_test() as instance:
        at = dt.datetime(2026, 1, 6, 2, 0, tzinfo=dt.UTC)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        missing = nightly_cohort_scoring(context)
        assert isinstance(missing, dg.SkipReason) and "2026-01-05" in missing.skip_message

        write_cohort(stroke_home, "2026-01-05", n=10)
        request = nightly_cohort_scoring(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        )
        assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-01-05"

        # Already scored (here: by the file sensor's run) -> nothing to do.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=cohort_scores.key, partition="2026-01-05")
        )
        done = nightly_cohort_scoring(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        )
        assert isinstance(done, dg.SkipReason) and "already scored" in done.skip_message
    assert nightly_cohort_scoring.cron_schedule == "0 2 * * *"
    assert nightly_cohort_scoring.execution_timezone == "UTC"


def test_champion_sensor_rescores_the_latest_day_when_the_champion_moves(
    champion_home: Path,
) -> None:
    with dg.instance_for_test() as instance:
        nothing = champion_rescoring_sensor(dg.build_sensor_context(instance=instance))
        assert nothing.cursor == "1" and not nothing.run_requests  # no scored day yet

        # Days scored by an earlier champion (v0); the latest one must be rescored with v1.
        rows = pd.DataFrame(
            {
                "patient_id": ["a", "b"],
                "stroke_probability": [0.1, 0.2],
                "risk_tier": ["low", "high"],
                "model_name": "StrokeRF",
                "model_version": "0",
                "scored_at": pd.Timestamp("2026-01-06T02:00:00Z"),
            }
        )
        warehouse.replace_partition("scores", "2026-01-04", rows)
        warehouse.replace_partition("scores", "2026-01-05", rows)
        moved = champion_rescoring_sensor(dg.build_sensor_context(instance=instance, cursor="0"))
        assert [r.partition_key for r in moved.run_requests] == ["2026-01-05"]
        assert moved.run_requests[0].run_key == "champion-v1-2026-01-05" and moved.cursor == "1"

        same = champion_rescoring_sensor(dg.build_sensor_context(instance=instance, cursor="1"))
        assert isinstance(same, dg.SkipReason) and "still v1" in same.skip_message


# ------------------------------------------------------------------------------------------
# Concurrency: a 14-day backfill under the multiprocess executor + a writer outside Dagster
# ------------------------------------------------------------------------------------------

PRELOAD = [
    "stroke_dagster.defs.resources",
    "stroke_dagster.defs.scoring",
    "stroke_dagster.scoring",
    "stroke_dagster.warehouse",
    "sklearn.ensemble",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "sklearn.impute",
]


def backfill_job() -> dg.JobDefinition:
    """The scoring job with the multiprocess executor (each step in its own process)."""
    return dg.Definitions(
        assets=[daily_cohort, cohort_scores],
        jobs=[cohort_scoring_job],
        resources=RESOURCES,
        executor=dg.multiprocess_executor,
    ).resolve_job_def("cohort_scoring_job")


OUTSIDE_WRITER = """
import os, sys, time, pandas as pd
from stroke_dagster import warehouse
rows = pd.DataFrame({"patient_id": [str(i) for i in range(5000)], "stroke_probability": 0.1,
                     "risk_tier": "low", "model_name": "StrokeRF", "model_version": "x",
                     "scored_at": pd.Timestamp("2026-01-01T00:00:00Z")})
start, writes, stop = time.time(), 0, sys.argv[1]
while not os.path.exists(stop) or writes < 5:  # until the backfill is over
    warehouse.replace_partition("scores", "2025-12-31", rows)
    warehouse.query_df("SELECT count(*) FROM scores")
    writes += 1
    time.sleep(0.2)
print(start, time.time(), writes, flush=True)
"""

# One launcher process per slot of the run queue: it executes its share of the backfill's runs,
# each under the multiprocess executor (steps forked from a server that preloaded the code).
RUN_LAUNCHER = """
import json, sys, time
import dagster as dg
import test_scoring_defs as t
days, ref, run_config = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
instance = dg.DagsterInstance.from_ref(dg._core.instance.ref.InstanceRef.from_dict(ref))
for day in days:
    started = time.time()
    with dg.execute_job(dg.reconstructable(t.backfill_job), instance=instance,
                        run_config=run_config, tags={"dagster/partition": day}) as result:
        print(json.dumps([day, result.success, started, time.time()]), flush=True)
"""


@pytest.mark.slow
def test_backfill_of_14_days_and_an_outside_writer_never_hit_a_lock_error(
    champion_home: Path,
) -> None:
    days = [(dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(14)]
    for i, day in enumerate(days):
        write_cohort(champion_home, day, n=300, bad=1, seed=i)
    run_config = {
        "execution": {
            "config": {
                "max_concurrent": 2,
                "start_method": {"forkserver": {"preload_modules": PRELOAD}},
            }
        },
        "resources": {"stroke": {"config": {"stroke_home": str(champion_home)}}},
    }
    overrides = {"concurrency": {"pools": {"default_limit": 1}}}
    env = {
        **os.environ,
        "STROKE_HOME": str(champion_home),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }

    def spawn(code: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    with dg.instance_for_test(overrides=overrides) as instance:
        ref = json.dumps(instance.get_ref().to_dict())
        launchers = [
            spawn(RUN_LAUNCHER, json.dumps(days[k::3]), ref, json.dumps(run_config))
            for k in range(3)
        ]
        stop = champion_home / "backfill.done"
        writer = spawn(OUTSIDE_WRITER, str(stop))
        outputs = [proc.communicate(timeout=900) for proc in launchers]
        stop.touch()
        out, err = writer.communicate(timeout=300)
        failures = [
            record.event_log_entry.dagster_event.message
            for record in instance.get_event_records(
                dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_FAILURE)
            )
        ]
    assert writer.returncode == 0, err  # the writer outside Dagster never failed either
    assert not failures, failures
    for proc, (_, launcher_err) in zip(launchers, outputs, strict=True):
        assert proc.returncode == 0, launcher_err[-3000:]
    outcomes = [json.loads(line) for stdout, _ in outputs for line in stdout.split("\n") if line]
    assert sorted(o[0] for o in outcomes) == days and all(o[1] for o in outcomes)
    writer_start, writer_end, writes = map(float, out.split())
    runs_start, runs_end = min(o[2] for o in outcomes), max(o[3] for o in outcomes)
    assert writer_start < runs_end and runs_start < writer_end  # they really overlapped
    assert writes >= 5
    counts = warehouse.query_df(
        "SELECT strftime(cohort_date, '%Y-%m-%d') AS day, count(*) AS n, "
        "count(DISTINCT patient_id) AS ids FROM scores GROUP BY 1 ORDER BY 1"
    )
    assert list(counts["day"]) == ["2025-12-31", *days]
    assert list(counts["n"]) == [5000] + [299] * 14 and (counts["n"] == counts["ids"]).all()
    quarantined = warehouse.query_df("SELECT count(*) AS n FROM quarantine")["n"].item()
    assert quarantined == 14
