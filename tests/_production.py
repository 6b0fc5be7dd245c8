"""The production profile's services, started by the tests themselves on a fresh machine.

:func:`production_services` starts, in this order, and stops at the end:

* PostgreSQL (``initdb`` in a temporary directory, as the ``postgres`` user when run as root, on a
  free port) with two databases: ``dagster`` (the instance's runs, events, schedules) and
  ``mlflow`` (the tracking and registry store);
* an S3 API server (moto in server mode) with one bucket;
* ``mlflow server`` on that PostgreSQL, its artifacts on the S3 bucket (``--serve-artifacts``);
* a Dask scheduler and worker processes (``dask worker --no-nanny``, one thread each), each with its
  own working directory and its own temporary ``STROKE_HOME`` (local scratch only), sharing only
  the settings: storage on S3, the MLflow HTTP URI, the Dagster instance on PostgreSQL.

When no PostgreSQL binaries are found, :class:`ServicesUnavailable` says why (the tests skip).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _s3 import AWS_TEST_ENV  # tests/ is on sys.path (pytest; a script or a preload: its dir)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "stroke-platform"
# moto's dummy credentials, as the storage tests use them (botocore reads them like real ones).
AWS_ENV = dict(AWS_TEST_ENV)


class ServicesUnavailable(RuntimeError):
    """A service of the profile cannot be started on this machine (the reason is the message)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what: str, timeout: float = 90.0, proc: subprocess.Popen | None = None):  # noqa: ANN001, ANN201
    """Poll ``check()`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServicesUnavailable(f"{what}: process exited with {proc.returncode}")
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not up yet
            error = exc
        time.sleep(0.2)
    raise ServicesUnavailable(f"{what} not ready after {timeout:.0f} s ({error})")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def postgres_bin_dir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are (PATH first, then Debian's versioned directories)."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "postgres").is_file():
            return Path(candidate)
    return None


@dataclass
class Process:
    """A started service process and its log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a machine that dies (no clean shutdown)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(
    name: str,
    args: list[str],
    logs: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    registry: list[Process] | None = None,
) -> Process:
    """Start ``args`` in its own process group, output to ``logs/<name>.log`` (and append it to
    ``registry``, so that it is stopped even if a later service fails to start)."""
    log = logs / f"{name}.log"
    if user is not None:
        args = ["runuser", "-u", user, "--", *args]
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    process = Process(name, popen, log)
    if registry is not None:
        registry.append(process)
    return process


@dataclass
class Worker:
    """A ``dask worker`` process with its own working directory and ``STROKE_HOME``."""

    name: str
    home: Path
    workdir: Path
    process: Process


@dataclass
class Services:
    """Addresses of the running services and the environment every process of the profile
    shares (:attr:`env`: settings only, no local path)."""

    root: Path
    logs: Path
    postgres_port: int
    s3_endpoint: str
    mlflow_uri: str
    scheduler: str
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    _next_worker: int = 0

    @property
    def storage_url(self) -> str:
        return self.env["STROKE_STORAGE_URL"]

    def worker_env(self, home: Path) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(PROJECT_ROOT),
            "HOME": str(home),
            **self.env,
            "STROKE_HOME": str(home),
            # Each worker's own Dagster home: never read by the steps (the instance comes from
            # the run's instance reference, PostgreSQL).
            "DAGSTER_HOME": str(home / "dagster"),
        }
        return env

    def add_worker(self, wait: bool = True) -> Worker:
        """Start one more worker (a fresh machine: its own directories); ``wait``: until it
        has joined the scheduler."""
        self._next_worker += 1
        name = f"worker-{self._next_worker}"
        base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        home, workdir = base / "home", base / "work"
        (home / "dagster").mkdir(parents=True)
        workdir.mkdir()
        process = start(
            name,
            [
                str(BIN / "dask"),
                "worker",
                self.scheduler,
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--local-directory",
                str(workdir),
                "--preload",  # dask_setup below: the platform imported before the first step
                str(Path(__file__).resolve()),
            ],
            self.logs,
            env=self.worker_env(home),
            cwd=workdir,
        )
        worker = Worker(name, home, workdir, process)
        self.workers.append(worker)
        if wait:
            self.wait_for_workers()
        return worker

    def wait_for_workers(self) -> None:
        """Until every running worker has registered (read from the scheduler's log: a client
        here would leave Dask's event-loop thread behind in a process that forks)."""
        scheduler = next(p for p in self.processes if p.name == "dask-scheduler")
        alive = {w.name for w in self.workers if w.process.popen.poll() is None}

        def registered() -> bool:
            text = scheduler.log.read_text(errors="replace")
            return all("Register worker addr: " in text and f"name: {n}\n" in text for n in alive)

        wait_until(registered, f"dask workers {sorted(alive)}", timeout=120)

    def worker(self, name: str) -> Worker:
        return next(w for w in self.workers if w.name == name)

    def logs_tail(self) -> str:
        parts = [f"--- {p.name}\n{p.tail()}" for p in self.processes]
        parts += [f"--- {w.name}\n{w.process.tail()}" for w in self.workers]
        return "\n".join(parts)


