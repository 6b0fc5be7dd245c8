"""The warehouse: one Delta table per DDL table, read through DuckDB (and any Delta engine).

Real processes throughout: writers killed with SIGKILL between two commits, two writers of one
day, a reader that queries while days are written, a Dagster run on the multiprocess executor,
warehouses written by the layouts of earlier versions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob
from deltalake import DeltaTable

from stroke_dagster.core.settings import load_settings
from stroke_dagster.warehouse import migrate as warehouse_migrate
from stroke_dagster.warehouse import store as warehouse
from stroke_dagster.warehouse.store import Provenance, Warehouse, WarehouseConfig

DAY = "2026-01-05"
SCORES = "score_history"


def scores_frame(n: int, prob: float = 0.1, prefix: str = "p", version: str = "1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"{prefix}{i}" for i in range(n)],
            "stroke_probability": [prob] * n,
            "risk_tier": ["low"] * n,
            "model_name": ["StrokeRF"] * n,
            "model_version": [version] * n,
            "scored_at": [pd.Timestamp("2026-01-06T02:00:00Z")] * n,
        }
    )


def quarantine_frame(n: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_number": list(range(1, n + 1)),
            "patient_id": ["q"] * n,
            "reason": ["bad"] * n,
            "record": ["{}"] * n,
        }
    )


def day_rows(day: str = DAY) -> pd.DataFrame:
    return warehouse.query_df(
        "SELECT * FROM scores WHERE cohort_date = ? ORDER BY patient_id",
        [dt.date.fromisoformat(day)],
        settings=load_settings(),
    )


def _spawn(home: Path, body: str, *args: str) -> subprocess.Popen:
    """A Python child process using the warehouse of ``home`` (a real second process)."""
    script = (
        "import sys, time\nfrom stroke_dagster.warehouse import store as warehouse\n"
        "from stroke_dagster.core.settings import load_settings\n" + textwrap.dedent(body)
    )
    env = {**os.environ, "STROKE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        stdin=subprocess.PIPE,
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


# -- tables and writes ---------------------------------------------------------------------------


def test_every_ddl_table_is_a_delta_table_and_a_write_is_one_commit_with_provenance(
    stroke_home: Path,
) -> None:
    wh = warehouse.of(load_settings())
    provenance = Provenance(run_id="run-1", input_file="incoming/x.csv", input_sha256="ab" * 32)
    warehouse.replace_partition(
        SCORES, DAY, scores_frame(5), provenance=provenance, settings=load_settings()
    )
    for table in wh.schema().tables:
        assert DeltaTable.is_deltatable(str(stroke_home / "warehouse" / table)), table
    history = wh.history(SCORES)
    assert history[0]["version"] == 1 and history[0]["operation"] == "WRITE"  # 0 = creation
    assert history[0]["operationParameters"]["predicate"].startswith(f"cohort_date = '{DAY}'")
    assert history[0]["stroke.run_id"] == "run-1"
    assert history[0]["stroke.input_sha256"] == "ab" * 32
    assert history[0]["stroke.write_id"] == provenance.write_id
    slice_ = warehouse.query_df(
        "SELECT DISTINCT slice_id, input_file, run_id, is_current FROM score_history",
        settings=load_settings(),
    )
    assert slice_.to_dict("records") == [
        {
            "slice_id": "v1:" + "ab" * 8,
            "input_file": "incoming/x.csv",
            "run_id": "run-1",
            "is_current": True,
        }
    ]


def test_replace_partition_rewrites_only_its_day_without_duplicates(stroke_home: Path) -> None:
    wh = warehouse.of(load_settings())
    warehouse.replace_partition(SCORES, DAY, scores_frame(5, 0.1), settings=load_settings())
    warehouse.replace_partition(SCORES, "2026-01-06", scores_frame(3), settings=load_settings())
    other_day = {a for a in wh.table(SCORES).file_uris() if "2026-01-06" in a}
    warehouse.replace_partition(SCORES, DAY, scores_frame(4, 0.2), settings=load_settings())
    rows = day_rows()
    assert len(rows) == 4 and set(rows["stroke_probability"]) == {0.2}
    assert rows["patient_id"].is_unique
    assert {a for a in wh.table(SCORES).file_uris() if "2026-01-06" in a} == other_day
    assert len(day_rows("2026-01-06")) == 3


def test_replace_partition_reads_parquet_and_sets_constant_columns(
    stroke_home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "rows.parquet"
    scores_frame(3).drop(columns=["model_version"]).to_parquet(path)
    warehouse.replace_partition(
        SCORES, DAY, path, extra={"model_version": "7"}, settings=load_settings()
    )
    assert set(day_rows()["model_version"]) == {"7"}


def test_a_row_the_ddl_refuses_commits_nothing(stroke_home: Path) -> None:
    wh = warehouse.of(load_settings())
    warehouse.replace_partition(SCORES, DAY, scores_frame(5, 0.1), settings=load_settings())
    version = wh.table(SCORES).version()
    with pytest.raises(duckdb.ConstraintException):
        warehouse.replace_partition(SCORES, DAY, scores_frame(2, 1.5), settings=load_settings())
    with (
        pytest.raises(RuntimeError, match="boom"),
        warehouse.write_transaction(load_settings()) as batch,
    ):
        warehouse.replace_rows(batch, SCORES, DAY, scores_frame(3, 0.3))
        raise RuntimeError("boom")
    assert wh.table(SCORES).version() == version
    rows = day_rows()
    assert len(rows) == 5 and set(rows["stroke_probability"]) == {0.1}
    assert not list(wh.files.scratch.glob("stage-*"))  # staged files are removed


def test_write_quarantine_replaces_rows_of_the_same_source_and_day(stroke_home: Path) -> None:
    rows = pd.DataFrame(
        {
            "row_number": [3, 8],
            "patient_id": ["x", None],
            "reason": ["age out of range [0, 120]", "id is missing"],
            "record": ['{"id": "x"}', '{"id": null}'],
        }
    )
    warehouse.write_quarantine(rows, "cohort", DAY, settings=load_settings())
    warehouse.write_quarantine(rows, "cohort", DAY, settings=load_settings())
    warehouse.write_quarantine(rows.iloc[:1], "other's", DAY, settings=load_settings())
    warehouse.write_quarantine(rows.iloc[:1], "train:file.csv", None, settings=load_settings())
    warehouse.write_quarantine(rows.iloc[:1], "train:file.csv", None, settings=load_settings())
    got = warehouse.query_df(
        "SELECT source, cohort_date, row_number, patient_id, reason FROM quarantine "
        "ORDER BY source, row_number",
        settings=load_settings(),
    )
    assert list(got["source"]) == ["cohort", "cohort", "other's", "train:file.csv"]
    assert list(got["row_number"]) == [3, 8, 3, 3]
    assert str(got["cohort_date"].iloc[0])[:10] == DAY
    assert pd.isna(got["cohort_date"].iloc[3])


# -- the audit trail of scores ------------------------------------------------------------------


def test_a_rescore_under_a_new_model_keeps_the_old_slice(stroke_home: Path) -> None:
    settings = load_settings()
    first = Provenance(run_id="r1", input_file="incoming/a.csv", input_sha256="11" * 32)
    warehouse.replace_partition(
        SCORES, DAY, scores_frame(4, 0.1, version="1"), provenance=first, settings=settings
    )
    second = Provenance(run_id="r2", input_file="incoming/a.csv", input_sha256="11" * 32)
    warehouse.replace_partition(
        SCORES, DAY, scores_frame(4, 0.3, version="2"), provenance=second, settings=settings
    )
    # the same slice again (a retry of run r2) replaces itself: no duplicate
    warehouse.replace_partition(
        SCORES, DAY, scores_frame(4, 0.3, version="2"), provenance=second, settings=settings
    )
    current = day_rows()
    assert len(current) == 4 and set(current["model_version"]) == {"2"}
    history = warehouse.query_df(
        "SELECT model_version, is_current, run_id, input_sha256, count(*) AS n, "
        "min(stroke_probability) AS p FROM score_history GROUP BY ALL ORDER BY model_version",
        settings=settings,
    )
    assert history.to_dict("list") == {
        "model_version": ["1", "2"],
        "is_current": [False, True],
        "run_id": ["r1", "r2"],
        "input_sha256": ["11" * 32, "11" * 32],
        "n": [4, 4],
        "p": [0.1, 0.3],
    }
    # A rollback rescores under v1: v1's slice is current again, v2's is kept.
    warehouse.replace_partition(
        SCORES, DAY, scores_frame(4, 0.1, version="1"), provenance=first, settings=settings
    )
    again = warehouse.query_df(
        "SELECT model_version, is_current FROM score_history GROUP BY ALL ORDER BY 1",
        settings=settings,
    )
    assert again["is_current"].tolist() == [True, False]
    # The audit question: patient p2's score on DAY under each model, with file and run.
    audit = warehouse.query_df(
        "SELECT model_version, stroke_probability, input_file, run_id FROM score_history "
        "WHERE patient_id = 'p2' AND cohort_date = ? ORDER BY model_version",
        [dt.date.fromisoformat(DAY)],
        settings=settings,
    )
    assert audit.values.tolist() == [
        ["1", 0.1, "incoming/a.csv", "r1"],
        ["2", 0.3, "incoming/a.csv", "r2"],
    ]


def test_retention_deletes_expired_slices_and_vacuum_old_versions(stroke_home: Path) -> None:
    settings = load_settings()
    warehouse.replace_partition(SCORES, DAY, scores_frame(4, version="1"), settings=settings)
    warehouse.replace_partition(SCORES, DAY, scores_frame(4, version="2"), settings=settings)
    wh = Warehouse(stroke_home, WarehouseConfig(history_days=30, time_travel_days=0))
    # Within the history window nothing goes.
    kept = wh.maintain(now=dt.datetime(2026, 1, 20, tzinfo=dt.UTC))
    assert kept["slices_expired_rows"] == 0
    assert len(warehouse.query_df("SELECT * FROM score_history", settings=settings)) == 8
    # Past it, the non-current slice goes and the current one stays.
    done = wh.maintain(now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    assert done["slices_expired_rows"] == 4
    left = warehouse.query_df(
        "SELECT DISTINCT model_version, is_current FROM score_history", settings=settings
    )
    assert left.values.tolist() == [["2", True]]
    assert done["files_vacuumed"] >= 1  # with no time travel kept, removed files are deleted
    with pytest.raises(Exception):  # noqa: B017,PT011 - the old version's files are gone
        wh.table(SCORES, version=1).to_pyarrow_table()
    assert len(day_rows()) == 4
    # The default keeps a week of versions: time travel to the first write still works.
    warehouse.replace_partition(SCORES, "2026-01-07", scores_frame(2), settings=settings)
    before = warehouse.of(settings).table(SCORES).version()
    warehouse.replace_partition(SCORES, "2026-01-07", scores_frame(3), settings=settings)
    warehouse.of(settings).maintain()
    old = warehouse.of(settings).table(SCORES, version=before).to_pyarrow_table()
    assert pc_count(old, "2026-01-07") == 2


def pc_count(table: pa.Table, day: str) -> int:
    return sum(1 for d in table.column("cohort_date").to_pylist() if str(d) == day)


# -- crashes, races and readers ------------------------------------------------------------------

KILLED_BETWEEN_TABLES = f"""
import pandas as pd
from stroke_dagster.warehouse.store import Warehouse
commit = Warehouse.commit
calls = []
def slow_commit(self, staged, metadata=None):
    if calls:  # the second commit (the record): announce, then wait to be killed
        print("between", flush=True)
        time.sleep(120)
    calls.append(staged.table)
    return commit(self, staged, metadata)
