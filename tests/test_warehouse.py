"""The DuckDB warehouse: schema from sql/ddl, one-transaction day replacement, locking, snapshot."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from stroke_dagster import warehouse

DAY = "2026-01-05"


def scores_frame(n: int, prob: float = 0.1, prefix: str = "p") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"{prefix}{i}" for i in range(n)],
            "stroke_probability": [prob] * n,
            "risk_tier": ["low"] * n,
            "model_name": ["StrokeRF"] * n,
            "model_version": ["1"] * n,
            "scored_at": [pd.Timestamp("2026-01-06T02:00:00Z")] * n,
        }
    )


def day_rows(day: str = DAY) -> pd.DataFrame:
    return warehouse.query_df(
        "SELECT * FROM scores WHERE cohort_date = ? ORDER BY patient_id",
        [dt.date.fromisoformat(day)],
    )


def _run_script(home: Path, body: str) -> subprocess.Popen:
    """A Python child process using the warehouse of ``home`` (a real second process)."""
    script = "import sys, time\nfrom stroke_dagster import warehouse\n" + textwrap.dedent(body)
    env = {**os.environ, "STROKE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen, expected: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read()}")
    raise AssertionError(f"child never printed {expected!r}")


def test_every_ddl_file_is_applied_with_stroke_home_substituted(stroke_home: Path) -> None:
    statements = warehouse.ddl_statements()
    names = {name for name, _ in statements}
    assert {"scores.sql", "quarantine.sql"} <= names
    assert all("{stroke_home}" not in sql for _, sql in statements)
    with warehouse.connect(read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        scores_cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
        quarantine_cols = {r[0] for r in con.execute("DESCRIBE quarantine").fetchall()}
    for _, sql in statements:
        for table in re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", sql, re.I):
            assert table in tables
    assert {
        "patient_id",
        "cohort_date",
        "stroke_probability",
        "risk_tier",
        "model_name",
        "model_version",
        "scored_at",
    } <= scores_cols
    assert {
        "source",
        "cohort_date",
        "row_number",
        "patient_id",
        "reason",
        "record",
        "quarantined_at",
    } <= quarantine_cols


def test_replace_partition_rewrites_the_day_without_duplicates(stroke_home: Path) -> None:
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1))
    warehouse.replace_partition("scores", "2026-01-06", scores_frame(3, 0.3))
    written = warehouse.replace_partition("scores", DAY, scores_frame(4, 0.2))
    assert written == 4
    rows = day_rows()
    assert len(rows) == 4 and set(rows["stroke_probability"]) == {0.2}
    assert len(day_rows("2026-01-06")) == 3  # other days untouched


def test_replace_partition_reads_parquet_and_sets_constant_columns(
    stroke_home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "day.parquet"
    scores_frame(6).drop(columns=["model_name", "model_version", "scored_at"]).to_parquet(path)
    extra = {"model_name": "StrokeRF", "model_version": "7", "scored_at": dt.datetime.now(dt.UTC)}
    warehouse.replace_partition("scores", DAY, path, extra=extra)
    rows = day_rows()
    assert len(rows) == 6 and set(rows["model_version"]) == {"7"}


def test_failure_inside_the_transaction_keeps_previous_rows(stroke_home: Path) -> None:
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1))
    bad = scores_frame(5, 0.2)
    bad.loc[4, "stroke_probability"] = 2.0  # violates the CHECK after the day was deleted
    with pytest.raises(duckdb.ConstraintException):
        warehouse.replace_partition("scores", DAY, bad)
    with pytest.raises(RuntimeError, match="boom"), warehouse.write_transaction() as con:
        warehouse.replace_rows(con, "scores", DAY, scores_frame(9, 0.9))
        raise RuntimeError("boom")
    rows = day_rows()
    assert len(rows) == 5 and set(rows["stroke_probability"]) == {0.1}


def test_killed_writer_leaves_previous_rows_and_releases_the_lock(stroke_home: Path) -> None:
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1))
    child = _run_script(
        stroke_home,
        f"""
        import pandas as pd
        df = pd.DataFrame({{"patient_id": [f"new{{i}}" for i in range(50_000)],
                           "stroke_probability": 0.5, "risk_tier": "elevated",
                           "model_name": "StrokeRF", "model_version": "2",
                           "scored_at": pd.Timestamp("2026-01-07T00:00:00Z")}})
        with warehouse.write_transaction() as con:
            warehouse.replace_rows(con, "scores", "{DAY}", df)
            print("mid-write", flush=True)
            time.sleep(120)
        """,
    )
    try:
        _wait_for_line(child, "mid-write")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    rows = day_rows()
    assert len(rows) == 5 and set(rows["model_version"]) == {"1"}
    warehouse.replace_partition("scores", DAY, scores_frame(2, 0.4))  # lock and file usable again
    assert len(day_rows()) == 2


def test_reader_waits_for_a_writer_instead_of_failing(stroke_home: Path) -> None:
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1))
    child = _run_script(
        stroke_home,
        f"""
        import pandas as pd
        df = pd.DataFrame({{"patient_id": ["a", "b"], "stroke_probability": 0.6,
                           "risk_tier": "high", "model_name": "StrokeRF", "model_version": "2",
                           "scored_at": pd.Timestamp("2026-01-07T00:00:00Z")}})
        with warehouse.write_transaction() as con:
            warehouse.replace_rows(con, "scores", "{DAY}", df)
            print("holding", flush=True)
            time.sleep(2.0)
        """,
    )
    try:
        _wait_for_line(child, "holding")
        # DuckDB itself refuses a second process while the writer holds the file ...
        with pytest.raises(duckdb.IOException, match="(?i)lock"):
            duckdb.connect(str(warehouse.warehouse_path()), read_only=True)
        # ... a reader with too short a patience gets a clear error ...
        with pytest.raises(warehouse.WarehouseBusyError):
            warehouse.query_df("SELECT 1", timeout=0.2)
        # ... and the normal reader waits and then sees the committed day.
        started = time.monotonic()
        rows = day_rows()
        waited = time.monotonic() - started
        assert child.wait(timeout=60) == 0, child.stderr.read()
    finally:
        child.kill()
    assert waited > 0.5
    assert list(rows["patient_id"]) == ["a", "b"]


def test_snapshot_is_published_and_readable_while_a_writer_holds_the_live_file(
    stroke_home: Path,
) -> None:
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1))
    snapshot = warehouse.snapshot_path()
    assert snapshot.name == "warehouse_snapshot.duckdb"
    child = _run_script(
        stroke_home,
        """
        with warehouse.connect() as con:
            print("holding", flush=True)
            time.sleep(3)
        """,
    )
    try:
        _wait_for_line(child, "holding")
        with duckdb.connect(str(snapshot), read_only=True) as con:
            count = con.execute("SELECT count(*) FROM scores").fetchone()[0]
        assert child.poll() is None  # the writer was still holding the live file
    finally:
        child.kill()
    assert count == 5


def test_write_quarantine_replaces_rows_of_the_same_source_and_day(stroke_home: Path) -> None:
    rows = pd.DataFrame(
        {
            "row_number": [3, 8],
            "patient_id": ["x", None],
            "reason": ["age out of range [0, 120]", "id is missing"],
            "record": ['{"id": "x"}', '{"id": null}'],
        }
    )
    warehouse.write_quarantine(rows, "cohort", DAY)
    warehouse.write_quarantine(rows, "cohort", DAY)
    warehouse.write_quarantine(rows.iloc[:1], "train:file.csv", None)
    warehouse.write_quarantine(rows.iloc[:1], "train:file.csv", None)
    got = warehouse.query_df(
        "SELECT source, cohort_date, row_number, patient_id, reason FROM quarantine "
        "ORDER BY source, row_number"
    )
    assert list(got["source"]) == ["cohort", "cohort", "train:file.csv"]
    assert list(got["row_number"]) == [3, 8, 3]
    assert got["cohort_date"].iloc[0] == pd.Timestamp(DAY) or str(got["cohort_date"].iloc[0]) == DAY
    assert pd.isna(got["cohort_date"].iloc[2])
