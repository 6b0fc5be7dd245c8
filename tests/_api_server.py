"""A real uvicorn process serving the API on a free loopback port, for the API tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stroke_command(*args: str) -> list[str] | None:
    """``stroke <args>`` (the installed console script), or None while a command is missing."""
    from stroke_dagster.cli import COMMANDS

    script = Path(sys.executable).with_name("stroke")
    if not script.exists() or any(
        importlib.util.find_spec(f"stroke_dagster.cli.{name}") is None for name in COMMANDS
    ):
        return None
    return [str(script), *args]


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a trained STROKE_HOME (its warehouse left behind, like ``champion_home``)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("warehouse*"))
    return target


def server_env(home: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STROKE_", "MLFLOW_"))}
    env.update(
        STROKE_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        STROKE_TELEMETRY_FLUSH_SECONDS="0.2",
        STROKE_API_RELOAD_SECONDS="1",
        STROKE_MODEL_ALIAS_TTL="0",  # alias moves made behind the model cache's back: seen at once
    )
    env.update(overrides)
    return env


class ApiServer:
    """``uvicorn --factory stroke_dagster.api.app:create_app`` in a subprocess."""

    def __init__(self, home: Path, *, wait_ready: bool = False, **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"uvicorn-{self.port}.log"
        command = stroke_command("serve", "--host", "127.0.0.1", "--port", str(self.port)) or [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "stroke_dagster.api.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
        ]
        self._log_handle = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, env=server_env(home, **env), stdout=self._log_handle, stderr=subprocess.STDOUT
        )
        self._wait("/ready" if wait_ready else "/health")

    def _wait(self, path: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{path} not 200 after {timeout:.0f} s:\n{self.log.read_text()}")

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful shutdown (SIGTERM, like a container stop); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_handle.close()
        return int(self.process.returncode)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
