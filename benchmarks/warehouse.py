"""Warehouse benchmark: the Delta Lake warehouse against the previous Parquet-days layout.

    .venv/bin/python benchmarks/warehouse.py [--rows 1000000] [--days 60] [--repeats 3]

Both layouts are written through their own ``replace_partition`` with the same day tables
(``--rows`` patients, the same ids every day, in a different order each day) and measured in one
run, interleaved, median of ``--repeats``:

1. replacing one day of scores on a warehouse holding 1 day and on one holding ``--days`` days of
   history (taking turns), and the ratio of the two. Target: O(day), the ratio within 1.2;
2. the daily risk-tier summary over all history (``sql/queries/daily_risk_tier_summary.sql``).
   Target: Delta faster than the previous layout (which measured 14 s at 60 x 1M rows);
3. one patient's history over all days (``SELECT * FROM scores WHERE patient_id = ?``);

plus the time to open a connection (Delta: ``Warehouse.connect`` loads every table's snapshot),
the time of each write step (stage / commit or publish), and a diagnostic: the same Delta files
read as Arrow datasets (``DeltaTable.to_pyarrow_dataset``, the read path not chosen) instead of
DuckDB's own Parquet reader. The queries run on fresh
connections before the timed replacements of the big warehouse (the previous layout keeps a
replaced day's old file for an hour, which its queries would scan too).

The previous layout (``stroke_dagster/warehouse/store.py``, ``warehouse_files.py``,
``warehouse_migrate.py`` and ``sql/ddl`` of commit f1a1d60) is extracted from git into a
temporary package at run time; without git only Delta is measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stroke_dagster.warehouse import store as delta_warehouse  # noqa: E402

LEGACY_COMMIT = "f1a1d60"
LEGACY_MODULES = ("warehouse", "warehouse_files", "warehouse_migrate")
START = dt.date(2026, 1, 1)
ANALYST_SQL = (ROOT / "sql/queries/daily_risk_tier_summary.sql").read_text()
LOOKUP_SQL = "SELECT * FROM scores WHERE patient_id = ?"
TIERS = pa.array(["low", "elevated", "high"])

# Time spent in each step of a write (stage / commit or publish), by layout, of the last write.
steps: dict[str, dict[str, float]] = defaultdict(dict)


def clock() -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this process (all its threads: DuckDB's, delta-rs's)."""
    return time.perf_counter(), time.process_time()


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``."""
    wall, cpu = clock()
    fn()
    wall_end, cpu_end = clock()
    return wall_end - wall, cpu_end - cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- data ------------------------------------------------------------------------------------------


def patient_ids(rows: int) -> pa.Array:
    return pa.array([f"P{i:08d}" for i in range(rows)])


def day_table(ids: pa.Array, seed: int) -> pa.Table:
    """A day of scores of every patient, in a random order (as an input file would list them)."""
    rng = np.random.default_rng(seed)
    probs = rng.beta(1, 20, len(ids))
    tier = np.where(probs >= 0.2, 2, np.where(probs >= 0.05, 1, 0)).astype(np.int8)
    order = rng.permutation(len(ids))
    return pa.table(
        {
            "patient_id": ids.take(pa.array(order)),
            "stroke_probability": probs[order],
            "risk_tier": TIERS.take(pa.array(tier[order])),
        }
    )


def extra() -> dict[str, object]:
    return {"model_name": "StrokeRF", "model_version": "1", "scored_at": dt.datetime.now(dt.UTC)}


# -- the previous layout, from git -----------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def extract_legacy(dest: Path) -> tuple[ModuleType, Path]:
    """The previous layout's ``warehouse`` module (a package ``legacy_warehouse`` in ``dest``,
    its imports of its sibling modules rewritten) and its ``sql/ddl`` directory.

    It runs unpatched on the current tree: what it imports besides its siblings
    (``stroke_dagster.core.settings.SQL_DIR``, ``stroke_dagster.core.storage``,
    ``stroke_dagster.warehouse.telemetry.ensure_placeholders``) still exists with the same
    signatures.
    """
    package = dest / "legacy_warehouse"
    ddl_dir = package / "ddl"
    ddl_dir.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in LEGACY_MODULES:
        text = git("show", f"{LEGACY_COMMIT}:stroke_dagster/{name}.py")
        text = re.sub(r"\bstroke_dagster\.(warehouse\w*)", r"legacy_warehouse.\1", text)
        text = re.sub(
            r"\bfrom stroke_dagster import (warehouse\w*)", r"from legacy_warehouse import \1", text
        )
        # what it imports of the rest of the platform, at today's module paths
        text = re.sub(r"\bstroke_dagster\.(settings|storage)\b", r"stroke_dagster.core.\1", text)
        text = text.replace("stroke_dagster.api.telemetry", "stroke_dagster.warehouse.telemetry")
        (package / f"{name}.py").write_text(text)
    for name in git("ls-tree", "--name-only", f"{LEGACY_COMMIT}:sql/ddl").split():
        (ddl_dir / name).write_text(git("show", f"{LEGACY_COMMIT}:sql/ddl/{name}"))
    sys.path.insert(0, str(dest))
    return importlib.import_module("legacy_warehouse.warehouse"), ddl_dir


# -- the layouts -----------------------------------------------------------------------------------


class Layout:
    """One layout's warehouse in a home directory: a day write, a connection."""

    name: str
    table: str  # the table a day of scores is written to

    def __init__(self, home: Path) -> None:
        self.home = home
        self.wh: Any = None

    def write(self, day: dt.date, data: pa.Table) -> None:
        rows = self.wh.replace_partition(self.table, day, data, extra())
        assert rows == data.num_rows, (rows, data.num_rows)

    def connect(self) -> Any:
        return self.wh.connect()

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.home / "warehouse").rglob("*") if p.is_file())


