"""The daily loop under faults: a killed daemon, a failed step, a 60 s outage of both services.

On a temporary STROKE_HOME / DAGSTER_HOME (the project's dagster.yaml), with the platform's files
on an S3 server (moto, ``tests/_s3.py``) and its registry on a real ``mlflow server`` (sqlite
store in the temporary home, ``--serve-artifacts``), each reached by the platform only through a
TCP proxy of this script that can be cut (every connection dropped with a reset, new ones
refused) and restored. Trains a small champion (``stroke train``), starts ``dagster-daemon run``
on the project's workspace in its own process group, then:

1. quiet latency: drops one cohort file a day (the last ``--quiet-days`` days, today included),
   one at a time, each after the previous day's drift verdict; per day, the time from the drop
   to the first ``cohort_scores`` and ``drift_metrics`` materializations (median, max);
2. crash: drops three older days at once and, once their runs are started and a step is running,
   SIGKILLs the daemon's process group (daemon, code server, run workers) and any straggler of
   this DAGSTER_HOME, restarts the daemon on the same instance and measures the time until the
   three days are scored and none of their runs is left in progress;
3. failed step: drops a day and cuts the object store for ``--cut-seconds`` as soon as its run
   starts ``daily_cohort`` or ``cohort_scores``; the time until the day is scored;
4. outage: drops a day and cuts both the registry and the object store for
   ``--outage-seconds`` as soon as its run is started; the time from the restore until the day
   is scored.

Then a table per day (rows of the warehouse's ``scores`` table read with the platform's own
reader, duplicate ids, model versions), the runs per status, failed runs with their reason,
failed sensor ticks and the daemon's ERROR lines. Exits 1 unless every day is scored exactly once
(its valid input rows, no duplicate (cohort_date, patient_id)) and no run is left in progress.
Every wait is bounded by ``--timeout``; a wait that times out says what it waited for.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/faults.py [--rows 2000] [--timeout 600] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from daily_loop import BIN, ROOT, _env, _failed_ticks, _first_event, _Webhook  # sibling script

sys.path.insert(0, str(ROOT / "tests"))
from _production import Process, free_port, start, wait_until  # noqa: E402 - tests/ helpers
from _s3 import MotoS3, s3_storage_env  # noqa: E402

COHORT, SCORES, DRIFT = "daily_cohort", "cohort_scores", "drift_metrics"
PARTITION_TAG = "dagster/partition"
BAD_ROWS = 5  # rows per cohort file that break the schema (quarantined, never scored)
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours of the daemon's log lines
PREFIX = "stroke"  # s3_storage_env's prefix: s3://<bucket>/stroke


# ------------------------------------------------------------------------------ the proxies
class CuttableProxy:
    """A TCP proxy ``127.0.0.1:<port>`` -> ``127.0.0.1:<target_port>`` on its own event loop
    thread. :meth:`cut` resets every open connection and stops listening (new connections are
    refused, as by a service that is down); :meth:`restore` listens again on the same port."""

    def __init__(self, name: str, target_port: int) -> None:
        self.name = name
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.reset = 0  # connections reset by cuts
        self.cut_at: float | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"proxy-{name}", daemon=True
        )

    def start(self) -> CuttableProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def _call(self, coro) -> None:  # noqa: ANN001 - a coroutine
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.cut_at = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self._reset(writer)
            return
        if self.cut_at is not None:  # cut while connecting upstream
            self._reset(writer)
            self._reset(up_writer)
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for one in (writer, up_writer):
                self._writers.discard(one)
                one.close()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a dead peer's kernel answers."""
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _cut(self) -> None:
        self.cut_at = time.time()
        if self._server is not None:
            self._server.close()  # the listening socket: new connections are refused
            self._server = None
        for writer in list(self._writers):
            self._reset(writer)
            self.reset += 1
        self._writers.clear()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still carry a response
    except (OSError, RuntimeError):
        pass


