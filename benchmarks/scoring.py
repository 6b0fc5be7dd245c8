"""Cohort scoring end to end vs the compute floor, and peak memory as the cohort grows.

    .venv/bin/python benchmarks/scoring.py [--rows 1000000] [--big-rows 5000000] [--repeats 3]

In a temporary STROKE_HOME: trains a champion with the default ``stroke train`` settings on
5,110 simulated patients, writes 1M (and 5M) simulated patients as CSV once, then measures in one
run, interleaved:

* end to end: ``stroke score --input F --cohort-date D`` as a subprocess (process start, model
  load, reading, validation, scoring, tiers and the warehouse write all included);
* the floor: ``predict_proba`` of the same champion on the same rows, already typed in memory.

Prints medians, the ratio (target <= 1.3x), rows/s and the subprocess's peak RSS (target
<= 1 GB at 1M rows and not growing at 5M).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


# A tiny launcher measures the child: the peak RSS that ``wait4`` reports for a child forked from
# this (large) benchmark process would include this process's memory.
LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(f"BENCH {time.perf_counter() - t} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_score(path: Path, day: str) -> tuple[float, float, dict]:
    """Wall seconds, peak RSS (MB) and the JSON summary of one ``stroke score`` process."""
    command = [str(BIN / "stroke"), "score", "--input", str(path), "--cohort-date", day]
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *command], capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    _, wall, rss_kb, code = lines[-1].split()
    if int(code) != 0:
        raise SystemExit(f"stroke score failed ({code}): {done.stderr.strip()}")
    return float(wall), int(rss_kb) / 1024, json.loads(lines[-2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=5_000_000, help="0 to skip")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="stroke-bench-scoring-"))
    os.environ["STROKE_HOME"] = str(tmp / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from stroke_dagster.ingest import read_patient_file
    from stroke_dagster.schema import FEATURES
    from stroke_dagster.settings import load_settings
    from stroke_dagster.simulate import simulate_patients, write_patients
    from stroke_dagster.training_run import run_training
    from stroke_dagster.validation import validate_patients

    t = time.perf_counter()
    train_csv = write_patients(simulate_patients(5110, seed=1), tmp / "train.csv")
    trained = run_training(train_csv, settings=load_settings())  # `stroke train` defaults
    print(
        f"champion v{trained['version']} ({trained['alias']}): {trained['best_params']} "
        f"trained in {time.perf_counter() - t:.0f} s"
    )

    t = time.perf_counter()
    cohort = write_patients(simulate_patients(args.rows, seed=2, with_label=False), tmp / "c.csv")
    print(f"{args.rows:,} patients written in {time.perf_counter() - t:.1f} s ({cohort})")

    from stroke_dagster import registry

    model = registry.load_model("champion", settings=load_settings())
    rows = validate_patients(read_patient_file(cohort)).valid[list(FEATURES)]

    cold_wall, cold_rss, _ = run_score(cohort, "2026-01-01")
    print(f"first run after registration (fills the serving cache): {cold_wall:.2f} s")
    floors, walls, rss = [], [], []
    for i in range(args.repeats):
        t = time.perf_counter()
        model.pipeline.predict_proba(rows)
        floors.append(time.perf_counter() - t)
        wall, peak, summary = run_score(cohort, "2026-01-02")
        walls.append(wall)
        rss.append(peak)
        assert summary["rows_scored"] == args.rows, summary
        print(f"  repeat {i + 1}: floor {floors[-1]:.2f} s, end to end {wall:.2f} s")
    del rows
    floor, e2e = statistics.median(floors), statistics.median(walls)
    print(f"floor (predict_proba, {args.rows:,} rows in memory): median {floor:.2f} s")
    print(f"end to end (stroke score --cohort-date):            median {e2e:.2f} s")
    print(f"ratio end to end / floor: {e2e / floor:.2f}x (target <= 1.3x)")
    print(f"throughput: {args.rows / e2e:,.0f} rows/s end to end")
    print(f"peak RSS at {args.rows:,} rows: {max(rss):.0f} MB (target <= 1024 MB)")

    if args.big_rows:
        t = time.perf_counter()
        big = tmp / "big.csv"
        with open(big, "wb") as out:  # 5 x 1M distinct ids, written chunk by chunk
            for k in range(args.big_rows // args.rows):
                part = simulate_patients(
                    args.rows, seed=10 + k, with_label=False, id_start=1 + k * args.rows
                )
                write_patients(part, tmp / "part.csv")
                data = (tmp / "part.csv").read_bytes()
                out.write(data if k == 0 else data.split(b"\n", 1)[1])
        print(f"{args.big_rows:,} patients written in {time.perf_counter() - t:.1f} s")
        wall, peak, summary = run_score(big, "2026-01-03")
        assert summary["rows_scored"] == args.big_rows, summary
        print(
            f"{args.big_rows:,} rows end to end: {wall:.2f} s ({args.big_rows / wall:,.0f} rows/s),"
            f" peak RSS {peak:.0f} MB ({peak / max(rss):.2f}x the {args.rows:,}-row peak)"
        )
    print(f"(work files in {tmp})")


if __name__ == "__main__":
    main()