def timed_steps(cls: type, layout: str, names: tuple[str, ...]) -> type:
    """A subclass of a ``Warehouse`` that records the time of each named method call."""

    def wrap(method_name: str) -> Callable:
        method = getattr(cls, method_name)

        def timed_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                steps[layout][method_name] = time.perf_counter() - started

        return timed_method

    return type(f"Timed{cls.__name__}", (cls,), {n: wrap(n) for n in names})


class DeltaLayout(Layout):
    name = "delta"
    table = delta_warehouse.SCORE_TABLE
    cls = timed_steps(delta_warehouse.Warehouse, "delta", ("stage", "commit"))

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.wh = self.cls(home)
        self.wh.ensure()


class LegacyLayout(Layout):
    name = "parquet-days"
    table = "scores"
    ddl_dir: Path
    cls: type

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.wh = self.cls(home, ddl_dir=self.ddl_dir)
        self.wh.ensure()

    @classmethod
    def setup(cls, module: ModuleType, ddl_dir: Path) -> None:
        cls.ddl_dir = ddl_dir
        cls.cls = timed_steps(module.Warehouse, cls.name, ("stage", "publish"))


# -- measurements ----------------------------------------------------------------------------------


def replace_medians(
    targets: list[tuple[str, Layout, dt.date]], data: pa.Table, repeats: int
) -> dict[str, tuple[float, float, dict[str, float]]]:
    """Per target (a name, a warehouse, the day replaced): median wall and CPU seconds of
    replacing the day by ``data``, and wall seconds of each write step. The targets take turns
    within each repeat, so that the shared machine's load weighs on all of them alike."""
    walls: dict[str, list[float]] = defaultdict(list)
    cpus: dict[str, list[float]] = defaultdict(list)
    parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(repeats):
        for key, layout, day in targets:
            wall, cpu = timed(lambda w=layout, d=day: w.write(d, data))
            walls[key].append(wall)
            cpus[key].append(cpu)
            for step, seconds in steps[layout.name].items():
                parts[key][step].append(seconds)
    return {
        key: (
            median(walls[key]),
            median(cpus[key]),
            {step: median(v) for step, v in parts[key].items()},
        )
        for key in walls
    }


def query_medians(layouts: list[Layout], days: int, patient: str, repeats: int) -> dict:
    """Per layout: median wall (and ``cpu ...``) seconds to open a connection, of the analyst
    query and of the point lookup on it (each on a fresh connection, as ``stroke sql`` does)."""
    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(repeats):
        for layout in layouts:
            for query, sql, params in (
                ("analyst", ANALYST_SQL, None),
                ("lookup", LOOKUP_SQL, [patient]),
            ):
                started = clock()
                con = layout.connect()
                opened = clock()
                try:
                    found = con.execute(sql, params).fetchall()
                finally:
                    con.close()
                done = clock()
                assert len(found) == days, (layout.name, query, len(found))
                for i, unit in enumerate(("", " cpu")):
                    times[layout.name]["open" + unit].append(opened[i] - started[i])
                    times[layout.name][query + unit].append(done[i] - opened[i])
                    times[layout.name][f"{query}+open{unit}"].append(done[i] - started[i])
    return {
        name: {key: median(values) for key, values in by_key.items()}
        for name, by_key in times.items()
    }