def _start_postgres(root: Path, logs: Path, registry: list[Process]) -> int:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ServicesUnavailable(
            "no PostgreSQL binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin: "
            "install Debian's `postgresql` package (.ci/run does)"
        )
    user = "postgres" if os.geteuid() == 0 else None  # initdb and postgres refuse root
    data = Path(tempfile.mkdtemp(prefix="stroke-pg-"))  # outside root-only pytest tmp dirs
    if user is not None:
        shutil.chown(data, user=user, group=user)
    pgdata = data / "data"
    initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust"]
    if user is not None:
        initdb = ["runuser", "-u", user, "--", *initdb]
    done = subprocess.run(initdb, capture_output=True, text=True, check=False)
    if done.returncode:
        raise ServicesUnavailable(f"initdb failed: {done.stderr.strip()[-500:]}")
    port = free_port()
    process = start(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(data),
            # A test database: durability off (a crash loses the whole temporary cluster anyway).
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        logs,
        user=user,
        registry=registry,
    )
    process.data_dir = data  # type: ignore[attr-defined]

    def ready() -> bool:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
        return True

    wait_until(ready, "PostgreSQL", timeout=60, proc=process.popen)
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        for db in ("dagster", "mlflow"):
            cursor.execute(f"CREATE DATABASE {db}")
    conn.close()
    return port


def _start_s3(logs: Path, registry: list[Process]) -> str:
    """moto's S3 server as a service process like the others (own process group, log file)."""
    port = free_port()
    process = start(
        "s3",
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        logs,
        env={**os.environ, **AWS_ENV},
        registry=registry,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: _port_open(port), "S3 server (moto)", timeout=60, proc=process.popen)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_boto_kwargs()).create_bucket(Bucket=BUCKET)
    return endpoint


def _boto_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
    }


def _start_mlflow(
    logs: Path, pg_port: int, s3: str, root: Path, port: int, registry: list[Process]
) -> str:
    env = {
        **os.environ,
        **AWS_ENV,
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "MLFLOW_SERVER_ALLOWED_HOSTS": "*",  # host-header check of MLflow 3's security middleware
    }
    process = start(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"postgresql+psycopg2://postgres@127.0.0.1:{pg_port}/mlflow",
            "--artifacts-destination",
            f"s3://{BUCKET}/mlartifacts",
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        logs,
        env=env,
        cwd=root,
        registry=registry,
    )
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200

    try:
        wait_until(healthy, "mlflow server", timeout=180, proc=process.popen)
    except ServicesUnavailable as exc:
        raise ServicesUnavailable(f"{exc}\n{process.tail()}") from None
    return uri


def _start_scheduler(logs: Path, root: Path, registry: list[Process]) -> str:
    port = free_port()
    process = start(
        "dask-scheduler",
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
        logs,
        cwd=root,
        registry=registry,
    )
    wait_until(lambda: _port_open(port), "dask scheduler", timeout=60, proc=process.popen)
    return f"tcp://127.0.0.1:{port}"


