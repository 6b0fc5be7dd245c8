"""Helpers for tests that run real Dagster processes (``dagster-daemon``, ``dagster dev``)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def processes_of(dagster_home: Path) -> list[int]:
    """Every process whose environment names this DAGSTER_HOME (a daemon, its code server,
    its run workers: all started by the test), this one excepted."""
    marker = f"DAGSTER_HOME={dagster_home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def kill_all(dagster_home: Path, timeout: float = 30.0) -> None:
    """SIGKILL every process of this DAGSTER_HOME and wait until they are gone."""
    for pid in processes_of(dagster_home):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while processes_of(dagster_home) and time.monotonic() < deadline:
        time.sleep(0.2)
