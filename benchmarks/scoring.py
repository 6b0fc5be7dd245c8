"""Cohort scoring end to end vs the bare ``predict_proba``, parity, and memory up to 10M rows.

    .venv/bin/python benchmarks/scoring.py [--rows 1000000] [--big-rows 10000000] [--repeats 3]
                                           [--trials N] [--parity-rows 1000000] [--no-recalibrated]

In a temporary STROKE_HOME: trains a champion with ``stroke train``'s settings (``--trials``
Optuna trials; trial 0 is the default forest, 300 trees of depth 8) on 5,110 simulated patients,
writes ``--rows`` simulated patients as CSV, then measures in one run, interleaved:

* end to end: ``stroke score --input F --cohort-date D`` as a subprocess (process start, model
  load, reading, validation, scoring, tiers and the warehouse write all included), on a scoring
  machine without the daily loop's Dagster instance (``DAGSTER_HOME`` an empty directory); and
  the same beside the instance the champion was trained in, where ``stroke score`` also imports
  Dagster, asks whether the loop manages the day and reports the day (printed apart: it is the
  command's coordination with the loop, not scoring, and the loop's own scoring never pays it);
* the floor: ``predict_proba`` of the same champion (``n_jobs=-1``) on the same rows, already
  typed in memory.

Prints medians, the ratio (target < 1.0), rows/s and the subprocess's peak RSS; then the
engine's bare predict time on the same rows in memory (Arrow columns in, probabilities out) and
its node visits per second (per row, the depth of the reached leaf summed over the trees);
parity: the probabilities ``stroke score --output`` wrote for every row against the floor's
(exact means <= 1e-12). With ``--big-rows`` (0 to skip) it writes a bigger CSV chunk by chunk
(never more than ``--rows`` patients in this process), scores it once, prints its peak RSS
against the ``--rows`` peak, and checks the warehouse's scores of the first chunk's patients.

Then a site-recalibrated champion (unless ``--no-recalibrated``): labelled site days (strokes kept
with probability 1/3, so the forest over-predicts) go through ``run_recalibration`` (fit, register,
gate; the champion alias is then moved to it if the gate did not), and the same ``--rows`` file is
scored end to end against the bare ``predict_proba`` of that recalibrated model (target < 1.0),
with its parity and its engine's bare predict.

Breakdown (plain and recalibrated champion): one more ``stroke score --cohort-date`` process with
timers around the stages (:data:`PROFILE`, the CLI's own code, wrapped at batch granularity): the
main thread's wall split into interpreter start, imports, the CLI around scoring, waiting for the
reader, the engine's preprocessing, forest walk and output map, tiers, waiting for the output
thread, the warehouse write, and the exit; then what overlaps it in other threads: reading and
validation, the output thread's writes (slice file, audit columns, CSV) and the model load.
Printed against the engine's bare predict (target: end to end <= 1.5x).
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
from engines import node_visits  # the sibling benchmark (this script's directory)

BIN = Path(sys.executable).parent


# A tiny launcher measures the child: the peak RSS that ``wait4`` reports for a child forked from
# this (large) benchmark process would include this process's memory.
LAUNCHER = """
import os, sys, time
t, at = time.perf_counter(), time.time()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
cpu, code = usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)
print(f"BENCH {time.perf_counter() - t} {usage.ru_maxrss} {code} {cpu} {at}")
"""

# ``stroke score`` (the CLI's main) with timers around its stages, per thread: "main" is the
# thread that scores, "background" the reader (prefetch), the model load and the numba load.
# Wrappers sit at batch granularity (a few dozen calls a run). The modules the CLI imports lazily
# are imported first, so their import time is measured apart.
PROFILE = r"""
import json, sys, threading, time
T0 = time.time()
import stroke_dagster.cli.loop as loop
import stroke_dagster.cli.score
import stroke_dagster.core.settings as settings_module
from stroke_dagster import cli
from stroke_dagster.model import engine
from stroke_dagster.model import store as model_store
from stroke_dagster.scoring import batch as scoring
T_IMPORTED = time.time()
TIMES, LOCK = {}, threading.Lock()