def delta_open_breakdown(layout: Layout, repeats: int) -> dict[str, float]:
    """Where a Delta connection's opening time goes: loading the score table's log, listing its
    files, and the other tables with the views."""
    from deltalake import DeltaTable

    uri = layout.wh.table_uri(delta_warehouse.SCORE_TABLE)
    load, dataset = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        table = DeltaTable(uri)
        loaded = time.perf_counter()
        files = table.file_uris()
        load.append(loaded - started)
        dataset.append(time.perf_counter() - loaded)
    return {"load": median(load), "dataset": median(dataset), "files": len(files)}


def delta_native_medians(layout: Layout, days: int, patient: str, repeats: int) -> dict:
    """Diagnostic, not the platform's read path: the same snapshot of ``score_history`` as an
    Arrow dataset (``DeltaTable.to_pyarrow_dataset``) under the same ``scores`` view, instead of
    DuckDB's own Parquet reader; and the files' row groups."""
    import duckdb
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    table = DeltaTable(layout.wh.table_uri(delta_warehouse.SCORE_TABLE))
    files = table.file_uris()
    times: dict[str, list[float]] = defaultdict(list)
    with duckdb.connect() as con:
        con.register(delta_warehouse.SCORE_TABLE, table.to_pyarrow_dataset())
        con.execute((delta_warehouse.DDL_DIR / "scores.sql").read_text())
        for _ in range(repeats):
            for query, sql, params in (
                ("analyst", ANALYST_SQL, None),
                ("lookup", LOOKUP_SQL, [patient]),
            ):
                started = time.perf_counter()
                found = con.execute(sql, params).fetchall()
                times[query].append(time.perf_counter() - started)
                assert len(found) == days, (query, len(found))
    result: dict[str, Any] = {query: median(values) for query, values in times.items()}
    metadata = pq.ParquetFile(files[0]).metadata
    result["row_groups"], result["file_rows"] = metadata.num_row_groups, metadata.num_rows
    return result


# -- the run ---------------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s"


