"""The daily loop under the real Dagster daemon: file arrival -> scored -> drift verdict.

On a temporary STROKE_HOME / DAGSTER_HOME (the project's dagster.yaml): trains a small champion
with ``stroke train`` on synthetic patients, starts ``dagster-daemon run`` on the project's
workspace, drops the cohort files of the last ``--days`` days (today included) into incoming/
and a labels file into labels/, then polls the Dagster instance until every day has its drift
verdict. Prints per-day latencies from the drop to the first ``cohort_scores`` and
``drift_metrics`` materializations, their medians, the alerts a local webhook received, and
every failed run or sensor tick; then stops the daemon.

With ``--shift-from K`` the days from the K-th on (0-based) come from an older, sicker
population: it then also waits for the drift retraining (``training_job``), the gate's verdict
and, when promoted, the rescoring of the latest day.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/daily_loop.py [--days 4] [--rows 500]
    PYTHONPATH=$PWD .venv/bin/python benchmarks/daily_loop.py --days 5 --shift-from 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class _Webhook:
    """A local alert webhook that keeps every text it receives."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.texts.append(json.loads(body)["text"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _env(home: Path, dagster_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STROKE_HOME=str(home),
        DAGSTER_HOME=str(dagster_home),
        STROKE_RAW_CSV=str(home / "train.csv"),
        PYTHONPATH=str(ROOT),
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _failed_ticks(instance) -> list[str]:  # noqa: ANN001 - DagsterInstance
    from dagster._core.scheduler.instigation import TickStatus

    failures = []
    for state in instance.all_instigator_state():
        for tick in instance.get_ticks(
            state.instigator_origin_id, state.selector_id, statuses=[TickStatus.FAILURE]
        ):
            error = tick.error.message.splitlines()[0] if tick.error else ""
            failures.append(f"{state.instigator_name}: {error}")
    return failures


def _first_event(instance, asset: str) -> dict[str, tuple[float, dict]]:  # noqa: ANN001
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records
    first: dict[str, tuple[float, dict]] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        first.setdefault(record.partition_key, (record.timestamp, meta))
    return first


def _retrain_settled(instance, last_day: str) -> bool:  # noqa: ANN001 - DagsterInstance
    """A drift retraining finished and, if it was promoted, the latest day was rescored with it
    and its drift checked again."""
    import dagster as dg

    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name="training_job", tags={"stroke/trigger": "drift"})
    )
    if not runs or not runs[0].is_finished:
        return False
    models = instance.fetch_materializations(dg.AssetKey("registered_model"), limit=1).records
    if not models or models[0].run_id != runs[0].run_id:
        return True  # the run failed before registering
    alias = models[0].asset_materialization.metadata["alias"].value
    if alias != "champion":
        return True
    scores = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("cohort_scores"), asset_partitions=[last_day]), limit=1
    ).records
    drift = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("drift_metrics"), asset_partitions=[last_day]), limit=1
    ).records
    return bool(
        scores
        and drift
        and scores[0].storage_id > models[0].storage_id
        and drift[0].storage_id > scores[0].storage_id
    )


