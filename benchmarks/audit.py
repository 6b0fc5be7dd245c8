"""What the audit trail costs: API latency with audit records on and off, and batch scoring.

    .venv/bin/python benchmarks/audit.py [--rows 1000000] [--requests 2000] [--rounds 3]
                                         [--home DIR] [--breakdown]

In a temporary STROKE_HOME (or ``--home``, reused: a champion is trained there once, with the
default settings but one Optuna trial):

* API: ``stroke serve`` (uvicorn) with ``STROKE_AUDIT=1`` and ``=0`` (telemetry on in both),
  ``--requests`` sequential single-patient ``POST /predict`` from a separate standard-library
  client process (benchmarks/serving.py's client): p50 / p99 per mode. Target: p50 overhead
  <= 1 ms.
* Batch: ``stroke score --input F --cohort-date D`` as a subprocess on ``--rows`` simulated
  patients, audit on and off (each run a new day, so every run writes a fresh slice): wall
  seconds. As in benchmarks/scoring.py, without the daily loop's Dagster instance: asking it
  adds about 2 s to both modes, which would shrink the overhead's share. Target: overhead
  <= 5 %. Also the audit work alone on the same rows in this process (canonical messages, the
  features' sha256, the slice digest): the part that is hashing.

Modes alternate within each round (off, on, then on, off in the next) and the figures are the
medians over rounds, so drift in the machine's load falls on both modes alike. Before every timed
batch run the previous run's written pages are flushed (``sync``, then waiting until the kernel's
dirty pages settle): without it the second run of a round paid for the first one's writeback and
was ~45 % slower whatever its mode, which an odd number of rounds turned into a fake overhead.
The batch overhead is the median of the per-round ratios on / off (paired within a round).

``--breakdown``: then one profiled ``stroke score`` per mode (benchmarks/scoring.py's timers
around the CLI's stages, plus the audit's own: the features' digests in the reader thread, the
per-row columns, the slice's chain link) and the stages side by side, in seconds of each thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import scoring  # the sibling benchmarks
from serving import clients, free_port, serve_command

BIN = Path(sys.executable).parent
TARGET_API_MS, TARGET_BATCH = 1.0, 0.05


def ensure_champion(home: Path) -> str:
    """A champion in ``home`` (trained here unless one is registered)."""
    os.environ["STROKE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.model.registry import resolve_alias

    version = resolve_alias("champion", settings=load_settings())
    if version is not None:
        return str(version)
    from stroke_dagster.defs.training_command import run_training
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    csv = write_patients(simulate_patients(5110, seed=0), home / "train.csv")
    return str(run_training(csv, settings=load_settings(), n_trials=1, seed=0)["version"])


def serve(home: Path, audit: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "STROKE_HOME": str(home), "STROKE_AUDIT": "1" if audit else "0"}
    env["STROKE_API_RELOAD_SECONDS"] = "30"
    process = subprocess.Popen(
        serve_command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("server did not become ready")


def api_round(home: Path, bodies: Path, requests: int, audit: bool) -> dict[str, float]:
    process, port = serve(home, audit)
    try:
        return clients(port, bodies, requests, 1)
    finally:
        process.terminate()
        process.wait(timeout=60)


def dirty_kib() -> int:
    """The kernel's dirty page cache (written, not yet on disk), in KiB (0 where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Dirty:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def settle(limit_kib: int = 16_384, timeout: float = 60.0) -> None:
    """Flush written pages so that a run does not pay for the previous run's writeback."""
    deadline = time.monotonic() + timeout
    os.sync()
    while dirty_kib() > limit_kib and time.monotonic() < deadline:
        time.sleep(0.2)
        os.sync()
    time.sleep(1.0)


def score_once(home: Path, path: Path, day: str, audit: bool) -> float:
    settle()
    env = {**os.environ, "STROKE_HOME": str(home), "STROKE_AUDIT": "1" if audit else "0"}
    env["DAGSTER_HOME"] = str(scoring.BARE_DAGSTER_HOME)  # scoring only (see the docstring)
    command = [str(BIN / "stroke"), "score", "--input", str(path), "--cohort-date", day]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"stroke score failed: {done.stderr.strip()[-2000:]}")
    return seconds


AUDIT_TIMERS = """
from stroke_dagster.audit import records as audit_records
Hasher = audit_records.SliceHasher
Hasher.add = timed("audit: per-row columns and slice digest", Hasher.add)
Hasher.feature_digests = staticmethod(
    timed("audit: features' messages and sha256", Hasher.feature_digests)
)
audit_records.record_slice = timed("audit: the slice's chain link", audit_records.record_slice)
"""


