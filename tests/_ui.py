"""Helpers of the UI test (tests/defs/test_ui.py): ``dagster dev`` on temporary homes, cohort files
dropped into the loop, bounded waits on the instance, and Debian's Chromium under Playwright."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
from _dagster import kill_all

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCREENSHOTS = ROOT / "tests" / "ui-screenshots"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own builds cannot be downloaded
# Without the background-networking flags Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What the webapp shows while a part of the page still loads (CSS-module class name prefixes).
LOADING = '[class*="Skeleton_skeleton"], [class*="Spinner_spinner"]:not([class*="Spinner_stopped"])'
T = TypeVar("T")


def day(offset: int) -> str:
    """The UTC day ``offset`` days from today, as a partition key."""
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path, chars: int = 4000) -> str:
    """The end of ``log``, without the terminal colours of Dagster's log lines."""
    import re

    text = log.read_text(errors="replace") if log.exists() else "<no log>"
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[-chars:]


def wait_for(what: str, predicate: Callable[[], T], timeout: float, log: Path) -> T:
    """Poll ``predicate`` every second until it returns something truthy; fail after ``timeout``
    seconds naming ``what`` and the tail of ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; "
                f"tail of {log.name}:\n{log_tail(log)}"
            )
        time.sleep(1)


def drop_cohort(home: Path, name: str, frame: pd.DataFrame) -> Path:
    """Drop a cohort file into ``home/incoming`` whole (written aside, then renamed), as the
    upstream system does."""
    from stroke_dagster.simulate.generator import write_patients

    incoming = home / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    staging = incoming / f".{name}"
    write_patients(frame, staging)
    return staging.rename(incoming / name)


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """An older, diabetic population: every patient 80 or older with high glucose."""
    out = frame.copy()
    out["age"] = 80 + (out["age"] % 20)
    out["avg_glucose_level"] = (out["avg_glucose_level"] * 1.6 + 60).round(2)
    return out


class DagsterDev:
    """``dagster dev`` (webserver + daemon) on the project's workspace, in its own session."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "dagster"),
                    "dev",
                    "-w",
                    "workspace.yaml",
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"dagster dev exited with {self.process.returncode}; log tail:\n"
                f"{log_tail(self.log)}"
            )
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 300) -> None:
        wait_for("dagster dev's /server_info", self._answers, timeout, self.log)

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 30 s; then any straggler of this
        instance (a run worker that left the group)."""
        dagster_home = Path(self.env["DAGSTER_HOME"])
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # children that outlived dagster dev
        kill_all(dagster_home)


# --------------------------------------------------------------------------------- the browser
def set_nux_seen(url: str) -> None:
    """Tell the webserver the "Join the Dagster community" dialog was seen (it covers every page
    opened from 127.0.0.1 otherwise)."""
    import json

    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": "mutation { setNuxSeen }"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["data"]["setNuxSeen"] is True


def check_page(page, url: str, spec: dict, shot: Path, log: Path) -> None:  # noqa: ANN001
    """Open ``url``, wait (bounded) until every text and metadata row of ``spec`` is visible,
    then take a full-page screenshot into ``shot`` (and the page's text beside it).

    ``spec``: ``texts`` (case-sensitive substrings), ``exact`` (whole texts of an element) and
    ``rows`` (metadata label -> a substring of its table row, "" for the label alone).
    """
    import re

    from playwright.sync_api import expect

    timeout = 60_000
    failed = shot.with_name(f"{shot.stem}-failed.png")
    failed.unlink(missing_ok=True)
    page.goto(url)
    step = ""
    try:
        for text in spec.get("texts", ()):
            step = f"text {text!r}"
            expect(page.get_by_text(re.compile(re.escape(text))).first).to_be_visible(
                timeout=timeout
            )
        for text in spec.get("exact", ()):
            step = f"exact text {text!r}"
            expect(page.get_by_text(text, exact=True).first).to_be_visible(timeout=timeout)
        for label, value in spec.get("rows", {}).items():
            step = f"metadata row {label!r} holding {value!r}"
            row = page.locator("tr").filter(has=page.get_by_text(label, exact=True)).first
            expect(row).to_be_visible(timeout=timeout)
            expect(row).to_contain_text(value, timeout=timeout)
        step = "the page's loading placeholders to go"
        expect(page.locator(LOADING)).to_have_count(0, timeout=timeout)
        step = "no community dialog over the page"
        expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
    except AssertionError as exc:
        page.screenshot(path=str(failed), full_page=True)
        raise AssertionError(
            f"{url}: waiting for {step} failed ({exc}); the page as it was: {failed}; "
            f"tail of {log.name}:\n{log_tail(log)}"
        ) from None
    page.screenshot(path=str(shot), full_page=True)
    shot.with_suffix(".txt").write_text(page.inner_text("body"))  # what the page says, beside it