Warehouse.commit = slow_commit
df = pd.DataFrame({{"patient_id": [f"new{{i}}" for i in range(50)], "stroke_probability": 0.5,
                   "risk_tier": "elevated", "model_name": "StrokeRF", "model_version": "2",
                   "scored_at": pd.Timestamp("2026-01-07T00:00:00Z")}})
q = pd.DataFrame({{"row_number": [1, 2], "patient_id": ["q", "r"], "reason": ["bad", "bad"],
                  "record": ["{{}}", "{{}}"]}})
with warehouse.write_transaction(load_settings()) as batch:
    warehouse.replace_quarantine_rows(batch, q, "cohort", "{DAY}")
    warehouse.replace_rows(batch, "score_history", "{DAY}", df)
"""


def test_a_writer_killed_between_tables_leaves_the_day_whole_and_is_told(
    stroke_home: Path,
) -> None:
    settings = load_settings()
    with warehouse.write_transaction(settings) as batch:
        warehouse.replace_quarantine_rows(batch, quarantine_frame(1), "cohort", DAY)
        warehouse.replace_rows(batch, SCORES, DAY, scores_frame(5, 0.1))
    child = _spawn(stroke_home, KILLED_BETWEEN_TABLES)
    try:
        _wait_for_line(child, "between")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    rows = day_rows()  # the record never committed: the day's scores are the previous, whole
    assert len(rows) == 5 and set(rows["model_version"]) == {"1"}
    quarantined = warehouse.query_df("SELECT count(*) AS n FROM quarantine", settings=settings)
    assert quarantined["n"].item() == 2  # the companion committed before the crash ...
    incomplete = warehouse.of(settings).incomplete_writes()  # ... and a reader can tell
    assert [(w["table"], w["record"]) for w in incomplete] == [("quarantine", SCORES)]
    # The retry writes the whole set again.
    with warehouse.write_transaction(settings) as batch:
        warehouse.replace_quarantine_rows(batch, quarantine_frame(2), "cohort", DAY)
        warehouse.replace_rows(batch, SCORES, DAY, scores_frame(6, version="2"))
    assert len(day_rows()) == 6
    assert warehouse.of(settings).incomplete_writes() == []


REWRITER = """
import pandas as pd
frames = [pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "stroke_probability": p,
                        "risk_tier": "low", "model_name": "StrokeRF", "model_version": "1",
                        "scored_at": pd.Timestamp("2026-01-06T02:00:00Z")})
          for n, p in ((300, 0.1), (700, 0.2))]