# ------------------------------------------------------------------------------ the services
def start_mlflow(base: Path, logs: Path, registry: list[Process], env: dict[str, str]) -> int:
    """``mlflow server`` on a sqlite store and a local artifact root (``--serve-artifacts``)
    under ``base/mlflow``; returns its port once ``/health`` answers."""
    root = base / "mlflow"
    (root / "artifacts").mkdir(parents=True)
    port = free_port()
    process = start(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        logs,
        env={**env, "MLFLOW_SERVER_ALLOWED_HOSTS": "*"},
        cwd=root,
        registry=registry,
    )

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200

    wait_until(healthy, f"mlflow server (log {process.log})", timeout=240, proc=process.popen)
    return port


def _proc_info(pid: int) -> tuple[str, int, bytes, bytes] | None:
    """(state, process group, environ, cmdline) of ``pid``; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2]), environ, cmdline


def _pids() -> Iterable[int]:
    return (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())


def _short(cmdline: bytes) -> str:
    parts = [p.decode(errors="replace") for p in cmdline.split(b"\0") if p]
    text = " ".join(Path(parts[0]).name if i == 0 else p for i, p in enumerate(parts))
    return text[:90]


# ------------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.base = Path(tempfile.mkdtemp(prefix="faults_"))
        self.home, self.dagster_home = self.base / "home", self.base / "dagster"
        self.logs = self.base / "logs"
        for path in (self.home, self.dagster_home, self.logs, self.base / "drops"):
            path.mkdir(parents=True)
        shutil.copy(ROOT / "dagster.yaml", self.dagster_home / "dagster.yaml")
        self.services: list[Process] = []
        self.proxies: list[CuttableProxy] = []
        self.s3: MotoS3 | None = None
        self.webhook: _Webhook | None = None
        self.daemon: subprocess.Popen | None = None
        self.daemon_log = self.logs / "daemon.log"
        self.instance = None
        self.dropped: dict[str, float] = {}  # day -> epoch seconds of its drop
        self.phase_of: dict[str, str] = {}  # day -> phase that dropped it
        self.expected: dict[str, int] = {}  # day -> valid input rows
        self.stuck: set[str] = set()  # run ids left in progress by a phase that timed out
        self.figures: list[str] = []

    # ---------------------------------------------------------------- printing and waiting
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.0f} s] {text}", flush=True)

    def wait(
        self,
        check: Callable[[], object],
        what: str,
        timeout: float | None = None,
        poll: float = 1.0,
        state: Callable[[], str] | None = None,
        daemon: bool = True,
    ) -> float | None:
        """Seconds until ``check()`` is truthy; None (and what it waited for) on timeout."""
        timeout = self.args.timeout if timeout is None else timeout
        started = time.monotonic()
        while True:
            if check():
                return time.monotonic() - started
            if daemon and self.daemon is not None and self.daemon.poll() is not None:
                self.say(
                    f"the daemon exited with {self.daemon.returncode} while waiting for {what}"
                )
                return None
            if time.monotonic() - started > timeout:
                self.say(f"TIMEOUT after {timeout:.0f} s waiting for {what}")
                if state is not None:
                    for line in state().splitlines():
                        self.say(f"    {line}")
                return None
            time.sleep(poll)

    # --------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        from stroke_dagster.simulate.generator import simulate_patients, write_patients

        clean_env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        self.s3 = MotoS3(mode="process").start()
        self.bucket = self.s3.create_bucket()
        mlflow_port = start_mlflow(self.base, self.logs, self.services, clean_env)
        self.registry_proxy = CuttableProxy("registry", mlflow_port).start()
        self.storage_proxy = CuttableProxy("storage", self.s3.port).start()
        self.proxies = [self.registry_proxy, self.storage_proxy]
        self.webhook = _Webhook()
        self.say(
            f"mlflow server :{mlflow_port} via proxy :{self.registry_proxy.port}; "
            f"S3 (moto) :{self.s3.port} via proxy :{self.storage_proxy.port}, bucket {self.bucket}"
        )

        env = _env(self.home, self.dagster_home)
        env.update(s3_storage_env(self.s3, self.bucket, PREFIX))
        env.update(
            STROKE_S3_ENDPOINT_URL=self.storage_proxy.url,
            MLFLOW_TRACKING_URI=self.registry_proxy.url,
            STROKE_SCRATCH_DIR=str(self.base / "scratch"),
            STROKE_ALERT_WEBHOOK=self.webhook.url,
            # the healer's last resort within a phase's wait (the default is 30 minutes)
            STROKE_UNSCORED_AFTER_MINUTES="4",
        )
        self.env = env
        # The benchmark's own reader: the storage without the proxy, its own local state.
        self.reader_env = {
            **env,
            "STROKE_HOME": str(self.base / "reader"),
            "STROKE_S3_ENDPOINT_URL": self.s3.endpoint_url,
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})

        write_patients(simulate_patients(1500, seed=7), self.home / "train.csv")
        started = time.monotonic()
        with open(self.logs / "train.log", "w") as log:
            done = subprocess.run(
                [sys.executable, "-m", "stroke_dagster.cli", "train", "--trials", "2"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode:
            tail = (self.logs / "train.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError("stroke train failed:\n" + "\n".join(tail))
        self.say(f"champion trained in {time.monotonic() - started:.0f} s")

        import dagster as dg

        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        self.instance = dg.DagsterInstance.get()
        self.start_daemon()
        waited = self.wait(
            lambda: (
                self.instance.fetch_observations(dg.AssetKey("champion_model"), limit=1).records
            ),
            "the daemon's first observation of the champion alias",
        )
        if waited is None:
            raise RuntimeError("the daemon never came up")
        self.say(f"daemon up, champion observed after {waited:.0f} s")

    def start_daemon(self) -> None:
        with open(self.daemon_log, "a") as log:
            log.write(f"===== daemon started by faults.py at {dt.datetime.now(dt.UTC)}\n")
            log.flush()
            self.daemon = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # -------------------------------------------------------------------------- drops
    def drop(self, day: str, number: int, phase: str) -> None:
        """Day ``number``'s cohort (``--rows`` patients, BAD_ROWS of them invalid) into
        ``incoming/`` with one PUT, straight to the S3 server (the upstream system)."""
        from stroke_dagster.simulate.generator import simulate_patients, write_patients

        frame = simulate_patients(
            self.args.rows, seed=100 + number, id_start=(number + 1) * 100_000, with_label=False
        )
        frame.loc[frame.index[:BAD_ROWS], "age"] = -5  # out of range: quarantined
        local = write_patients(frame, self.base / "drops" / f"{day}.csv")
        self.s3.client().put_object(
            Bucket=self.bucket, Key=f"{PREFIX}/incoming/{day}.csv", Body=local.read_bytes()
        )
        self.dropped[day] = time.time()
        self.phase_of[day] = phase
        self.expected[day] = self.args.rows - BAD_ROWS

    # ------------------------------------------------------------------ instance queries
    def runs(self, days: Iterable[str] | None = None) -> list:
        import dagster as dg

        if days is None:
            return list(self.instance.get_runs())
        runs = []
        for day in days:
            runs += self.instance.get_runs(filters=dg.RunsFilter(tags={PARTITION_TAG: day}))
        return runs

    @staticmethod
    def in_progress(run) -> bool:  # noqa: ANN001 - DagsterRun
        import dagster as dg

        return run.status in (
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING,
        )

    def events(self, run_id: str, kinds) -> list:  # noqa: ANN001 - event type(s)
        return [
            r.event_log_entry
            for r in self.instance.get_records_for_run(run_id, of_type=kinds).records
        ]

    def steps_started(self, run_id: str) -> list[str]:
        import dagster as dg

        return [e.step_key for e in self.events(run_id, dg.DagsterEventType.STEP_START)]

    def scored(self, day: str) -> bool:
        import dagster as dg

        return bool(
            self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(SCORES), asset_partitions=[day]),
                limit=1,
            ).records
        )

    def settled(self, days: Iterable[str]) -> bool:
        return not any(self.in_progress(run) for run in self.runs(days))

    def day_state(self, days: Iterable[str]) -> str:
        """One line per day: scored or not, and its runs with their status and steps."""
        import dagster as dg

        lines = []
        for day in days:
            parts = []
            for run in self.runs([day]):
                steps = self.steps_started(run.run_id)
                retries = len(self.events(run.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY))
                parts.append(
                    f"{run.run_id[:8]} {run.status.value} steps started {steps or '-'}"
                    + (f", {retries} step retries" if retries else "")
                )
            lines.append(
                f"{day}: {'scored' if self.scored(day) else 'NOT scored'}; runs: "
                + ("; ".join(parts) if parts else "none")
            )
        return "\n".join(lines)

    def settle_all(self, what: str) -> None:
        """Until no run is in progress (except runs an earlier phase left stuck)."""

        def busy() -> list:
            return [r for r in self.runs() if self.in_progress(r) and r.run_id not in self.stuck]

        def state() -> str:
            return "\n".join(
                f"{r.run_id[:8]} {r.status.value} {r.tags.get(PARTITION_TAG, r.job_name)}"
                for r in busy()
            )

        if self.wait(lambda: not busy(), f"no run in progress ({what})", state=state) is None:
            self.stuck |= {r.run_id for r in busy()}

    # --------------------------------------------------------------------------- phases
    def quiet(self, days: list[str]) -> None:
        self.say(f"phase quiet: {len(days)} days one at a time ({days[0]} .. {days[-1]})")
        for number, day in enumerate(days):
            self.drop(day, number, "quiet")
            waited = self.wait(
                lambda day=day: day in _first_event(self.instance, DRIFT),
                f"the drift verdict of {day}",
                state=lambda day=day: self.day_state([day]),
            )
            if waited is not None:
                self.say(f"  {day}: drift verdict {waited:.0f} s after the drop")
        scores = _first_event(self.instance, SCORES)
        drift = _first_event(self.instance, DRIFT)
        to_scores = [scores[d][0] - self.dropped[d] for d in days if d in scores]
        to_drift = [drift[d][0] - self.dropped[d] for d in days if d in drift]
        print(f"\n{'day':<12}{'drop -> scored':>16}{'drop -> drift':>15}")
        for day in days:
            s = f"{scores[day][0] - self.dropped[day]:.1f} s" if day in scores else "-"
            d = f"{drift[day][0] - self.dropped[day]:.1f} s" if day in drift else "-"
            print(f"{day:<12}{s:>16}{d:>15}")

        def stats(values: list[float]) -> str:
            if not values:
                return "none"
            return (
                f"median {statistics.median(values):.1f} s, max {max(values):.1f} s "
                f"({len(values)}/{len(days)} days)"
            )

        lines = [
            f"quiet: drop -> cohort_scores: {stats(to_scores)}",
            f"quiet: drop -> drift_metrics: {stats(to_drift)} (target: median <= 60 s)",
        ]
        for line in lines:
            print(line)
        print(flush=True)
        self.figures += lines

    def crash(self, days: list[str], first_number: int) -> None:
        import dagster as dg

        self.settle_all("before the crash")
        self.say(f"phase crash: {len(days)} days at once ({', '.join(days)})")
        for number, day in enumerate(days):
            self.drop(day, first_number + number, "crash")

        def ready() -> bool:
            by_day = {day: self.runs([day]) for day in days}
            if not all(
                any(r.status == dg.DagsterRunStatus.STARTED or r.is_finished for r in runs)
                for runs in by_day.values()
            ):
                return False
            return any(
                self.steps_started(r.run_id)
                for runs in by_day.values()
                for r in runs
                if r.status == dg.DagsterRunStatus.STARTED
            )

        waited = self.wait(
            ready,
            "the three days' runs started, one with a step under way",
            poll=0.2,
            state=lambda: self.day_state(days),
        )
        self.say(
            "  runs started"
            + (f" {waited:.0f} s after the drop" if waited else "")
            + "; state at the kill:"
        )
        for line in self.day_state(days).splitlines():
            self.say(f"    {line}")
        victims = self.kill_daemon(signal.SIGKILL)
        self.say(f"  SIGKILLed {len(victims)} processes:")
        for line in victims:
            self.say(f"    {line}")
        restarted = time.monotonic()
        self.start_daemon()
        self.say("  daemon restarted on the same instance")
        waited = self.wait(
            lambda: all(self.scored(d) for d in days) and self.settled(days),
            f"{', '.join(days)} scored, none of their runs in progress",
            state=lambda: self.day_state(days),
        )
        for line in [] if waited is None else self.day_state(days).splitlines():
            self.say(f"    {line}")
        if waited is None:
            self.stuck |= {r.run_id for r in self.runs(days) if self.in_progress(r)}
            line = (
                f"crash: restart -> 3 days scored and settled: NOT within {self.args.timeout:.0f} s"
                f" ({sum(self.scored(d) for d in days)}/3 scored, "
                f"{sum(self.in_progress(r) for r in self.runs(days))} runs in progress)"
            )
        else:
            line = (
                f"crash: restart -> 3 days scored and settled: {time.monotonic() - restarted:.1f} s"
            )
        print(line, flush=True)
        self.figures.append(line)

    def failed_step(self, day: str, number: int) -> None:
        import dagster as dg

        self.settle_all("before the failed step")
        self.say(f"phase failed step: {day}, object store cut for {self.args.cut_seconds:.0f} s")
        self.drop(day, number, "failed step")
        found: dict[str, str] = {}

        def step_running() -> bool:
            for run in self.runs([day]):
                if run.status != dg.DagsterRunStatus.STARTED:
                    continue
                steps = [s for s in self.steps_started(run.run_id) if s in (COHORT, SCORES)]
                if steps:
                    found.update(run=run.run_id, step=steps[-1])
                    return True
            return False

        waited = self.wait(
            step_running,
            f"{day}'s run starting {COHORT} or {SCORES}",
            poll=0.1,
            state=lambda: self.day_state([day]),
        )
        if waited is None:
            self.figures.append("failed step: the run never started its step; no cut made")
            return
        self.storage_proxy.cut()
        cut, cut_epoch = time.monotonic(), time.time()
        self.say(f"  object store cut while run {found['run'][:8]} runs {found['step']}")
        time.sleep(self.args.cut_seconds)
        self.storage_proxy.restore()
        restored, restored_epoch = time.monotonic(), time.time()
        self.say(f"  object store restored after {restored - cut:.1f} s")
        waited, retries = self.await_healed(day)
        if waited is None:
            line = (
                f"failed step: {day} NOT scored and settled within {self.args.timeout:.0f} s of "
                f"the restore (cut during {found['step']}; {retries} step retries)"
            )
        else:
            first = _first_event(self.instance, SCORES)[day][0]
            line = (
                f"failed step: cut during {found['step']} for {restored - cut:.0f} s; "
                f"scored {first - cut_epoch:.1f} s after the cut "
                f"({first - restored_epoch:.1f} s after the restore), "
                f"settled {time.monotonic() - restored:.1f} s after the restore; "
                f"{retries} step retries, {len(self.runs([day]))} run(s)"
            )
        print(line, flush=True)
        self.figures.append(line)

    def await_healed(self, day: str) -> tuple[float | None, int]:
        """Wait until ``day`` is scored with none of its runs in progress; how long (``None``
        on a time-out, its runs then counted as stuck) and how many step retries it took."""
        import dagster as dg

        waited = self.wait(
            lambda: self.scored(day) and self.settled([day]),
            f"{day} scored, none of its runs in progress",
            state=lambda: self.day_state([day]),
        )
        for line in [] if waited is None else self.day_state([day]).splitlines():
            self.say(f"    {line}")
        retries = sum(
            len(self.events(r.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY))
            for r in self.runs([day])
        )
        if waited is None:
            self.stuck |= {r.run_id for r in self.runs([day]) if self.in_progress(r)}
        return waited, retries

    def outage(self, day: str, number: int) -> None:
        import dagster as dg

        self.settle_all("before the outage")
        self.say(
            f"phase outage: {day}, registry and object store cut for "
            f"{self.args.outage_seconds:.0f} s"
        )
        self.drop(day, number, "outage")
        waited = self.wait(
            lambda: any(r.status == dg.DagsterRunStatus.STARTED for r in self.runs([day])),
            f"{day}'s run STARTED",
            poll=0.2,
            state=lambda: self.day_state([day]),
        )
        if waited is None:
            self.figures.append("outage: the run never started; no cut made")
            return
        for proxy in self.proxies:
            proxy.cut()
        cut = time.monotonic()
        self.say(f"  both cut {waited:.0f} s after the drop (run started)")
        time.sleep(self.args.outage_seconds)
        for proxy in self.proxies:
            proxy.restore()
        restored, restored_epoch = time.monotonic(), time.time()
        self.say(f"  both restored after {restored - cut:.1f} s; state now:")
        for line in self.day_state([day]).splitlines():
            self.say(f"    {line}")
        waited, retries = self.await_healed(day)
        if waited is None:
            line = (
                f"outage: {day} NOT scored and settled within {self.args.timeout:.0f} s of the "
                f"restore ({retries} step retries, {len(self.runs([day]))} run(s))"
            )
        else:
            first = _first_event(self.instance, SCORES)[day][0]
            line = (
                f"outage: restore -> scored {first - restored_epoch:.1f} s, -> settled "
                f"{time.monotonic() - restored:.1f} s; {retries} step retries, "
                f"{len(self.runs([day]))} run(s)"
            )
        print(line, flush=True)
        self.figures.append(line)

    # ---------------------------------------------------------------------- process control
    def kill_daemon(self, signum: int) -> list[str]:
        """``signum`` to the daemon's process group, then SIGKILL to any process of this
        DAGSTER_HOME left; returns the processes signalled (pid, command)."""
        if self.daemon is None:
            return []
        group = self.daemon.pid
        victims = []
        for pid in _pids():
            info = _proc_info(pid)
            if info is not None and info[1] == group and info[0] != "Z":
                victims.append(f"{pid} {_short(info[3])}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)
        try:
            self.daemon.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.daemon.wait(30)
        if signum != signal.SIGKILL:  # a clean stop: the code server follows the daemon out
            self.wait(lambda: not self.leftovers(), "its children to exit", 15, 0.5, daemon=False)
        deadline = time.monotonic() + 30
        while True:
            left = self.leftovers()
            if not left:
                break
            for pid, command in left:
                self.say(f"  straggler {pid} {command}: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                victims.append(f"{pid} {command} (straggler)")
            if time.monotonic() > deadline:
                self.say(f"  still alive after SIGKILL: {left}")
                break
            time.sleep(0.5)
        return victims

    def leftovers(self) -> list[tuple[int, str]]:
        """Live processes (not this one, not the services) with this DAGSTER_HOME in their
        environment or command line and 'dagster' in their command line."""
        marker = f"DAGSTER_HOME={self.dagster_home}".encode()
        home = str(self.dagster_home).encode()
        exclude = {os.getpid()} | {p.popen.pid for p in self.services}
        if self.s3 is not None and self.s3._proc is not None:
            exclude.add(self.s3._proc.pid)
        found = []
        for pid in _pids():
            info = _proc_info(pid)
            if pid in exclude or info is None or info[0] == "Z":
                continue
            state, _, environ, cmdline = info
            ours = marker in environ.split(b"\0") or home in cmdline
            if ours and b"dagster" in cmdline:
                found.append((pid, _short(cmdline)))
        return found

    def cleanup(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            with contextlib.suppress(Exception):
                self.kill_daemon(signal.SIGTERM)
        elif self.daemon is not None:
            for pid, _ in self.leftovers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.instance is not None:
            with contextlib.suppress(Exception):
                self.instance.dispose()
        for proxy in self.proxies:
            proxy.stop()
        for process in self.services:
            with contextlib.suppress(Exception):
                process.stop()
        if self.s3 is not None:
            with contextlib.suppress(Exception):
                self.s3.stop()
        if self.webhook is not None:
            self.webhook.server.shutdown()
        if self.args.keep:
            print(f"kept {self.base} (logs in {self.logs})")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # --------------------------------------------------------------------------- report
    def report(self) -> bool:
        import dagster as dg

        from stroke_dagster.core.settings import load_settings
        from stroke_dagster.warehouse import store as warehouse

        self.settle_all("before the report")
        settings = load_settings(self.reader_env)
        stored = warehouse.query_df(
            "SELECT CAST(cohort_date AS VARCHAR) AS day, count(*) AS n, "
            "count(DISTINCT patient_id) AS ids, "
            "string_agg(DISTINCT model_version, ',') AS versions "
            "FROM scores GROUP BY 1 ORDER BY 1",
            settings=settings,
        )
        by_day = {row.day: row for row in stored.itertuples()}
        materialized = Counter(
            r.partition_key
            for r in self.instance.fetch_materializations(dg.AssetKey(SCORES), limit=10_000).records
        )
        all_runs = self.runs()
        print("\nper day (scores read with stroke_dagster.warehouse.store.query_df):")
        print(
            f"{'day':<12}{'phase':<13}{'valid':>7}{'rows':>7}{'dup':>5}  {'model':<7}"
            f"{'scored x':>9}  runs"
        )
        ok = True
        for day in sorted(self.dropped):
            row = by_day.get(day)
            rows = int(row.n) if row is not None else 0
            dups = int(row.n - row.ids) if row is not None else 0
            versions = f"v{row.versions}" if row is not None else "-"
            statuses = Counter(r.status.value for r in self.runs([day]))
            good = rows == self.expected[day] and dups == 0
            ok &= good
            print(
                f"{day:<12}{self.phase_of[day]:<13}{self.expected[day]:>7}{rows:>7}{dups:>5}  "
                f"{versions:<7}{materialized.get(day, 0):>9}  "
                + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
                + ("" if good else "   <-- NOT SCORED EXACTLY ONCE")
            )
        extra = sorted(set(by_day) - set(self.dropped))
        if extra:
            ok = False
            print(f"days in scores that were never dropped: {extra}")
        counts = Counter(r.status.value for r in all_runs)
        print(
            f"\nruns per status ({len(all_runs)} runs): "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
        left = [r for r in all_runs if self.in_progress(r)]
        print(f"runs left in progress: {len(left)}")
        for run in left:
            print(
                f"  {run.run_id[:8]} {run.status.value} {run.tags.get(PARTITION_TAG, '-')} "
                f"{run.job_name} steps started {self.steps_started(run.run_id) or '-'}"
            )
        ok &= not left
        failed = [r for r in all_runs if r.status == dg.DagsterRunStatus.FAILURE]
        print(f"failed runs: {len(failed)}")
        for run in failed:
            print(
                f"  {run.run_id[:8]} {run.tags.get(PARTITION_TAG, run.job_name)}: {self.why(run)}"
            )
        ticks = _failed_ticks(self.instance)
        print(f"failed sensor ticks: {len(ticks)}")
        for line in Counter(ticks).most_common(8):
            print(f"  {line[1]}x {line[0][:160]}")
        alerts = self.webhook.texts if self.webhook else []
        print(
            f"alerts received: {len(alerts)} "
            f"(failed runs {sum('failed' in t for t in alerts)}, "
            f"drift {sum('drift on' in t for t in alerts)})"
        )
        text = ANSI.sub("", self.daemon_log.read_text(errors="replace"))
        errors = [line.strip() for line in text.splitlines() if " - ERROR - " in line]
        print(f"daemon log ERROR lines: {len(errors)}")
        for line, count in Counter(e.split(" - ERROR - ", 1)[1][:200] for e in errors).most_common(
            10
        ):
            print(f"  {count}x {line}")
        print(
            "proxies: "
            + "; ".join(
                f"{p.name} {p.connections} connections, {p.reset} reset by cuts"
                for p in self.proxies
            )
        )
        print("\nfigures:")
        for line in self.figures:
            print(f"  {line}")
        print(
            "ALL DAYS SCORED EXACTLY ONCE, NO RUN IN PROGRESS"
            if ok
            else "INVARIANT FAILED: a day not scored exactly once or a run left in progress"
        )
        return ok

    def why(self, run) -> str:  # noqa: ANN001 - DagsterRun
        """The first line of the run's first step failure (or of its run failure)."""
        import dagster as dg

        for entry in self.events(run.run_id, dg.DagsterEventType.STEP_FAILURE):
            data = entry.dagster_event.step_failure_data
            user = data.user_failure_data
            if user is not None and user.description:
                return f"{entry.step_key}: {user.description.splitlines()[0][:160]}"
            if data.error is not None:
                message = data.error.message.strip().splitlines()
                return f"{entry.step_key}: {message[-1][:160] if message else '?'}"
        for entry in self.events(run.run_id, dg.DagsterEventType.RUN_FAILURE):
            return (entry.message or "").splitlines()[0][:160]
        return "?"