@contextlib.contextmanager
def production_services(
    n_workers: int = 2, settings_env: dict[str, str] | None = None
) -> Iterator[Services]:
    """Start every service of the profile; stop them all (and delete their data) at the end.

    ``settings_env``: more settings (``STROKE_*``) shared by every process of the profile.
    """
    root = Path(tempfile.mkdtemp(prefix="stroke-production-"))
    logs = root / "logs"
    logs.mkdir()
    processes: list[Process] = []
    services: Services | None = None
    try:
        # Independent services start together (this machine's slow imports overlap).
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            postgres = pool.submit(_start_postgres, root, logs, processes)
            s3 = pool.submit(_start_s3, logs, processes)
            scheduler = pool.submit(_start_scheduler, logs, root, processes)
            pg_port, endpoint, address = postgres.result(), s3.result(), scheduler.result()
            mlflow_port = free_port()
            mlflow = pool.submit(
                _start_mlflow, logs, pg_port, endpoint, root, mlflow_port, processes
            )
            env = {
                **AWS_ENV,
                "STROKE_STORAGE_URL": f"s3://{BUCKET}/platform",
                "STROKE_S3_ENDPOINT_URL": endpoint,
                "MLFLOW_S3_ENDPOINT_URL": endpoint,
                "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
                "STROKE_EXECUTOR": "dask",
                "STROKE_DASK_SCHEDULER": address,
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": str(pg_port),
                "DAGSTER_PG_USER": "postgres",
                "DAGSTER_PG_PASSWORD": "",
                "DAGSTER_PG_DB": "dagster",
                **(settings_env or {}),
            }
            services = Services(
                root=root,
                logs=logs,
                postgres_port=pg_port,
                s3_endpoint=endpoint,
                mlflow_uri=env["MLFLOW_TRACKING_URI"],
                scheduler=address,
                env=env,
                processes=processes,
            )
            for _ in range(n_workers):
                services.add_worker(wait=False)
            services.wait_for_workers()
            mlflow.result()
        yield services
    finally:
        everything = list(processes) + ([w.process for w in services.workers] if services else [])
        for process in everything:  # test services: nothing to flush, except PostgreSQL's stop
            process.signal(signal.SIGINT if process.name == "postgres" else signal.SIGKILL)
        for process in everything:
            process.stop()
            data_dir = getattr(process, "data_dir", None)
            if data_dir is not None:
                shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


# What the steps import on first use (in their bodies): imported by each worker as it starts.
WARM_MODULES = (
    "mlflow",
    "optuna",
    "matplotlib.pyplot",
    "skops.io",
    "duckdb",
    "stroke_dagster.scoring.batch",
    "stroke_dagster.warehouse.store",
    "stroke_dagster.monitoring.drift.daily",
    "stroke_dagster.monitoring.performance",
    "stroke_dagster.model.card",
    "stroke_dagster.clinical.evidence",
    "stroke_dagster.clinical.explain",
    "stroke_dagster.monitoring.label_free",
    "stroke_dagster.monitoring.day_insights",
    "stroke_dagster.model.engine",
    "stroke_dagster.model.gate",
    "stroke_dagster.clinical.calibration",
    "stroke_dagster.clinical.subgroups",
    "stroke_dagster.clinical.decision_curve",
    "stroke_dagster.model.version_docs",
    "stroke_dagster.model.store",
)


def dask_setup(worker: object) -> None:
    """Worker preload: the code location and the modules its steps use, imported while the
    worker starts (as a production image's workers are warmed), not in the first steps."""
    import importlib

    from stroke_dagster.definitions import defs

    defs()
    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def main() -> None:
    """Start the services (``make prod-services``), print their settings, wait for Ctrl-C."""
    import shlex

    with production_services() as services:
        print("# The production profile's services are up; in another shell:")
        for name, value in services.env.items():
            print(f"export {name}={shlex.quote(value)}")
        print(
            f"# Dask workers: {', '.join(w.name for w in services.workers)}; logs: {services.logs}"
        )
        print("# DAGSTER_HOME needs deploy/dagster.production.yaml as dagster.yaml (make")
        print("# instance-production). Ctrl-C (or SIGTERM) stops them all.")
        sys.stdout.flush()

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, stop)  # also when started in the background (SIGINT ignored)
        signal.signal(signal.SIGTERM, stop)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
