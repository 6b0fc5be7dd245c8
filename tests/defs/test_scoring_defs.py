"""Scoring as Dagster runs it: partitions into a real warehouse, the row-accounting check, and
concurrent writers that must never hit DuckDB's lock. (What starts the runs is tested in
test_automation.py.)"""

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import cohort_scores, cohort_scoring_job, daily_cohort
from stroke_dagster.simulate.generator import simulate_patients
from stroke_dagster.warehouse import store as warehouse

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
    return int(
        warehouse.query_df(sql, [dt.date.fromisoformat(day)], settings=load_settings())["n"].item()
    )


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
        assert not node.pools  # days run in parallel; one run per day (dagster.yaml)
        assert node.automation_condition is not None
        retry = loaded.get_assets_def(key).op.retry_policy
        assert retry is not None and retry.max_retries >= 1
    assert loaded.resolve_job_def("cohort_scoring_job").partitions_def is not None
    sensors = {sensor.name for sensor in loaded.sensors}
    assert {"daily_loop_automation", "file_arrivals", "champion_rescoring"} <= sensors
    assert {"drift_retraining", "run_failure_alert"} <= sensors
    # Only the API telemetry summary keeps a clock; the daily loop runs on its data.
    assert {schedule.name for schedule in loaded.schedules} == {"inference_summary_schedule"}


def test_partition_materializes_and_rewrites_the_day(champion_home: Path) -> None:
    write_cohort(champion_home, DAY, n=300, bad=4)
    result = materialize(DAY)
    assert result.success
    meta = result.asset_materializations_for_node("cohort_scores")[0].metadata
    rows_in, scored, quarantined = (
        meta[k].value for k in ("rows_in", "rows_scored", "rows_quarantined")
    )
    assert (rows_in, scored, quarantined) == (300, 296, 4)
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "rows_accounted" and check.passed
    assert sum(meta[f"tier_{t}"].value for t in ("low", "elevated", "high")) == scored
    assert meta["model_version"].value == "1"
    assert day_count() == 296
    quarantine = warehouse.query_df(
        "SELECT cohort_date, reason FROM quarantine", settings=load_settings()
    )
    assert len(quarantine) == 4 and quarantine["reason"].str.contains("age out of range").all()

    # Same day again, with a corrected file: replaced, never duplicated.
    write_cohort(champion_home, DAY, n=250, bad=0, seed=1)
    assert materialize(DAY).success
    assert day_count() == 250
    assert (
        warehouse.query_df("SELECT count(*) AS n FROM quarantine", settings=load_settings())[
            "n"
        ].item()
        == 0
    )


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


# ------------------------------------------------------------------------------------------
# Concurrency: a 14-day backfill under the multiprocess executor + a writer outside Dagster
# ------------------------------------------------------------------------------------------

PRELOAD = [
    "stroke_dagster.defs.resources",
    "stroke_dagster.defs.scoring",
    "stroke_dagster.scoring.batch",
    "stroke_dagster.warehouse.store",
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
from stroke_dagster.warehouse import store as warehouse
from stroke_dagster.core.settings import load_settings
settings = load_settings()
rows = pd.DataFrame({"patient_id": [str(i) for i in range(5000)], "stroke_probability": 0.1,
                     "risk_tier": "low", "model_name": "StrokeRF", "model_version": "x",
                     "scored_at": pd.Timestamp("2026-01-01T00:00:00Z")})
start, writes, stop = time.time(), 0, sys.argv[1]
while not os.path.exists(stop) or writes < 5:  # until the backfill is over
    warehouse.replace_partition("score_history", "2025-12-31", rows, settings=settings)
    warehouse.query_df("SELECT count(*) FROM scores", settings=settings)
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
            # this module (the child imports it) and tests/ (the shared helpers)
            [
                str(Path(__file__).parent),
                str(Path(__file__).parents[1]),
                os.environ.get("PYTHONPATH", ""),
            ]
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
        "count(DISTINCT patient_id) AS ids FROM scores GROUP BY 1 ORDER BY 1",
        settings=load_settings(),
    )
    assert list(counts["day"]) == ["2025-12-31", *days]
    assert list(counts["n"]) == [5000] + [299] * 14 and (counts["n"] == counts["ids"]).all()
    quarantined = warehouse.query_df(
        "SELECT count(*) AS n FROM quarantine", settings=load_settings()
    )["n"].item()
    assert quarantined == 14