def add(stage, seconds):
    main = threading.current_thread() is threading.main_thread()
    key = ("main:" if main else "background:") + stage
    with LOCK:
        TIMES[key] = TIMES.get(key, 0.0) + seconds

def timed(stage, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(stage, time.perf_counter() - t)
    return wrapper

def timed_iter(stage, fn):
    def wrapper(*args, **kwargs):
        it = iter(fn(*args, **kwargs))
        try:
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    add(stage, time.perf_counter() - t)
                yield item
        finally:
            getattr(it, "close", lambda: None)()
    return wrapper

E = engine.ForestEngine
scoring.iter_patient_tables = timed_iter("read", scoring.iter_patient_tables)
scoring.validate_table = timed("validate", scoring.validate_table)
scoring.validate_patients = timed("validate (general path)", scoring.validate_patients)
scoring.prefetch = timed_iter("wait for read + validate", scoring.prefetch)
scoring.Background.result = timed("wait for the model / check", scoring.Background.result)
model_store.load_model = timed("model load", model_store.load_model)
settings_module.load_settings = timed("settings", settings_module.load_settings)
engine._kernel = timed("numba kernel load", engine._kernel)
scoring.predict_probabilities = timed("predict", scoring.predict_probabilities)
E.transform_columns = timed("preprocess", E.transform_columns)
E._walk_kernel = timed("forest walk", E._walk_kernel)
E._walk_numpy = timed("forest walk", E._walk_numpy)
E._finish = timed("output map", E._finish)
scoring.tier_index = timed("tiers", scoring.tier_index)
scoring._count_tiers = timed("tiers", scoring._count_tiers)
scoring._Outputs.write = timed("outputs (slice file, audit columns, CSV)", scoring._Outputs.write)
scoring.InOrder.put = timed("hand to the output thread", scoring.InOrder.put)
scoring.InOrder.join = timed("wait for the output thread", scoring.InOrder.join)
scoring._write_warehouse = timed("warehouse write", scoring._write_warehouse)
loop.refuse_managed_day = timed("managed-day check", loop.refuse_managed_day)
loop.report_scores = timed("report to Dagster", loop.report_scores)
scoring.score_file = timed("score_file", scoring.score_file)
T_CLI = time.time()
code = cli.main(sys.argv[1:])
T_END = time.time()
marks = {"t0": T0, "imported": T_IMPORTED, "cli": T_CLI, "end": T_END}
print("PROFILE " + json.dumps({"marks": marks, "times": TIMES}), flush=True)
cli.leave(code)  # as the `stroke` command leaves
"""


# Where ``stroke score`` looks for the daily loop's Dagster instance: by default an empty
# directory (a scoring machine without the loop's instance); the champion's own instance for the
# runs "beside the Dagster instance" (see the module docstring).
BARE_DAGSTER_HOME = Path(tempfile.mkdtemp(prefix="stroke-bench-no-dagster-"))


def run_score(
    path: Path, *extra: str, dagster: Path | None = None
) -> tuple[float, float, dict, float]:
    """Wall seconds, peak RSS (MB), the JSON summary and the CPU seconds (user + system) of one
    ``stroke score`` process (``dagster``: the Dagster instance it asks, else none)."""
    wall, rss, summary, cpu, _ = _launch([str(BIN / "stroke")], path, *extra, dagster=dagster)
    return wall, rss, summary, cpu


def _launch(
    program: list[str], path: Path, *extra: str, dagster: Path | None = None
) -> tuple[float, float, dict, float, dict]:
    """:func:`run_score` of ``program score --input path ...``, plus the launch time (``at``)
    and the ``PROFILE`` record when the program prints one."""
    command = [*program, "score", "--input", str(path), *extra]
    env = {**os.environ, "DAGSTER_HOME": str(dagster or BARE_DAGSTER_HOME)}
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *command], capture_output=True, text=True, env=env
    )
    lines = done.stdout.strip().splitlines()
    _, wall, rss_kb, code, cpu, at = lines[-1].split()
    if int(code) != 0:
        raise SystemExit(f"stroke score failed ({code}): {done.stderr.strip()}")
    profile = {"at": float(at)}
    summary: dict = {}
    for line in lines[:-1]:
        if line.startswith("PROFILE "):
            profile.update(json.loads(line.removeprefix("PROFILE ")))
        elif line.startswith("{"):
            summary = json.loads(line)
    return float(wall), int(rss_kb) / 1024, summary, float(cpu), profile


def breakdown(label: str, path: Path, day: str, e2e: float, bare: float) -> None:
    """Print where one profiled ``stroke score --cohort-date`` process spends its wall time,
    against the median end to end ``e2e`` and the engine's bare predict ``bare``."""
    wall, _, summary, _, profile = _launch(
        [sys.executable, "-c", PROFILE], path, "--cohort-date", day
    )
    marks, times = profile["marks"], profile["times"]

    def main(stage: str) -> float:
        return times.get(f"main:{stage}", 0.0)

    def background(stage: str) -> float:
        return times.get(f"background:{stage}", 0.0)

    predict = main("predict")
    engine_parts = main("preprocess") + main("forest walk") + main("output map")
    scoring_parts = {
        "waiting for the reader (read + validate)": main("wait for read + validate"),
        "waiting for the model load or the managed-day check": main("wait for the model / check"),
        "engine: preprocessing (columns -> float32 matrix)": main("preprocess"),
        "engine: forest walk (numba kernel)": main("forest walk"),
        "engine: output map (recalibration)": main("output map"),
        "predict: rest (column dict, checks, fallback)": predict - engine_parts,
        "tiers": main("tiers"),
        "handing batches to the output thread (its queue full)": main("hand to the output thread"),
        "waiting for the output thread's last batch": main("wait for the output thread"),
        "warehouse write (Delta commit)": main("warehouse write"),
    }
    scoring_parts["score_file: rest (output arrays, loop)"] = main("score_file") - sum(
        scoring_parts.values()
    )
    cli_total = marks["end"] - marks["cli"]
    parts = {
        "interpreter start": marks["t0"] - profile["at"],
        "imports (the CLI's modules, numpy, pyarrow, pandas)": marks["imported"] - marks["t0"],
        "managed-day check (imports dagster, opens the instance)": main("managed-day check"),
        "CLI: rest (arguments, settings, JSON out)": cli_total
        - main("score_file")
        - main("report to Dagster")
        - main("managed-day check"),
        **scoring_parts,
        "report to Dagster": main("report to Dagster"),
        "exit (flush, os._exit)": profile["at"] + wall - marks["end"],
    }
    rows = summary.get("rows_scored", 0)
    print(
        f"breakdown, {label} ({rows:,} rows, one profiled run: {wall:.2f} s wall; median end to "
        f"end {e2e:.2f} s = {e2e / bare:.2f}x the engine's bare predict {bare:.2f} s, target "
        f"<= 1.5x):"
    )
    for name, seconds in parts.items():
        if abs(seconds) >= 0.0005:
            print(f"    {name:<60} {seconds:7.2f} s  {seconds / wall:6.1%}")
    print(f"    {'sum (main thread)':<60} {sum(parts.values()):7.2f} s")
    print("  overlapped, in the reader, loader and check threads:")
    for stage in (
        "read",
        "validate",
        "outputs (slice file, audit columns, CSV)",
        "validate (general path)",
        "model load",
        "managed-day check",
        "forest walk",
        "numba kernel load",
    ):
        if background(stage):
            name = "model check (probe walk)" if stage == "forest walk" else stage
            print(f"    {name:<60} {background(stage):7.2f} s")
    engine_total = engine_parts
    print(
        f"  the engine inside the run: {engine_total:.2f} s ({engine_total / bare:.2f}x its bare "
        f"predict); everything else on the main thread: {wall - engine_total:.2f} s"
    )


def gap(ids: np.ndarray, probs: np.ndarray, by_id: dict[str, float]) -> tuple[float, int]:
    """``max |probs - written|`` over the ids found in ``by_id``, and how many were found."""
    written = np.array([by_id.get(i, np.nan) for i in ids], dtype=np.float64)
    found = ~np.isnan(written)
    if not found.any():
        return float("inf"), 0
    return float(np.max(np.abs(written[found] - probs[found]))), int(found.sum())


def write_big(path: Path, rows: int, chunk: int, work: Path) -> None:
    """``rows`` distinct simulated patients as one CSV, written ``chunk`` patients at a time."""
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    with open(path, "wb") as out:
        for k, start in enumerate(range(0, rows, chunk)):
            n = min(chunk, rows - start)
            part = simulate_patients(n, seed=10 + k, with_label=False, id_start=1 + start)
            write_patients(part, work / "part.csv")
            del part
            data = (work / "part.csv").read_bytes()
            out.write(data if k == 0 else data.split(b"\n", 1)[1])
    (work / "part.csv").unlink()


def end_to_end(
    label: str,
    cohort: Path,
    floor: Callable[[], np.ndarray],
    rows: int,
    repeats: int,
    day: str,
    dagster: Path,
) -> dict:
    """Interleaved repeats of ``floor()`` in memory, ``stroke score --cohort-date day`` on a
    scoring machine without the loop's Dagster instance, and the same beside the instance
    ``dagster`` (it then asks whether the loop manages the day and reports it); prints each
    repeat, the medians and their ratios; returns the figures and the last floor."""
    floors, walls, rss, floor_cpu, cpus, beside = [], [], [], [], [], []
    reference = np.empty(0)
    for i in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        reference = floor()
        floors.append(time.perf_counter() - t)
        floor_cpu.append(time.process_time() - c)
        wall, peak, summary, cpu = run_score(cohort, "--cohort-date", day)
        walls.append(wall)
        cpus.append(cpu)
        rss.append(peak)
        assert summary["rows_scored"] == rows, summary
        assert summary.get("engine_fallback_batches", 0) == 0, summary
        with_loop, _, summary, _ = run_score(cohort, "--cohort-date", day, dagster=dagster)
        assert summary["rows_scored"] == rows, summary
        beside.append(with_loop)
        print(
            f"  repeat {i + 1}: floor {floors[-1]:.2f} s ({floor_cpu[-1]:.2f} CPU s), "
            f"end to end {wall:.2f} s ({cpu:.2f} CPU s), beside the Dagster instance "
            f"{with_loop:.2f} s, {os.getloadavg()[0]:.1f} load"
        )
    floor_s, e2e, loop_s = (
        statistics.median(floors),
        statistics.median(walls),
        statistics.median(beside),
    )
    print(f"{label}floor (predict_proba, {rows:,} rows in memory): median {floor_s:.2f} s")
    print(f"{label}end to end (stroke score --cohort-date):            median {e2e:.2f} s")
    print(f"{label}ratio end to end / floor: {e2e / floor_s:.2f}x (target < 1.0)")
    print(
        f"{label}beside the loop's Dagster instance (imports Dagster, asks it about the day, "
        f"reports the day): median {loop_s:.2f} s, {loop_s / floor_s:.2f}x the floor "
        f"(+{loop_s - e2e:.2f} s)"
    )
    cpu_floor, cpu_e2e = statistics.median(floor_cpu), statistics.median(cpus)
    print(
        f"{label}CPU seconds (user + system, all threads): floor {cpu_floor:.2f}, end to end "
        f"{cpu_e2e:.2f}, ratio {cpu_e2e / cpu_floor:.2f}x (less sensitive to a shared machine)"
    )
    print(f"{label}throughput: {rows / e2e:,.0f} rows/s end to end")
    print(f"{label}peak RSS at {rows:,} rows: {max(rss):.0f} MB")
    return {"e2e": e2e, "floor": floor_s, "rss": max(rss), "reference": reference}


def engine_bare(label: str, pipeline: object, rows: object, repeats: int) -> float | None:
    """The engine alone on the same rows in memory (Arrow columns in, probabilities out):
    prints the median and the node visits per second; ``None`` when it does not compile."""
    import pyarrow as pa

    from stroke_dagster.core.schema import FEATURES
    from stroke_dagster.model.engine import ForestEngine

    engine = ForestEngine.compile(pipeline)
    if engine is None:
        print(f"{label}the champion's pipeline does not compile: no engine figures")
        return None
    table = pa.Table.from_pandas(rows, preserve_index=False)
    columns = {c: table[c] for c in FEATURES}
    engine.predict_columns(columns)  # the kernel is loaded
    bare = []
    for _ in range(repeats):
        t = time.perf_counter()
        engine.predict_columns(columns)
        bare.append(time.perf_counter() - t)
    x = engine.transform_columns(columns)
    forest = getattr(pipeline, "base", pipeline).named_steps["model"]
    visits = node_visits(forest, x)
    steps = len(x) * int(engine.depths.sum())
    seconds = statistics.median(bare)
    n = len(x)
    mapped = f" + its {len(engine.maps)} output map(s)" if engine.maps else ""
    print(
        f"{label}engine bare predict ({n:,} Arrow rows -> p{mapped}): median {seconds:.2f} s, "
        f"{n / seconds:,.0f} rows/s, {visits / seconds / 1e6:,.0f} M node visits/s "
        f"({visits / n:.0f} visits a row; the kernel walks {steps / n:.0f} steps "
        f"a row, {steps / seconds / 1e6:,.0f} M steps/s)"
    )
    return seconds


def written_parity(
    label: str, cohort: Path, ids: np.ndarray, reference: np.ndarray, n: int, out: Path
) -> None:
    """What ``stroke score --output`` writes for every row against ``reference``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    run_score(cohort, "--output", str(out))
    written = pacsv.read_csv(
        out, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )
    by_id = dict(
        zip(written["id"].to_pylist(), written["stroke_probability"].to_pylist(), strict=True)
    )
    n = min(n, len(ids))
    worst, found = gap(ids[:n], reference[:n], by_id)
    print(
        f"{label}parity: max |written - predict_proba| = {worst:.1e} over {found:,} rows (<= 1e-12)"
    )


def recalibrated_champion() -> str:
    """Register a site recalibration of the champion (``run_recalibration``, as ``stroke
    recalibrate`` does) and make it the champion; its version."""
    from stroke_dagster.clinical.recalibration import RecalibrationConfig
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.model import registry
    from stroke_dagster.model.recalibrate import run_recalibration
    from stroke_dagster.simulate.generator import simulate_patients

    settings = load_settings()
    site = simulate_patients(12_000, seed=77, id_start=50_000_001)
    keep = np.random.default_rng(78).random(len(site)) < 1 / 3  # a site with a third the strokes
    site = site[(site["stroke"] == 0) | keep].reset_index(drop=True)
    incoming, labels = Path(settings.incoming_dir), Path(settings.labels_dir)  # local home
    incoming.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    days = []
    for i, part in enumerate(np.array_split(site, 3)):
        day = f"2026-03-{i + 1:02d}"
        part.drop(columns=["stroke"]).to_csv(incoming / f"{day}.csv", index=False)
        part[["id", "stroke"]].to_csv(labels / f"{day}.csv", index=False)
        days.append(day)
    summary = run_recalibration(
        settings, days, RecalibrationConfig(slope_min_events=40), document=False
    )
    version = summary["version"]
    if version is None:
        raise SystemExit(f"recalibration registered nothing: {summary.get('reason')}")
    if summary["alias"] != registry.CHAMPION:
        registry.set_alias(
            version,
            registry.CHAMPION,
            "benchmark: the recalibrated version as champion",
            settings=settings,
        )
    print(
        f"recalibrated champion v{version} ({summary['method']}: intercept "
        f"{summary['intercept']:+.4f}, slope {summary['slope']:.4f}; gate: {summary['alias']}, "
        f"{summary['reason'][:120]}...)"
    )
    return str(version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="0 to skip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials of the champion")
    parser.add_argument("--parity-rows", type=int, default=1_000_000, help="rows compared")
    parser.add_argument(
        "--no-recalibrated", action="store_true", help="skip the recalibrated champion"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)

    tmp = Path(tempfile.mkdtemp(prefix="stroke-bench-scoring-"))
    os.environ["STROKE_HOME"] = str(tmp / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from stroke_dagster.core.schema import FEATURES, ID
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.defs.training_command import run_training
    from stroke_dagster.io.readers import read_patient_file
    from stroke_dagster.io.validation import validate_patients
    from stroke_dagster.model import registry
    from stroke_dagster.simulate.generator import simulate_patients, write_patients
    from stroke_dagster.warehouse import store as warehouse

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
    plain = end_to_end(
        "",
        cohort,
        lambda: model.pipeline.predict_proba(rows)[:, 1],
        args.rows,
        args.repeats,
        "2026-01-02",
        load_settings().dagster_home,
    )
    bare = engine_bare("", model.pipeline, rows, args.repeats)
    # parity: what stroke score writes for every row against the floor's predict_proba
    written_parity("", cohort, ids, plain["reference"], args.parity_rows, tmp / "parity.csv")
    if bare is not None:
        breakdown("plain champion", cohort, "2026-01-04", plain["e2e"], bare)
    del plain["reference"]

    if args.big_rows:
        t = time.perf_counter()
        big = tmp / "big.csv"
        write_big(big, args.big_rows, args.rows, tmp)
        print(f"{args.big_rows:,} patients written in {time.perf_counter() - t:.1f} s")
        day = "2026-01-03"
        try:
            wall, peak, summary, cpu = run_score(big, "--cohort-date", day)
        except SystemExit as exc:  # report it and go on with the other figures
            day = None
            lines = [line for line in str(exc).splitlines() if line.strip()]
            errors = [line for line in lines if "Error" in line or "Exception" in line]
            where = [line.strip() for line in lines if line.strip().startswith("File ")]
            print(
                f"{args.big_rows:,} rows end to end: FAILED: {(errors or lines)[-1][:300]}"
                + (f" ({where[-1][:200]})" if where else "")
            )
        else:
            assert summary["rows_scored"] == args.big_rows, summary
            print(
                f"{args.big_rows:,} rows end to end: {wall:.2f} s "
                f"({args.big_rows / wall:,.0f} rows/s), {cpu:.1f} CPU s, peak RSS {peak:.0f} MB "
                f"({peak / plain['rss']:.2f}x the {args.rows:,}-row peak)"
            )
        # the same file to a CSV only: the scoring path's memory without the warehouse write
        wall, peak_csv, summary, cpu = run_score(big, "--output", str(tmp / "big-scores.csv"))
        (tmp / "big-scores.csv").unlink()
        print(
            f"{args.big_rows:,} rows to --output only (no warehouse day): {wall:.2f} s, "
            f"{cpu:.1f} CPU s, peak RSS {peak_csv:.0f} MB ({peak_csv / plain['rss']:.2f}x the "
            f"{args.rows:,}-row --cohort-date peak)"
        )
        if day is not None:
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
            del first, expected, stored, by_id
        big.unlink()

    if not args.no_recalibrated:
        version = recalibrated_champion()
        recal = registry.load_model(registry.CHAMPION, settings=load_settings())
        assert recal.version == version, (recal.version, version)
        print(
            f"recalibrated champion v{recal.version} loads with {type(recal.pipeline).__name__}; "
            f"its cached engine: {recal.engine_status}"
            + (f" ({len(recal.engine.maps)} output map)" if recal.engine is not None else "")
        )
        cold_wall, _, _, _ = run_score(cohort, "--cohort-date", "2026-01-05")
        print(f"recalibrated: first run (fills the model cache): {cold_wall:.2f} s")
        label = "recalibrated: "
        mapped = end_to_end(
            label,
            cohort,
            lambda: recal.pipeline.predict_proba(rows)[:, 1],
            args.rows,
            args.repeats,
            "2026-01-06",
            load_settings().dagster_home,
        )
        recal_bare = engine_bare(label, recal.pipeline, rows, args.repeats)
        written_parity(
            label, cohort, ids, mapped["reference"], args.parity_rows, tmp / "parity-recal.csv"
        )
        if recal_bare is not None:
            breakdown("recalibrated champion", cohort, "2026-01-07", mapped["e2e"], recal_bare)
    print(f"(work files in {tmp})")


if __name__ == "__main__":
    main()
