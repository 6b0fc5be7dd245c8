"""Cohort scoring end to end vs the bare ``predict_proba``, parity, and memory up to 10M rows.

    .venv/bin/python benchmarks/scoring.py [--rows 1000000] [--big-rows 10000000] [--repeats 3]
                                           [--trials N] [--parity-rows 1000000]

In a temporary STROKE_HOME: trains a champion with ``stroke train``'s settings (``--trials``
Optuna trials; trial 0 is the default forest, 300 trees of depth 8) on 5,110 simulated patients,
writes ``--rows`` simulated patients as CSV, then measures in one run, interleaved:

* end to end: ``stroke score --input F --cohort-date D`` as a subprocess (process start, model
  load, reading, validation, scoring, tiers and the warehouse write all included);
* the floor: ``predict_proba`` of the same champion (``n_jobs=-1``) on the same rows, already
  typed in memory.

Prints medians, the ratio (target < 1.0), rows/s and the subprocess's peak RSS; then the
engine's bare predict time on the same rows in memory (Arrow columns in, probabilities out) and
its node visits per second (per row, the depth of the reached leaf summed over the trees);
parity: the probabilities ``stroke score --output`` wrote for every row against the floor's
(exact means <= 1e-12). With ``--big-rows`` (0 to skip) it writes a bigger CSV chunk by chunk
(never more than ``--rows`` patients in this process), scores it once, prints its peak RSS
against the ``--rows`` peak, and checks the warehouse's scores of the first chunk's patients.
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
import warnings
from pathlib import Path

import numpy as np
from engines import node_visits  # the sibling benchmark (this script's directory)

BIN = Path(sys.executable).parent


# A tiny launcher measures the child: the peak RSS that ``wait4`` reports for a child forked from
# this (large) benchmark process would include this process's memory.
LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
cpu, code = usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)
print(f"BENCH {time.perf_counter() - t} {usage.ru_maxrss} {code} {cpu}")
"""


def run_score(path: Path, *extra: str) -> tuple[float, float, dict, float]:
    """Wall seconds, peak RSS (MB), the JSON summary and the CPU seconds (user + system) of one
    ``stroke score`` process."""
    command = [str(BIN / "stroke"), "score", "--input", str(path), *extra]
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *command], capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    _, wall, rss_kb, code, cpu = lines[-1].split()
    if int(code) != 0:
        raise SystemExit(f"stroke score failed ({code}): {done.stderr.strip()}")
    return float(wall), int(rss_kb) / 1024, json.loads(lines[-2]), float(cpu)


def gap(ids: np.ndarray, probs: np.ndarray, by_id: dict[str, float]) -> tuple[float, int]:
    """``max |probs - written|`` over the ids found in ``by_id``, and how many were found."""
    written = np.array([by_id.get(i, np.nan) for i in ids], dtype=np.float64)
    found = ~np.isnan(written)
    if not found.any():
        return float("inf"), 0
    return float(np.max(np.abs(written[found] - probs[found]))), int(found.sum())


