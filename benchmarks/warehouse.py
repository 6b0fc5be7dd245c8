"""Warehouse write benchmark: is a day's write O(day), and what does the chosen layout cost?

For each candidate, one 1M-row day of ``scores`` is replaced (``--repeats`` times, median) on a
warehouse holding 1 day of history and on one holding ``--days`` (60) days of 1M rows:

* ``parquet`` (chosen): ``warehouse.replace_partition`` (check by the DDL in memory, write one
  immutable Parquet file, publish it by rename); no lock, readers unaffected;
* ``duckdb-file``: the previous layout, without its snapshot: one DuckDB file, the day deleted
  and re-inserted in one transaction (DuckDB admits a single writing process and no reader
  beside it);
* ``duckdb-file+snapshot``: the previous layout as it was: the same, then a checkpoint and a copy
  of the whole file for analysts.

It also times an analyst query (the daily risk-tier summary over all history) on the entry point
while a day is being replaced beside it, and the same query with no writer.

    .venv/bin/python benchmarks/warehouse.py [--rows 1000000] [--days 60] [--repeats 3]

Targets: ratio (60 days / 1 day) close to 1 for the chosen layout; a 1M-row day in seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stroke_dagster.warehouse import DDL_DIR, Warehouse  # noqa: E402
from stroke_dagster.warehouse_files import latest_files  # noqa: E402

START = dt.date(2026, 1, 1)
EXTRA = {"model_name": "StrokeRF", "model_version": "1"}


def day_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    probs = rng.beta(1, 20, rows)
    tiers = np.where(probs >= 0.2, "high", np.where(probs >= 0.05, "elevated", "low"))
    return pa.table(
        {
            "patient_id": pa.array([f"{seed:04d}{i:08d}" for i in range(rows)]),
            "stroke_probability": probs,
            "risk_tier": tiers,
        }
    )


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# -- candidates ----------------------------------------------------------------------------------


class ParquetDays:
    name = "parquet"

    def __init__(self, home: Path) -> None:
        self.wh = Warehouse(home)

    def write(self, day: dt.date, table: pa.Table) -> None:
        self.wh.replace_partition(
            "scores", day, table, {**EXTRA, "scored_at": dt.datetime.now(dt.UTC)}
        )

    def size(self) -> int:  # current versions only (replaced ones go after the grace period)
        days = (self.wh.data_dir / "scores").glob("*=*")
        return sum(p.stat().st_size for d in days for p in latest_files(d))


class DuckDBFile:
    name = "duckdb-file"

    def __init__(self, home: Path, snapshot: bool = False) -> None:
        self.path = home / "warehouse.duckdb"
        self.snapshot = snapshot
        if snapshot:
            self.name = "duckdb-file+snapshot"
        home.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(self.path)) as con:
            con.execute((DDL_DIR / "scores.sql").read_text())

    def write(self, day: dt.date, table: pa.Table) -> None:
        with duckdb.connect(str(self.path)) as con:
            con.register("incoming", table)
            con.execute("BEGIN")
            con.execute("DELETE FROM scores WHERE cohort_date = ?", [day])
            con.execute(
                "INSERT INTO scores BY NAME SELECT *, $d AS cohort_date, $n AS model_name, "
                "$v AS model_version, now() AS scored_at FROM incoming",
                {"d": day, "n": EXTRA["model_name"], "v": EXTRA["model_version"]},
            )
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
        if self.snapshot:
            tmp = self.path.with_name(".snapshot.tmp")
            shutil.copyfile(self.path, tmp)
            os.replace(tmp, self.path.with_name("warehouse_snapshot.duckdb"))

    def size(self) -> int:
        return self.path.stat().st_size


def fill(candidate, days: int, rows: int, tables: list[pa.Table]) -> None:  # noqa: ANN001
    """Write the history (the snapshot copy is left out while filling: only the timed write
    pays it, as the last write of a night would)."""
    snapshot = getattr(candidate, "snapshot", False)
    candidate.snapshot = False
    for i in range(days):
        candidate.write(START + dt.timedelta(days=i), tables[i % len(tables)])
    candidate.snapshot = snapshot
    os.sync()  # the timed writes should not pay for flushing the history's dirty pages


def replace_median(candidate, day: dt.date, table: pa.Table, repeats: int) -> float:  # noqa: ANN001
    return statistics.median(timed(lambda: candidate.write(day, table)) for _ in range(repeats))


ANALYST_QUERY = Path(__file__).resolve().parents[1] / "sql/queries/daily_risk_tier_summary.sql"


def analyst_beside_writer(
    parquet: ParquetDays, table: pa.Table, day: dt.date
) -> tuple[float, float]:
    """Median analyst query time alone, and while a day is being replaced beside it."""
    sql = ANALYST_QUERY.read_text()
    con = duckdb.connect(str(parquet.wh.ensure()), read_only=True)
    alone = statistics.median(timed(lambda: con.execute(sql).fetchall()) for _ in range(3))
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            parquet.write(day, table)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        beside = statistics.median(timed(lambda: con.execute(sql).fetchall()) for _ in range(3))
    finally:
        done.set()
        thread.join()
        con.close()
    return alone, beside


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: tmp)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="warehouse-bench-", dir=args.dir))
    print(f"rows/day {args.rows:,}, history 1 vs {args.days} days, median of {args.repeats}")
    tables = [day_table(args.rows, seed) for seed in range(3)]
    target_day = START  # replaced on every candidate; history days follow it
    replacement = day_table(args.rows, 99)
    results = {}
    try:
        for make in (ParquetDays, DuckDBFile, lambda h: DuckDBFile(h, snapshot=True)):
            row = {}
            for days in (1, args.days):
                home = scratch / f"{len(results)}-{days}"
                candidate = make(home)
                fill_s = timed(lambda: fill(candidate, days, args.rows, tables))  # noqa: B023
                row[days] = replace_median(candidate, target_day, replacement, args.repeats)
                row[f"size{days}"] = candidate.size()
                size_mb = row[f"size{days}"] / 1e6
                print(
                    f"  {candidate.name:22s} history {days:3d} d: replace 1 day "
                    f"{row[days]:6.2f} s (fill {fill_s:6.1f} s, {size_mb:8.1f} MB)",
                    flush=True,
                )
                if isinstance(candidate, ParquetDays) and days == args.days:
                    alone, beside = analyst_beside_writer(candidate, replacement, target_day)
                    row["analyst"] = (alone, beside)
                shutil.rmtree(home, ignore_errors=True)
            results[candidate.name] = row
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(f"| candidate | replace a {args.rows:,}-row day, 1 d history | {args.days} d | ratio |")
    print("| --- | --- | --- | --- |")
    for name, row in results.items():
        ratio = row[args.days] / row[1]
        print(f"| {name} | {row[1]:.2f} s | {row[args.days]:.2f} s | {ratio:.2f} |")
    chosen = results["parquet"]
    print()
    print(
        f"chosen (parquet): {args.rows:,}-row day {chosen[1]:.2f} s at 1 day, "
        f"{chosen[args.days]:.2f} s at {args.days} days: "
        f"ratio {chosen[args.days] / chosen[1]:.2f}; "
        f"{chosen[f'size{args.days}'] / args.days / 1e6:.1f} MB per day on disk"
    )
    alone, beside = chosen["analyst"]
    print(
        f"analyst query over {args.days} days ({args.days * args.rows / 1e6:.0f}M rows): "
        f"{alone:.2f} s alone, {beside:.2f} s while a day is replaced beside it (never blocked)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