for k in range(int(sys.argv[1])):
    warehouse.replace_partition("score_history", sys.argv[2], frames[k % 2],
                                settings=load_settings())
print("done", flush=True)
"""


def test_two_writers_of_one_day_are_serialised_and_readers_see_it_whole(
    stroke_home: Path,
) -> None:
    """Two processes replace the same day 15 times each; Delta's conflict detection orders them
    and every read (a fresh snapshot each time) sees one version whole, never none."""
    settings = load_settings()
    warehouse.replace_partition(SCORES, DAY, scores_frame(300, 0.1), settings=settings)
    start = warehouse.of(settings).table(SCORES).version()
    writers = [_spawn(stroke_home, REWRITER, "15", DAY) for _ in range(2)]
    seen = set()
    try:
        while any(w.poll() is None for w in writers):
            con = warehouse.connect(settings)
            try:
                row = con.execute(
                    "SELECT count(*), count(DISTINCT patient_id), min(stroke_probability), "
                    "max(stroke_probability) FROM scores"
                ).fetchone()
            finally:
                con.close()
            assert row in {(300, 300, 0.1, 0.1), (700, 700, 0.2, 0.2)}
            seen.add(row[0])
        for w in writers:
            assert w.wait(timeout=180) == 0, w.stderr.read()
    finally:
        for w in writers:
            w.kill()
    history = warehouse.of(settings).history(SCORES)
    writes = [c for c in history if c["version"] > start and c["operation"] == "WRITE"]
    assert len(writes) == 30  # every write committed once: none lost, none doubled
    final = day_rows()
    assert len(final) in {300, 700} and final["patient_id"].is_unique
    assert 300 in seen


def test_a_reader_never_misses_a_day_while_days_are_written(stroke_home: Path) -> None:
    settings = load_settings()
    days = [f"2026-02-{d:02d}" for d in range(1, 9)]
    for day in days[:4]:
        warehouse.replace_partition(SCORES, day, scores_frame(50), settings=settings)
    errors: list[str] = []

    def write() -> None:
        try:
            for k in range(6):
                warehouse.replace_partition(
                    SCORES, days[k % 4], scores_frame(50, 0.2), settings=load_settings()
                )
                warehouse.replace_partition(
                    SCORES, days[4 + k % 4], scores_frame(50), settings=load_settings()
                )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    writer = threading.Thread(target=write)
    writer.start()
    present: set[str] = set()
    reads = 0
    while writer.is_alive() or reads < 3:
        got = warehouse.query_df(
            "SELECT strftime(cohort_date, '%Y-%m-%d') AS d, count(*) AS n FROM scores GROUP BY 1",
            settings=settings,
        )
        now = dict(zip(got["d"], got["n"], strict=True))
        assert present <= set(now), f"days vanished: {present - set(now)}"
        assert set(now.values()) == {50}  # every day whole
        present = set(now)
        reads += 1
    writer.join()
    assert errors == []
    assert present == set(days)


# -- a second engine -----------------------------------------------------------------------------


def test_polars_and_deltalake_read_the_same_tables(stroke_home: Path) -> None:
    import polars as pl

    settings = load_settings()
    warehouse.replace_partition(SCORES, DAY, scores_frame(4, version="1"), settings=settings)
    warehouse.replace_partition(SCORES, DAY, scores_frame(3, 0.4, version="2"), settings=settings)
    warehouse.write_quarantine(quarantine_frame(2), "cohort", DAY, settings=settings)
    uri = warehouse.of(settings).table_uri(SCORES)
    current = pl.read_delta(uri).filter(pl.col("is_current")).sort("patient_id")
    ours = day_rows()
    assert current["patient_id"].to_list() == ours["patient_id"].tolist()
    assert current["stroke_probability"].to_list() == ours["stroke_probability"].tolist()
    assert pl.read_delta(uri).height == 7  # both slices
    quarantine = DeltaTable(warehouse.of(settings).table_uri("quarantine")).to_pandas()
    assert sorted(quarantine["row_number"]) == [1, 2] and set(quarantine["source"]) == {"cohort"}


# -- a backfill on the multiprocess executor -----------------------------------------------------

BACKFILL_DAYS = [(dt.date(2026, 3, 1) + dt.timedelta(days=i)).isoformat() for i in range(14)]


def _write_day_op(day: str) -> dg.OpDefinition:
    @dg.op(name=f"write_{day.replace('-', '_')}")
    def write_day(context) -> None:  # noqa: ANN001 - Dagster reads the hint at run time
        home = Path(os.environ["STROKE_HOME"])
        wh = Warehouse(home)
        inside = home / "inside"
        inside.mkdir(exist_ok=True)
        n = 100 + int(day[-2:])
        frame = scores_frame(n, 0.1, prefix=f"{day}-")
        with warehouse.write_transaction(wh) as batch:
            warehouse.replace_quarantine_rows(batch, quarantine_frame(1), "cohort", day)
            warehouse.replace_rows(batch, SCORES, day, frame)
            # Parallelism made visible: hold the write open until another day's writer is also
            # inside one (a queue of one writer at a time would never get past this point).
            marker = inside / day
            marker.touch()
            deadline = time.monotonic() + 120
            while len(list(inside.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            overlapped = len(list(inside.iterdir())) >= 2
        context.log.info(f"{day}: overlapped={overlapped}")
        (home / f"overlap-{day}").write_text(str(overlapped))

    return write_day


def backfill_job() -> dg.JobDefinition:
    ops = [_write_day_op(day) for day in BACKFILL_DAYS]

    @dg.job(name="warehouse_backfill", executor_def=dg.multiprocess_executor)
    def job() -> None:
        for op in ops:
            op()

    return job


def test_a_14_day_backfill_writes_its_days_in_parallel(stroke_home: Path) -> None:
    run_config = {
        "execution": {
            "config": {
                "max_concurrent": 2,
                "start_method": {
                    "forkserver": {"preload_modules": ["stroke_dagster.warehouse.store", "pandas"]}
                },
            }
        }
    }
    warehouse.of(load_settings()).ensure()  # the tables exist before the writers race
    with dg.instance_for_test() as instance:
        # Loaded by file path in every step process (the tests folder is not a package).
        job = ReconstructableJob.for_file(__file__, "backfill_job")
        result = dg.execute_job(job, instance=instance, run_config=run_config)
        assert result.success
    overlapped = [(stroke_home / f"overlap-{day}").read_text() for day in BACKFILL_DAYS]
    assert overlapped.count("True") >= 2  # at least two days were being written at once
    counts = warehouse.query_df(
        "SELECT strftime(cohort_date, '%Y-%m-%d') AS day, count(*) AS n, "
        "count(DISTINCT patient_id) AS ids FROM scores GROUP BY 1 ORDER BY 1",
        settings=load_settings(),
    )
    assert list(counts["day"]) == BACKFILL_DAYS
    assert list(counts["n"]) == [100 + int(d[-2:]) for d in BACKFILL_DAYS]
    assert (counts["n"] == counts["ids"]).all()
    quarantined = warehouse.query_df(
        "SELECT count(*) AS n FROM quarantine", settings=load_settings()
    )["n"].item()
    assert quarantined == 14


# -- telemetry compaction ------------------------------------------------------------------------


def test_telemetry_is_compacted_per_day_without_losing_or_doubling_a_row(
    stroke_home: Path,
) -> None:
    from stroke_dagster.api.telemetry import TelemetryWriter
    from stroke_dagster.warehouse.telemetry import compact_telemetry, read_day

    writer = TelemetryWriter(stroke_home)
    days = [dt.date(2026, 1, d) for d in (1, 2, 3)]
    for day in days:
        for k in range(4):  # four flushes: four segments a day
            ts = dt.datetime(day.year, day.month, day.day, 10, k, tzinfo=dt.UTC)
            writer.record({"ts": ts, "request_id": f"{day}-{k}", "status_code": 200})
            writer.flush()
    wh = warehouse.of(load_settings())
    sql = "SELECT strftime(date, '%d') AS d, count(*) AS n FROM inference_log GROUP BY 1 ORDER BY 1"
    assert warehouse.query_df(sql, settings=load_settings())["n"].tolist() == [4, 4, 4]
    summary = compact_telemetry(wh.telemetry_dir, retention_days=1, today=dt.date(2026, 1, 3))
    assert summary["deleted"] == ["2026-01-01"] and summary["compacted"] == {"2026-01-02": 4}
    day2 = wh.telemetry_dir / "date=2026-01-02"
    # Within the grace period the merged segments stay beside the compacted file, uncounted.
    assert len(list(day2.glob("part-*.parquet"))) == 4
    assert len(list(day2.glob("compacted~*.parquet"))) == 1
    assert len(list((wh.telemetry_dir / "date=2026-01-03").glob("part-*.parquet"))) == 4
    got = warehouse.query_df(sql, settings=load_settings())
    assert got["d"].tolist() == ["02", "03"] and got["n"].tolist() == [4, 4]
    assert len(read_day(load_settings(), "2026-01-02")) == 4
    # A late flush for a compacted day is read beside it, then merged by the next compaction.
    writer.record({"ts": dt.datetime(2026, 1, 2, 23, tzinfo=dt.UTC), "request_id": "late"})
    writer.flush()
    assert warehouse.query_df(sql, settings=load_settings())["n"].tolist() == [5, 4]
    summary = compact_telemetry(wh.telemetry_dir, today=dt.date(2026, 1, 3), grace_seconds=0)
    assert summary["compacted"] == {"2026-01-02": 1}
    assert warehouse.query_df(sql, settings=load_settings())["n"].tolist() == [5, 4]
    assert [p.name.split("~")[0] for p in day2.iterdir()] == ["compacted"]  # one file a day
    assert len(read_day(load_settings(), "2026-01-02")) == 5


# -- migration from the layouts of earlier versions ---------------------------------------------


def _write_single_file_layout(home: Path) -> dict[str, int]:
    """A warehouse as the first versions wrote it: the DDL's tables inside warehouse.duckdb."""
    home.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    con.execute(
        "CREATE TABLE scores (patient_id VARCHAR NOT NULL, cohort_date DATE NOT NULL, "
        "stroke_probability DOUBLE NOT NULL, risk_tier VARCHAR NOT NULL, model_name VARCHAR "
        "NOT NULL, model_version VARCHAR NOT NULL, scored_at TIMESTAMPTZ NOT NULL)"
    )
    for _, sql in warehouse.ddl_statements(home):
        if "CREATE TABLE IF NOT EXISTS quarantine" in sql:
            con.execute(sql)
    con.execute(
        "INSERT INTO scores SELECT 'p' || i, DATE '2026-01-01' + (i % 3)::INTEGER, 0.01 * (i % 90),"
        " CASE WHEN i % 10 = 0 THEN 'high' ELSE 'low' END, 'StrokeRF', '1',"
        " TIMESTAMPTZ '2026-01-04 02:00:00+00' FROM range(1000) t(i)"
    )
    con.execute(
        "INSERT INTO quarantine VALUES ('cohort', DATE '2026-01-01', 4, 'x', 'bad', '{}', now()),"
        " ('cohort', DATE '2026-01-01', 5, NULL, 'worse', '{}', now()),"
        " ('train:a.csv', NULL, 7, 'y', 'bad', '{}', now()),"
        " ('train:b.csv', NULL, 2, 'z', 'bad', '{}', now())"
    )
    con.execute("CREATE TABLE api_test_load (x INTEGER)")  # not in the DDL: left in the backup
    con.execute("CHECKPOINT")
    con.close()
    (home / "warehouse.lock").touch()
    return {SCORES: 1000, "quarantine": 4}