def wall_cpu(wall: float, cpu: float) -> str:
    return f"{wall:.2f} s (cpu {cpu:.2f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="patients per day")
    parser.add_argument("--days", type=int, default=60, help="days of history")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: tmp)")
    args = parser.parse_args()

    import deltalake
    import duckdb

    load_start = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="warehouse-bench-", dir=args.dir))
    free_gb = shutil.disk_usage(scratch).free / 1e9
    print(
        f"warehouse benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: "
        f"{args.rows:,} rows/day, history 1 and {args.days} days, median of {args.repeats}"
    )
    print(
        f"duckdb {duckdb.__version__}, deltalake {deltalake.__version__}, "
        f"scratch {scratch} ({free_gb:.0f} GB free)"
    )
    kinds: list[type[Layout]] = [DeltaLayout]
    try:
        LegacyLayout.setup(*extract_legacy(scratch / "legacy"))
        kinds.insert(0, LegacyLayout)
        print(f"previous layout: Parquet days + DuckDB file of views, from git {LEGACY_COMMIT}")
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        print(f"NOTE: previous layout not measured (no git history of {LEGACY_COMMIT}): {detail}")

    ids = patient_ids(args.rows)
    patient = ids[args.rows // 2].as_py()
    replacement = day_table(ids, seed=10_000)
    try:
        small = [kind(scratch / f"{kind.name}-1") for kind in kinds]  # 1 day of history
        for layout in small:
            layout.write(START, day_table(ids, 0))
        # --days days of history, written through each layout's replace_partition
        big = [kind(scratch / f"{kind.name}-{args.days}") for kind in kinds]
        fill: dict[str, float] = defaultdict(float)
        started = time.perf_counter()
        for i in range(args.days):
            day, data = START + dt.timedelta(days=i), day_table(ids, i)
            for layout in big:
                fill[layout.name] += timed(lambda w=layout, d=day, t=data: w.write(d, t))[0]
            if i % 10 == 9:
                print(f"  filled {i + 1}/{args.days} days ({time.perf_counter() - started:.0f} s)")
        disk = {layout.name: layout.disk_bytes() for layout in big}
        # queries first: a replaced day of the previous layout leaves its superseded file beside
        # the new one for the grace period (an hour), which every query would also scan
        queries = query_medians(big, args.days, patient, args.repeats)
        delta = next(layout for layout in big if layout.name == DeltaLayout.name)
        breakdown = delta_open_breakdown(delta, args.repeats)
        native = delta_native_medians(delta, args.days, patient, args.repeats)
        # the last day of each history replaced, 1-day and N-day warehouses taking turns
        last_day = START + dt.timedelta(days=args.days - 1)
        targets: list[tuple[str, Layout, dt.date]] = []
        for one, many in zip(small, big, strict=True):
            targets += [(f"{one.name} 1", one, START), (f"{many.name} {args.days}", many, last_day)]
        replaced = replace_medians(targets, replacement, args.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    one_day = {kind.name: replaced[f"{kind.name} 1"] for kind in kinds}
    many_days = {kind.name: replaced[f"{kind.name} {args.days}"] for kind in kinds}
    load_end = os.getloadavg()

    names = [kind.name for kind in kinds]
    n = args.days

    def query(k: str, key: str) -> str:
        return wall_cpu(queries[k][key], queries[k][key + " cpu"])

    rows: list[tuple[str, list[str], str]] = [
        ("replace a day, 1 day of history", [wall_cpu(*one_day[k][:2]) for k in names], ""),
        (f"replace a day, {n} days of history", [wall_cpu(*many_days[k][:2]) for k in names], ""),
        (
            f"ratio {n} days / 1 day",
            [
                f"{many_days[k][0] / one_day[k][0]:.2f} (cpu {many_days[k][1] / one_day[k][1]:.2f})"
                for k in names
            ],
            "<= 1.2",
        ),
        (f"open a connection ({n} days)", [query(k, "open") for k in names], ""),
        ("daily risk-tier summary, query only", [query(k, "analyst") for k in names], ""),
        (
            "daily risk-tier summary, open + query",
            [query(k, "analyst+open") for k in names],
            "delta faster (old: 14 s)",
        ),
        (f"one patient's history ({n} rows), query only", [query(k, "lookup") for k in names], ""),
        (
            f"one patient's history ({n} rows), open + query",
            [query(k, "lookup+open") for k in names],
            "",
        ),
        (f"fill {n} days (replace_partition each)", [fmt(fill[k]) for k in names], ""),
        ("disk per day", [f"{disk[k] / n / 1e6:.1f} MB" for k in names], ""),
    ]
    print()
    header = f"{args.rows:,} rows/day, median of {args.repeats}, wall (cpu: all threads)"
    print(f"| {header} | " + " | ".join(names) + " | target |")
    print("| --- |" + " --- |" * len(names) + " --- |")
    for label, values, target in rows:
        print(f"| {label} | " + " | ".join(values) + f" | {target} |")

    print()
    for k in names:
        for label, result in (("1 day", one_day), (f"{n} days", many_days)):
            parts = ", ".join(f"{step} {fmt(s)}" for step, s in result[k][2].items())
            print(f"write steps (wall), {k}, {label}: {parts}")
    print(
        f"delta open {fmt(queries[DeltaLayout.name]['open'])}, of which score_history's log "
        f"{fmt(breakdown['load'])} and its file list ({breakdown['files']} files) "
        f"{fmt(breakdown['dataset'])}; the rest: the other tables, the views"
    )
    print(
        f"diagnostic, delta files ({native['row_groups']} row group(s) per file of "
        f"{native['file_rows']:,} rows) read as Arrow datasets instead of by DuckDB's own "
        f"Parquet reader: risk-tier summary {fmt(native['analyst'])}, one patient's history "
        f"{fmt(native['lookup'])} (query only)"
    )
    print(
        f"load average (1, 5, 15 min) at start {', '.join(f'{x:.1f}' for x in load_start)}, "
        f"at end {', '.join(f'{x:.1f}' for x in load_end)} ({os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
