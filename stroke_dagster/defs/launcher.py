"""The run launcher of the project's instances: Dagster's default one, made checkable.

Dagster's run monitoring finds runs whose worker died (a crash, a reboot, ``kill -9``) only
through the launcher's ``check_run_worker_health``, which :class:`DefaultRunLauncher` does not
offer: after a crash its runs stay ``STARTED`` for ever and block their day. This launcher
records the host of every run it launches and answers the health check from the run worker's
process id, which Dagster itself logs ("Started process for run (pid: N)"):

* same host, process alive and started before that event: ``RUNNING``;
* same host, process gone (or the id reused by a younger process): ``FAILED``; the monitor
  marks the run failed and the run retries of ``dagster.yaml`` launch it again;
* another host, or no process id logged yet: ``RUNNING`` (it cannot tell; the
  ``max_runtime_seconds`` of run monitoring remains the backstop).

Runs executed in process by the ``stroke`` command carry the same two tags (host, pid).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

HOST_TAG = "stroke/host"
PID_TAG = "stroke/pid"
PID_MESSAGE = "Started process for run (pid:"
# A process is the run worker only if it started before Dagster logged its id (clock slack).
START_SLACK_S = 5.0


def host_name() -> str:
    return socket.gethostname()


def process_tags() -> dict[str, str]:
    """The tags of a run executed in this process (``stroke train`` and the like)."""
    return {HOST_TAG: host_name(), PID_TAG: str(os.getpid())}


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds); ``None`` if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # no /proc (not Linux): only whether it exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, logged_at: float) -> bool:
    """Whether ``pid`` is still the process that was logged as the run worker at ``logged_at``."""
    started = process_started_at(pid)
    return started is not None and started <= logged_at + START_SLACK_S


class MonitoredRunLauncher(DefaultRunLauncher):
    """:class:`DefaultRunLauncher` whose run workers Dagster's run monitoring can check."""

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {HOST_TAG: host_name()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def _worker_pid(self, run: DagsterRun) -> tuple[int, float] | None:
        if PID_TAG in run.tags:
            record = self._instance.get_run_record_by_id(run.run_id)
            started = record.start_time if record and record.start_time else time.time()
            return int(run.tags[PID_TAG]), started
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=100
        ).records
        for record in records:
            entry = record.event_log_entry
            if entry.message and entry.message.startswith(PID_MESSAGE):
                pid = entry.message[len(PID_MESSAGE) :].strip(" ).")
                return int(pid), entry.timestamp
        return None

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        host = run.tags.get(HOST_TAG)
        if host != host_name():
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"run worker on host {host or 'unknown'}: not checked here"
            )
        found = self._worker_pid(run)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker process logged yet")
        pid, logged_at = found
        if worker_alive(pid, logged_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} on {host} is gone (crash, restart or kill)",
            run_worker_id=str(pid),
        )