def _write_parquet_days_layout(home: Path) -> dict[str, int]:
    """A warehouse as the previous version wrote it: versioned Parquet files per day."""
    base = home / "warehouse"
    stamp = pd.Timestamp("2026-01-04T02:00:00Z")

    def put(table: str, directory: str, name: str, frame: pd.DataFrame) -> None:
        path = base / table / directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)

    for day, n in (("2026-01-01", 30), ("2026-01-02", 20)):
        old = scores_frame(n + 5, 0.9, version="0")  # superseded by the newer version below
        put("scores", f"cohort_date={day}", "data~00000000000000000001.parquet", old)
        new = scores_frame(n, 0.05, version="1").assign(scored_at=stamp)
        put("scores", f"cohort_date={day}", "data~00000000000000000002.parquet", new)
    put("scores", "cohort_date=NULL", "_empty~00000000000000000000.parquet", scores_frame(0))
    q = quarantine_frame(3).assign(source="cohort", quarantined_at=stamp)
    put("quarantine", "cohort_date=2026-01-01", "source-abc~00000000000000000001.parquet", q)
    t = quarantine_frame(1).assign(source="train:x.csv", quarantined_at=stamp)
    put("quarantine", "cohort_date=NULL", "source-def~00000000000000000001.parquet", t)
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # its file of views
        con.execute("CREATE TABLE warehouse_meta (key VARCHAR, value VARCHAR)")
    return {SCORES: 50, "quarantine": 4}