def breakdown(home: Path, path: Path, days: list[str]) -> None:
    """One profiled ``stroke score`` per mode; each stage's seconds side by side."""
    program = scoring.PROFILE.replace("T_CLI = time.time()", AUDIT_TIMERS + "T_CLI = time.time()")
    times: dict[bool, dict[str, float]] = {}
    walls: dict[bool, float] = {}
    for audit, day in zip((False, True), days, strict=True):
        settle()
        os.environ.update(STROKE_HOME=str(home), STROKE_AUDIT="1" if audit else "0")
        wall, _, _, _, profile = scoring._launch(
            [sys.executable, "-c", program], path, "--cohort-date", day
        )
        times[audit], walls[audit] = profile["times"], wall
    print(f"breakdown, one profiled run per mode: {walls[False]:.2f} s off, {walls[True]:.2f} s on")
    print(f"    {'stage (thread)':<62} {'off':>7} {'on':>7}")
    for stage in sorted(set(times[False]) | set(times[True])):
        off, on = times[False].get(stage, 0.0), times[True].get(stage, 0.0)
        if max(off, on) >= 0.005:
            print(f"    {stage:<62} {off:7.2f} {on:7.2f}")


def hashing_alone(path: Path) -> float:
    """Seconds of the audit columns alone (SliceHasher.add) over the file's rows, in batches."""
    import numpy as np
    import pyarrow as pa

    from stroke_dagster.audit import records as audit
    from stroke_dagster.audit import rowhash
    from stroke_dagster.io.readers import iter_patient_tables
    from stroke_dagster.io.validation import SeenIds, validate_table

    seen, total = SeenIds(), 0.0
    hasher = audit.SliceHasher("2026-01-01")
    rowhash.sha256_rows(np.zeros((1, rowhash.BLOCK), np.uint8))  # the kernel loaded: warm
    for table in iter_patient_tables(path, 100_000):
        valid = validate_table(table, seen_ids=seen)
        assert valid is not None
        n = valid.num_rows
        scores = pa.table(
            {
                "patient_id": valid["id"].cast(pa.string()),
                "stroke_probability": np.full(n, 0.05),
                "risk_tier": pa.array(["low"] * n),
            }
        )
        started = time.perf_counter()
        hasher.add(scores, valid, np.full(n, 0.05), np.zeros(n, np.uint8))
        total += time.perf_counter() - started
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", type=Path, help="STROKE_HOME to reuse (kept afterwards)")
    parser.add_argument(
        "--breakdown", action="store_true", help="then one profiled run per mode, by stage"
    )
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="stroke-audit-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    try:
        version = ensure_champion(home)
        from serving import patients

        bodies = home / "bench-bodies.json"
        bodies.write_text(json.dumps([json.dumps(r) for r in patients(500)]))
        from stroke_dagster.simulate.generator import simulate_patients, write_patients

        cohort = home / f"cohort-{args.rows}.csv"
        if not cohort.exists():
            write_patients(simulate_patients(args.rows, seed=5, with_label=False), cohort)
        score_once(home, cohort, "2026-02-01", True)  # warm: numba caches, page cache
        api: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        batch: dict[bool, list[float]] = {True: [], False: []}
        day = dt.date(2026, 2, 2)
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for audit in order:
                api[audit].append(api_round(home, bodies, args.requests, audit))
            for audit in order:
                batch[audit].append(score_once(home, cohort, day.isoformat(), audit))
                day += dt.timedelta(days=1)
        hashing = hashing_alone(cohort)
        if args.breakdown:
            breakdown(home, cohort, [day.isoformat(), (day + dt.timedelta(days=1)).isoformat()])
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    def med(mode: bool, key: str) -> float:
        return statistics.median(r[key] for r in api[mode])

    on_s, off_s = statistics.median(batch[True]), statistics.median(batch[False])
    overhead_ms = med(True, "p50_ms") - med(False, "p50_ms")
    ratios = [on / off for on, off in zip(batch[True], batch[False], strict=True)]
    batch_overhead = statistics.median(ratios) - 1
    print(
        f"\nStrokeRF v{version}, {os.cpu_count()} cores, median of {args.rounds} rounds; load "
        f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(f"API, {args.requests} sequential POST /predict: p50 / p99 ms")
    for mode in (False, True):
        p50, p99 = med(mode, "p50_ms"), med(mode, "p99_ms")
        print(f"  audit {'on ' if mode else 'off'}  {p50:6.3f} / {p99:6.3f}")
    print(
        f"  p50 overhead {overhead_ms * 1000:+.0f} us (target <= {TARGET_API_MS:g} ms) -> "
        f"{'met' if overhead_ms <= TARGET_API_MS else 'NOT met'}"
    )
    print(f"batch, stroke score --cohort-date, {args.rows:,} rows: seconds")
    print(f"  audit off {off_s:7.2f}  runs {[round(s, 2) for s in batch[False]]}")
    print(f"  audit on  {on_s:7.2f}  runs {[round(s, 2) for s in batch[True]]}")
    print(f"  on / off per round {[round(r, 3) for r in ratios]}")
    print(
        f"  overhead {batch_overhead:+.1%} (target <= {TARGET_BATCH:.0%}) -> "
        f"{'met' if batch_overhead <= TARGET_BATCH else 'NOT met'}; the audit columns alone "
        f"(messages, the features' sha256, the slice digest) take {hashing:.2f} s in this process"
    )
    result = {
        "rows": args.rows,
        "api": {("on" if k else "off"): v for k, v in api.items()},
        "batch_seconds": {("on" if k else "off"): v for k, v in batch.items()},
        "batch_overhead": batch_overhead,
        "hashing_seconds": hashing,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
