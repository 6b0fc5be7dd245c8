"""Crashes and transient outages heal through Dagster's own machinery (slow: a real daemon).

* Every Dagster process (the daemon, its code server and the run worker) is killed while a
  day's run executes; the daemon is started again on the same instance (the project's
  ``dagster.yaml``). Run monitoring finds the dead worker through the launcher, marks the run
  failed, run retries launch it again, and the day ends up scored exactly once.
* The registry is locked (an exclusive lock on MLflow's sqlite store) while a day is scored:
  the step fails, is retried with backoff, fails again, and succeeds once the lock is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from _dagster import kill_all

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.healing import IN_PROGRESS
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import cohort_scores, daily_cohort
from stroke_dagster.simulate.generator import simulate_patients, write_patients
from stroke_dagster.warehouse import store as warehouse

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _today(offset: int = 0) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


class Daemon:
    """``dagster-daemon run`` on the project's workspace, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def crash(self, dagster_home: Path) -> None:
        """SIGKILL, no clean-up: the daemon's group and every process of this instance."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        kill_all(dagster_home)

    def stop(self, dagster_home: Path) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        self.crash(dagster_home)


def _wait(what: str, predicate, timeout: float, log: Path) -> object:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{tail}")


@pytest.fixture
def loop_home(champion_home: Path, tmp_path: Path, monkeypatch) -> Iterator[dict]:  # noqa: ANN001
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "STROKE_HOME": str(champion_home)}
    daemon = Daemon(env, tmp_path / "daemon.log")
    try:
        yield {"home": champion_home, "dagster_home": dagster_home, "daemon": daemon}
    finally:
        daemon.stop(dagster_home)


def _day_runs(instance: dg.DagsterInstance, day: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={"dagster/partition": day})))


def test_a_crash_mid_run_heals_after_restart(loop_home: dict) -> None:
    home, dagster_home, daemon = loop_home["home"], loop_home["dagster_home"], loop_home["daemon"]
    day = _today(-1)
    incoming = home / "incoming"
    incoming.mkdir(exist_ok=True)
    write_patients(
        simulate_patients(4000, seed=11).drop(columns=["stroke"]), incoming / f"{day}.csv"
    )
    daemon.start()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:

        def started_step() -> dg.DagsterRun | None:
            for run in _day_runs(instance, day):
                if run.status != dg.DagsterRunStatus.STARTED:
                    continue
                steps = instance.get_records_for_run(
                    run.run_id, of_type=dg.DagsterEventType.STEP_START
                ).records
                if steps:
                    return run
            return None

        orphan = _wait("a started step of the day's run", started_step, 300, daemon.log)
        daemon.crash(dagster_home)
        assert instance.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.STARTED

        daemon.start()  # the restart

        def healed() -> bool:
            runs = _day_runs(instance, day)
            scored = instance.get_materialized_partitions(cohort_scores.key)
            return day in scored and not [r for r in runs if r.status in IN_PROGRESS]

        _wait("the day scored and no run left in progress", healed, 420, daemon.log)
        failed = instance.get_run_by_id(orphan.run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE  # by run monitoring
        retries = [r for r in _day_runs(instance, day) if r.parent_run_id == orphan.run_id]
        assert retries and retries[0].status == dg.DagsterRunStatus.SUCCESS
    frame = warehouse.query_df(
        "SELECT count(*) AS n, count(DISTINCT patient_id) AS ids FROM scores WHERE cohort_date = ?",
        [day],
        settings=load_settings(),
    )
    quarantined = warehouse.query_df(
        "SELECT count(*) AS n FROM quarantine WHERE cohort_date = ?",
        [day],
        settings=load_settings(),
    )
    assert int(frame["n"].item()) == int(frame["ids"].item())  # no duplicate
    assert int(frame["n"].item()) + int(quarantined["n"].item()) == 4000  # every row


def test_a_step_that_fails_twice_then_succeeds(champion_home: Path) -> None:
    """The registry is locked: ``cohort_scores`` fails, is retried with backoff (two failures),
    and succeeds once the lock is released."""
    day = _today(-1)
    incoming = champion_home / "incoming"
    incoming.mkdir(exist_ok=True)
    write_patients(
        simulate_patients(200, seed=12).drop(columns=["stroke"]), incoming / f"{day}.csv"
    )
    resources = {"stroke": StrokeSettings()}
    settings = load_settings()
    db = settings.mlflow_tracking_uri.removeprefix("sqlite:///")
    with dg.instance_for_test() as instance:
        assert dg.materialize(
            [daily_cohort], partition_key=day, resources=resources, instance=instance
        ).success
        lock = sqlite3.connect(db, timeout=1, check_same_thread=False)
        lock.execute("BEGIN EXCLUSIVE")  # the registry's store is unusable from now on
        released = threading.Event()

        def release_after_two_failures() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                records = instance.get_event_records(
                    dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
                )
                if len(records) >= 2:
                    break
                time.sleep(0.5)
            lock.rollback()
            lock.close()
            released.set()

        watcher = threading.Thread(target=release_after_two_failures)
        watcher.start()
        try:
            result = dg.materialize(
                [daily_cohort, cohort_scores],
                selection=[cohort_scores],
                partition_key=day,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
        finally:
            watcher.join()
        assert released.is_set()
        assert result.success
        events = [e.event_type_value for e in result.all_events]
        assert events.count("STEP_UP_FOR_RETRY") == 2
        assert events.count("STEP_RESTARTED") == 2