def _counts() -> dict[str, int]:
    return {
        t: int(
            warehouse.query_df(f"SELECT count(*) AS n FROM {t}", settings=load_settings())["n"][0]
        )
        for t in (SCORES, "quarantine")
    }


def test_stroke_warehouse_migrate_converts_a_single_file_warehouse(stroke_home: Path) -> None:
    counts = _write_single_file_layout(stroke_home)
    with duckdb.connect(str(stroke_home / "warehouse.duckdb"), read_only=True) as con:
        before = con.execute("SELECT * FROM scores ORDER BY patient_id").df()
    command = [sys.executable, "-m", "stroke_dagster.cli", "warehouse", "migrate"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rows"] == counts and summary["verified"] is True
    assert summary["skipped_tables"] == ["api_test_load"]
    assert summary["days"] == 3 + 3  # 3 days of scores; 3 (day, source) of quarantine
    assert (stroke_home / "warehouse.v1.duckdb").exists()
    assert not (stroke_home / "warehouse.duckdb").exists()
    assert not (stroke_home / "warehouse.lock").exists()
    after = warehouse.query_df("SELECT * FROM scores ORDER BY patient_id", settings=load_settings())
    pd.testing.assert_frame_equal(after[before.columns], before, check_dtype=False)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout.strip().splitlines()[-1])["rows"] == {}  # done once
    assert _counts() == counts