def _retrain_report(instance, dropped_at: float, last_day: str) -> list[str]:  # noqa: ANN001
    import dagster as dg

    runs = instance.get_run_records(
        filters=dg.RunsFilter(job_name="training_job", tags={"stroke/trigger": "drift"})
    )
    lines = [f"drift retrainings started: {len(runs)}"]
    for record in runs:
        run = record.dagster_run
        lines.append(
            f"  {run.run_id[:8]} {run.status.value} on drifted days "
            f"{run.tags.get('stroke/drifted_days')}, started "
            f"{record.create_timestamp.timestamp() - dropped_at:.0f} s after the last drop"
        )
    models = instance.fetch_materializations(dg.AssetKey("registered_model"), limit=5).records
    for record in models:
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        lines.append(f"  registered v{meta.get('version')} -> {meta.get('alias')}")
    scores = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("cohort_scores"), asset_partitions=[last_day]), limit=5
    ).records
    versions = [str(r.asset_materialization.metadata["model_version"].value) for r in scores]
    lines.append(f"  {last_day} scored with versions (latest first): {versions}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=4, help="cohort days, ending today")
    parser.add_argument("--rows", type=int, default=500, help="patients per cohort")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument(
        "--shift-from", type=int, default=None, help="shift the days from this index (0-based)"
    )
    args = parser.parse_args(argv)

    import dagster as dg

    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    base = Path(tempfile.mkdtemp(prefix="daily_loop_"))
    home, dagster_home = base / "home", base / "dagster"
    for path in (home / "incoming", home / "labels", dagster_home):
        path.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = _env(home, dagster_home)
    webhook = _Webhook()
    env["STROKE_ALERT_WEBHOOK"] = webhook.url
    write_patients(simulate_patients(1500, seed=7), home / "train.csv")

    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "stroke_dagster.cli", "train", "--trials", "2"],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"champion trained in {time.monotonic() - started:.0f} s")

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with dg.DagsterInstance.get():  # create the instance's storage before the daemon opens it
        pass
    log = open(base / "daemon.log", "w")  # noqa: SIM115 - closed after the daemon stops
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Steady state first: the daemon is up and has observed the champion alias.
        with dg.DagsterInstance.get() as instance:
            ready = time.monotonic()
            while time.monotonic() - ready < 180:
                if instance.fetch_observations(dg.AssetKey("champion_model"), limit=1).records:
                    break
                time.sleep(1)
        print(f"daemon up, champion observed after {time.monotonic() - ready:.0f} s")
        today = dt.datetime.now(dt.UTC).date()
        days = [(today - dt.timedelta(days=i)).isoformat() for i in range(args.days - 1, -1, -1)]
        dropped: dict[str, float] = {}
        for number, day in enumerate(days):
            frame = simulate_patients(args.rows, seed=number, id_start=(number + 1) * 100_000)
            if args.shift_from is not None and number >= args.shift_from:
                frame["age"] = (frame["age"] + 20).clip(upper=100)
                frame["avg_glucose_level"] = frame["avg_glucose_level"] * 1.3
            staging = home / "incoming" / f".{day}.csv"
            write_patients(frame.drop(columns="stroke"), staging)
            staging.rename(home / "incoming" / f"{day}.csv")  # arrives whole
            dropped[day] = time.time()
            if number == 0:
                frame[["id", "stroke"]].to_csv(home / "labels" / f"{day}.csv", index=False)
        print(
            f"dropped {len(days)} cohort files ({days[0]} .. {days[-1]}) and labels for {days[0]}"
        )

        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                drift = _first_event(instance, "drift_metrics")
                performance = _first_event(instance, "performance_metrics")
                done = all(day in drift for day in days) and days[0] in performance
                if done and args.shift_from is not None:
                    done = _retrain_settled(instance, days[-1])
                if done:
                    break
                time.sleep(2)
            scores = _first_event(instance, "cohort_scores")
            drift = _first_event(instance, "drift_metrics")
            performance = _first_event(instance, "performance_metrics")
            all_scores = [
                (record, instance.get_run_by_id(record.run_id).tags)
                for record in instance.fetch_materializations(
                    dg.AssetKey("cohort_scores"), limit=10_000
                ).records
            ]
            failed_runs = instance.get_runs(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
            )
            failed_ticks = _failed_ticks(instance)
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": days[0]}))
            retrain_lines = _retrain_report(instance, dropped[days[-1]], days[-1])
            retrains = instance.get_runs(
                filters=dg.RunsFilter(job_name="training_job", tags={"stroke/trigger": "drift"})
            )

        print(f"\n{'day':<12}{'scored after':>14}{'drift after':>13}  verdict  model")
        to_scored, to_drift = [], []
        for day in days:
            scored = scores.get(day)
            checked = drift.get(day)
            s = scored[0] - dropped[day] if scored else None
            d = checked[0] - dropped[day] if checked else None
            if s is not None:
                to_scored.append(s)
            if d is not None:
                to_drift.append(d)
            verdict = ("drift" if checked[1]["is_drift"] else "ok") if checked else "-"
            model = scored[1].get("model_version", "-") if scored else "-"
            print(
                f"{day:<12}{'-' if s is None else f'{s:.1f} s':>14}"
                f"{'-' if d is None else f'{d:.1f} s':>13}  {verdict:<8} v{model}"
            )
        if to_scored:
            print(f"median arrival -> scored: {statistics.median(to_scored):.1f} s")
        if to_drift:
            print(f"median arrival -> drift verdict: {statistics.median(to_drift):.1f} s")
        if days[0] in performance:
            print(
                f"labels {days[0]} -> performance: "
                f"{performance[days[0]][0] - dropped[days[0]]:.1f} s after the drop"
            )
        per_day: dict[str, int] = {}  # by the daily path; champion rescoring runs apart
        rescored: dict[str, int] = {}
        for record, tags in all_scores:
            target = rescored if tags.get("stroke/trigger") == "champion" else per_day
            target[record.partition_key] = target.get(record.partition_key, 0) + 1
        print(f"cohort_scores materializations per day: {per_day}; rescorings: {rescored}")
        print(f"runs for {days[0]}: {len(runs)}")
        if args.shift_from is not None:
            for line in retrain_lines:
                print(line)
        kinds = {
            "drift": sum("drift on" in t for t in webhook.texts),
            "overdue": sum("overdue" in t for t in webhook.texts),
            "failed run": sum("failed" in t for t in webhook.texts),
        }
        print(f"alerts received: {kinds}")
        print(f"failed runs: {len(failed_runs)}; failed sensor ticks: {len(failed_ticks)}")
        for line in failed_ticks[:10]:
            print(f"  {line}")
        ok = (
            all(day in drift for day in days)
            and not failed_runs
            and not failed_ticks
            and all(per_day.get(day) == 1 for day in days)
            and len(retrains) == (0 if args.shift_from is None else 1)
        )
        print("loop complete" if ok else "LOOP INCOMPLETE")
        return 0 if ok else 1
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()
        if args.keep:
            print(f"kept {base}")
        else:
            time.sleep(2)  # the daemon's code server and run workers exit after it
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