def write_big(path: Path, rows: int, chunk: int, work: Path) -> None:
    """``rows`` distinct simulated patients as one CSV, written ``chunk`` patients at a time."""
    from stroke_dagster.simulate import simulate_patients, write_patients

    with open(path, "wb") as out:
        for k, start in enumerate(range(0, rows, chunk)):
            n = min(chunk, rows - start)
            part = simulate_patients(n, seed=10 + k, with_label=False, id_start=1 + start)
            write_patients(part, work / "part.csv")
            del part
            data = (work / "part.csv").read_bytes()
            out.write(data if k == 0 else data.split(b"\n", 1)[1])
    (work / "part.csv").unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="0 to skip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials of the champion")
    parser.add_argument("--parity-rows", type=int, default=1_000_000, help="rows compared")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)

    tmp = Path(tempfile.mkdtemp(prefix="stroke-bench-scoring-"))
    os.environ["STROKE_HOME"] = str(tmp / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from stroke_dagster import registry, warehouse
    from stroke_dagster.engine import ForestEngine
    from stroke_dagster.ingest import read_patient_file
    from stroke_dagster.schema import FEATURES, ID
    from stroke_dagster.settings import load_settings
    from stroke_dagster.simulate import simulate_patients, write_patients
    from stroke_dagster.training_run import run_training
    from stroke_dagster.validation import validate_patients

    t = time.perf_counter()
    train_csv = write_patients(simulate_patients(5110, seed=1), tmp / "train.csv")
    trained = run_training(train_csv, settings=load_settings(), n_trials=args.trials)
    print(
        f"champion v{trained['version']} ({trained['alias']}): {trained['best_params']} "
        f"trained in {time.perf_counter() - t:.0f} s"
    )

    t = time.perf_counter()
    cohort = write_patients(simulate_patients(args.rows, seed=2, with_label=False), tmp / "c.csv")
    print(f"{args.rows:,} patients written in {time.perf_counter() - t:.1f} s ({cohort})")

    model = registry.load_model("champion", settings=load_settings())
    valid = validate_patients(read_patient_file(cohort)).valid
    ids = valid[ID].to_numpy(dtype=str)
    rows = valid[list(FEATURES)]
    del valid

    cold_wall, _, _, _ = run_score(cohort, "--cohort-date", "2026-01-01")
    print(f"first run after registration (fills the model cache): {cold_wall:.2f} s")
    floors, walls, rss, floor_cpu, cpus = [], [], [], [], []
    reference = np.empty(0)
    for i in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        reference = model.pipeline.predict_proba(rows)[:, 1]
        floors.append(time.perf_counter() - t)
        floor_cpu.append(time.process_time() - c)
        wall, peak, summary, cpu = run_score(cohort, "--cohort-date", "2026-01-02")
        walls.append(wall)
        cpus.append(cpu)
        rss.append(peak)
        assert summary["rows_scored"] == args.rows, summary
        print(
            f"  repeat {i + 1}: floor {floors[-1]:.2f} s ({floor_cpu[-1]:.2f} CPU s), "
            f"end to end {wall:.2f} s ({cpu:.2f} CPU s), {os.getloadavg()[0]:.1f} load"
        )
    floor, e2e = statistics.median(floors), statistics.median(walls)
    print(f"floor (predict_proba, {args.rows:,} rows in memory): median {floor:.2f} s")
    print(f"end to end (stroke score --cohort-date):            median {e2e:.2f} s")
    print(f"ratio end to end / floor: {e2e / floor:.2f}x (target < 1.0)")
    cpu_floor, cpu_e2e = statistics.median(floor_cpu), statistics.median(cpus)
    print(
        f"CPU seconds (user + system, all threads): floor {cpu_floor:.2f}, end to end "
        f"{cpu_e2e:.2f}, ratio {cpu_e2e / cpu_floor:.2f}x (less sensitive to a shared machine)"
    )
    print(f"throughput: {args.rows / e2e:,.0f} rows/s end to end")
    print(f"peak RSS at {args.rows:,} rows: {max(rss):.0f} MB")

    # the engine alone, on the same rows in memory
    engine = ForestEngine.compile(model.pipeline)
    if engine is None:
        print("the champion's pipeline does not compile: no engine figures")
    else:
        table = pa.Table.from_pandas(rows, preserve_index=False)
        columns = {c: table[c] for c in FEATURES}
        engine.predict_columns(columns)  # the kernel is loaded
        bare = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            engine.predict_columns(columns)
            bare.append(time.perf_counter() - t)
        x = engine.transform_columns(columns)
        visits = node_visits(model.pipeline.named_steps["model"], x)
        steps = len(x) * int(engine.depths.sum())
        seconds = statistics.median(bare)
        print(
            f"engine bare predict ({args.rows:,} Arrow rows -> p): median {seconds:.2f} s, "
            f"{args.rows / seconds:,.0f} rows/s, {visits / seconds / 1e6:,.0f} M node visits/s "
            f"({visits / len(x):.0f} visits a row; the kernel walks {steps / len(x):.0f} steps "
            f"a row, {steps / seconds / 1e6:,.0f} M steps/s)"
        )
        del x

    # parity: what stroke score writes for every row against the floor's predict_proba
    out = tmp / "parity.csv"
    run_score(cohort, "--output", str(out))
    written = pacsv.read_csv(
        out, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )
    by_id = dict(
        zip(written["id"].to_pylist(), written["stroke_probability"].to_pylist(), strict=True)
    )
    n = min(args.parity_rows, len(ids))
    worst, found = gap(ids[:n], reference[:n], by_id)
    print(f"parity: max |written - predict_proba| = {worst:.1e} over {found:,} rows (<= 1e-12)")
    del by_id, written, rows, reference

    if args.big_rows:
        t = time.perf_counter()
        big = tmp / "big.csv"
        write_big(big, args.big_rows, args.rows, tmp)
        print(f"{args.big_rows:,} patients written in {time.perf_counter() - t:.1f} s")
        day = "2026-01-03"
        wall, peak, summary, cpu = run_score(big, "--cohort-date", day)
        assert summary["rows_scored"] == args.big_rows, summary
        print(
            f"{args.big_rows:,} rows end to end: {wall:.2f} s ({args.big_rows / wall:,.0f} rows/s),"
            f" {cpu:.1f} CPU s, peak RSS {peak:.0f} MB ({peak / max(rss):.2f}x the "
            f"{args.rows:,}-row peak)"
        )
        # the same file to a CSV only: the scoring path's memory without the warehouse write
        wall, peak_csv, summary, cpu = run_score(big, "--output", str(tmp / "big-scores.csv"))
        (tmp / "big-scores.csv").unlink()
        print(
            f"{args.big_rows:,} rows to --output only (no warehouse day): {wall:.2f} s, "
            f"{cpu:.1f} CPU s, peak RSS {peak_csv:.0f} MB ({peak_csv / max(rss):.2f}x the "
            f"{args.rows:,}-row --cohort-date peak)"
        )
        first = simulate_patients(min(args.rows, args.big_rows), seed=10, with_label=False)
        expected = model.pipeline.predict_proba(first[list(FEATURES)])[:, 1]
        stored = warehouse.query_df(
            "SELECT patient_id, stroke_probability FROM scores "
            "WHERE cohort_date = CAST(? AS DATE) AND CAST(patient_id AS BIGINT) <= ?",
            [day, len(first)],
            settings=load_settings(),
        )
        by_id = dict(zip(stored["patient_id"], stored["stroke_probability"], strict=True))
        worst, found = gap(first[ID].astype(str).to_numpy(), expected, by_id)
        print(
            f"parity at {args.big_rows:,} rows: max |stored - predict_proba| = {worst:.1e} "
            f"over the first {found:,} patients"
        )
    print(f"(work files in {tmp})")


if __name__ == "__main__":
    main()