def test_the_first_access_migrates_parquet_days_and_a_failed_check_keeps_the_old_files(
    stroke_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _write_parquet_days_layout(stroke_home)
    old_files = sorted(p for p in (stroke_home / "warehouse").rglob("*~*.parquet"))

    def broken(*args: object) -> None:
        raise RuntimeError("checksum mismatch")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="checksum"):
        patch.setattr(warehouse_migrate, "_verify", broken)
        warehouse.query_df("SELECT 1", settings=load_settings())
    assert sorted((stroke_home / "warehouse").rglob("*~*.parquet")) == old_files  # kept
    assert _counts() == counts  # the next access migrates again, nothing doubled
    got = warehouse.query_df(
        "SELECT strftime(cohort_date, '%d') AS d, count(*) AS n, max(model_version) AS v, "
        "max(stroke_probability) AS p FROM scores GROUP BY 1 ORDER BY 1",
        settings=load_settings(),
    )
    assert got.values.tolist() == [["01", 30, "1", 0.05], ["02", 20, "1", 0.05]]
    assert not list((stroke_home / "warehouse").rglob("*~*.parquet"))  # the old files are gone
    assert not (stroke_home / "warehouse" / "scores").exists()
    assert not (stroke_home / "warehouse.duckdb").exists()
    quarantine = warehouse.query_df(
        "SELECT source, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY 1",
        settings=load_settings(),
    )
    assert quarantine.values.tolist() == [["cohort", 3], ["train:x.csv", 1]]