def _revision() -> str:
    """The commit of ROOT, and whether its tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h %s")[:80] or "an unknown commit"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + (f" (+ {len(dirty.splitlines())} changed files)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="patients per cohort file")
    parser.add_argument("--quiet-days", type=int, default=5, help="days of the latency phase")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    parser.add_argument("--cut-seconds", type=float, default=15.0, help="object store cut")
    parser.add_argument("--outage-seconds", type=float, default=60.0, help="both services cut")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes and logs")
    parser.add_argument(
        "--phases",
        default="quiet,crash,step,outage",
        help="comma-separated phases to run (quiet, crash, step, outage)",
    )
    args = parser.parse_args(argv)
    phases = set(args.phases.split(","))

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    today = dt.datetime.now(dt.UTC).date()

    def day(offset: int) -> str:
        return (today - dt.timedelta(days=offset)).isoformat()

    quiet_days = [day(i) for i in range(args.quiet_days - 1, -1, -1)]
    older = args.quiet_days  # the next day back from the quiet days
    crash_days = [day(older + 2), day(older + 1), day(older)]
    step_day, outage_day = day(older + 3), day(older + 4)

    bench = Bench(args)
    print(
        f"faults benchmark on {_revision()}: {args.rows} rows a day, timeout "
        f"{args.timeout:.0f} s per wait, home {bench.base}",
        flush=True,
    )
    try:
        bench.setup()
        if "quiet" in phases:
            bench.quiet(quiet_days)
        if "crash" in phases:
            bench.crash(crash_days, first_number=10)
        if "step" in phases:
            bench.failed_step(step_day, 20)
        if "outage" in phases:
            bench.outage(outage_day, 30)
        ok = bench.report()
        bench.say("done")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr, flush=True)
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
