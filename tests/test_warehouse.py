"""The warehouse: one Parquet file per table and day behind a DuckDB file of views.

Real processes throughout: analyst sessions, writers killed with SIGKILL, a Dagster run on the
multiprocess executor, a warehouse written in the single-file layout of earlier versions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob

from stroke_dagster import warehouse
from stroke_dagster.settings import load_settings
from stroke_dagster.warehouse import Warehouse

DAY = "2026-01-05"


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


def day_rows(day: str = DAY) -> pd.DataFrame:
    return warehouse.query_df(
        "SELECT * FROM scores WHERE cohort_date = ? ORDER BY patient_id",
        [dt.date.fromisoformat(day)],
        settings=load_settings(),
    )


def _spawn(home: Path, body: str, *args: str) -> subprocess.Popen:
    """A Python child process using the warehouse of ``home`` (a real second process)."""
    script = (
        "import sys, time\nfrom stroke_dagster import warehouse\n"
        "from stroke_dagster.settings import load_settings\n" + textwrap.dedent(body)
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


# -- layout and writes -------------------------------------------------------------------------


def test_entry_point_holds_only_views_over_one_file_per_table_and_day(stroke_home: Path) -> None:
    wh = warehouse.of(load_settings())
    warehouse.replace_partition("scores", DAY, scores_frame(5), settings=load_settings())
    schema = wh.schema()
    assert {"scores", "quarantine", "drift_metrics", "drift_summary"} <= set(schema.tables)
    with duckdb.connect(str(wh.entry_path), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        scores_cols = [r[0] for r in con.execute("DESCRIBE scores").fetchall()]
    assert tables == {warehouse.META_TABLE}  # no rows live in the entry point
    assert set(schema.tables) | {"inference_log"} <= views
    assert scores_cols[:3] == ["patient_id", "cohort_date", "stroke_probability"]
    files = [p.relative_to(wh.data_dir).as_posix() for p in wh.data_dir.rglob("*.parquet")]
    written = [f for f in files if "/_empty~" not in f]  # one empty placeholder per table
    assert len(written) == 1 and written[0].startswith(f"scores/cohort_date={DAY}/data~")
    assert len(files) - len(written) == len(schema.tables)


def test_replace_partition_rewrites_only_its_day_without_duplicates(stroke_home: Path) -> None:
    wh = warehouse.of(load_settings())
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1), settings=load_settings())
    warehouse.replace_partition(
        "scores", "2026-01-06", scores_frame(3, 0.3), settings=load_settings()
    )
    other = wh.current_file("scores", dt.date(2026, 1, 6))
    first = wh.current_file("scores", dt.date.fromisoformat(DAY))
    before = other.stat()
    entry_before = wh.entry_path.stat()
    written = warehouse.replace_partition(
        "scores", DAY, scores_frame(4, 0.2), settings=load_settings()
    )
    assert written == 4
    rows = day_rows()
    assert len(rows) == 4 and set(rows["stroke_probability"]) == {0.2}
    assert len(day_rows("2026-01-06")) == 3
    after = other.stat()  # the other day's file was not touched, nor the entry point
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert wh.entry_path.stat().st_ino == entry_before.st_ino
    # The superseded version stays for queries that listed it until the grace period is over.
    assert first.exists() and wh.current_file("scores", dt.date.fromisoformat(DAY)) != first
    assert Warehouse(stroke_home, warehouse.WarehouseConfig(grace_seconds=0)).vacuum() == 1
    assert not first.exists() and len(day_rows()) == 4


def test_replace_partition_reads_parquet_and_sets_constant_columns(
    stroke_home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "day.parquet"
    scores_frame(6).drop(columns=["model_name", "model_version", "scored_at"]).to_parquet(path)
    extra = {"model_name": "StrokeRF", "model_version": "7", "scored_at": dt.datetime.now(dt.UTC)}
    warehouse.replace_partition("scores", DAY, path, extra=extra, settings=load_settings())
    rows = day_rows()
    assert len(rows) == 6 and set(rows["model_version"]) == {"7"}


def test_failure_before_publication_keeps_previous_rows(stroke_home: Path) -> None:
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1), settings=load_settings())
    bad = scores_frame(5, 0.2)
    bad.loc[4, "stroke_probability"] = 2.0  # violates the table's CHECK
    with pytest.raises(duckdb.ConstraintException):
        warehouse.replace_partition("scores", DAY, bad, settings=load_settings())
    with (
        pytest.raises(RuntimeError, match="boom"),
        warehouse.write_transaction(settings=load_settings()) as batch,
    ):
        warehouse.replace_rows(batch, "scores", DAY, scores_frame(9, 0.9))
        raise RuntimeError("boom")
    rows = day_rows()
    assert len(rows) == 5 and set(rows["stroke_probability"]) == {0.1}
    assert not list(warehouse.of(load_settings()).data_dir.rglob("*.tmp"))


def test_killed_writer_leaves_the_previous_day(stroke_home: Path) -> None:
    warehouse.replace_partition("scores", DAY, scores_frame(5, 0.1), settings=load_settings())
    child = _spawn(
        stroke_home,
        f"""
        import pandas as pd
        df = pd.DataFrame({{"patient_id": [f"new{{i}}" for i in range(50_000)],
                           "stroke_probability": 0.5, "risk_tier": "elevated",
                           "model_name": "StrokeRF", "model_version": "2",
                           "scored_at": pd.Timestamp("2026-01-07T00:00:00Z")}})
        with warehouse.write_transaction(load_settings()) as batch:
            warehouse.replace_rows(batch, "scores", "{DAY}", df)
            warehouse.replace_quarantine_rows(batch, pd.DataFrame({{"row_number": [1],
                "patient_id": ["q"], "reason": ["bad"], "record": ["{{}}"]}}), "cohort", "{DAY}")
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
    day_dir = warehouse.of(load_settings()).partition_dir("scores", dt.date.fromisoformat(DAY))
    assert list(day_dir.glob(".*.tmp"))  # the dead writer's staged file was left behind ...
    rows = day_rows()  # ... invisible: the day is the previous one, whole
    assert len(rows) == 5 and set(rows["model_version"]) == {"1"}
    warehouse.replace_partition("scores", DAY, scores_frame(2, 0.4), settings=load_settings())
    assert len(day_rows()) == 2
    assert not list(day_dir.glob(".*.tmp"))  # the next write of the day removed it


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
    warehouse.write_quarantine(rows.iloc[:1], "other", DAY, settings=load_settings())
    warehouse.write_quarantine(rows.iloc[:1], "train:file.csv", None, settings=load_settings())
    warehouse.write_quarantine(rows.iloc[:1], "train:file.csv", None, settings=load_settings())
    got = warehouse.query_df(
        "SELECT source, cohort_date, row_number, patient_id, reason FROM quarantine "
        "ORDER BY source, row_number",
        settings=load_settings(),
    )
    assert list(got["source"]) == ["cohort", "cohort", "other", "train:file.csv"]
    assert list(got["row_number"]) == [3, 8, 3, 3]
    assert str(got["cohort_date"].iloc[0])[:10] == DAY
    assert pd.isna(got["cohort_date"].iloc[3])


# -- readers and writers at once -----------------------------------------------------------------

ANALYST = """
import duckdb, json
con = duckdb.connect(sys.argv[1], read_only=True)  # one session, held open throughout
print("open", flush=True)
for line in sys.stdin:
    rows = con.execute(line).fetchall()
    print(json.dumps(rows, default=str), flush=True)
"""


def _ask(analyst: subprocess.Popen, sql: str) -> list:
    analyst.stdin.write(sql.replace("\n", " ") + "\n")
    analyst.stdin.flush()
    line = analyst.stdout.readline()
    if not line:
        raise AssertionError(analyst.stderr.read())
    return json.loads(line)


def test_an_open_analyst_session_waits_for_nothing_and_sees_each_new_day_whole(
    champion_home: Path,
) -> None:
    """The pipeline scores, checks drift and records telemetry beside one open analyst session."""
    from stroke_dagster import registry, scoring
    from stroke_dagster.api.telemetry import TelemetryWriter
    from stroke_dagster.drift import DriftConfig
    from stroke_dagster.drift.daily import check_day
    from stroke_dagster.simulate import simulate_patients, write_patients

    settings = load_settings()
    entry = warehouse.of(settings).ensure()
    analyst = _spawn(champion_home, ANALYST, str(entry))
    try:
        _wait_for_line(analyst, "open")
        assert _ask(analyst, "SELECT count(*) FROM scores") == [[0]]
        model = registry.load_model("champion", settings=load_settings())
        config = DriftConfig(backend="scipy")
        telemetry = TelemetryWriter(champion_home)
        for i, day in enumerate(["2026-02-01", "2026-02-02"]):
            patients = simulate_patients(200 + i, seed=i, with_label=False)
            write_patients(patients, settings.incoming_dir / f"{day}.csv")
            cohort = scoring.current_cohort(settings, day)
            scoring.score_file(
                cohort.path,
                model,
                cohort_date=day,
                quarantine_source=None,
                settings=load_settings(),
            )
            got = _ask(
                analyst,
                f"SELECT count(*), count(DISTINCT patient_id) FROM scores "
                f"WHERE cohort_date = DATE '{day}'",
            )
            assert got == [[cohort.rows_valid, cohort.rows_valid]]  # the new day, whole
            result = check_day(day, config=config, settings=settings)
            got = _ask(analyst, f"SELECT count(*) FROM drift_metrics WHERE cohort_date = '{day}'")
            assert got == [[len(result.report.to_frame())]]
            got = _ask(analyst, f"SELECT n_cohort FROM drift_summary WHERE cohort_date = '{day}'")
            assert got == [[cohort.rows_valid]]
            ts = dt.datetime.fromisoformat(day).replace(hour=9, tzinfo=dt.UTC)
            for k in range(3):
                telemetry.record({"ts": ts, "request_id": f"{day}-{k}", "status_code": 200})
            telemetry.flush()
            got = _ask(analyst, f"SELECT count(*) FROM inference_log WHERE date = '{day}'")
            assert got == [[3]]
        assert analyst.poll() is None  # the same session all along
        got = _ask(analyst, "SELECT count(DISTINCT cohort_date) FROM scores")
        assert got == [[2]]
    finally:
        analyst.stdin.close()
        analyst.kill()


REWRITER = """
import pandas as pd
versions = [(n, p) for n, p in ((300, 0.1), (700, 0.2))]
frames = [pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "stroke_probability": p,
                        "risk_tier": "low", "model_name": "StrokeRF", "model_version": str(n),
                        "scored_at": pd.Timestamp("2026-01-06T02:00:00Z")}) for n, p in versions]
for k in range(int(sys.argv[1])):
    warehouse.replace_partition("scores", sys.argv[2], frames[k % 2], settings=load_settings())
print("done", flush=True)
"""


def test_readers_see_a_day_whole_while_two_writers_replace_it(stroke_home: Path) -> None:
    """Two processes replace the same day over and over; every read sees one version whole."""
    warehouse.replace_partition(
        "scores", DAY, scores_frame(300, 0.1, version="300"), settings=load_settings()
    )
    writers = [_spawn(stroke_home, REWRITER, "25", DAY) for _ in range(2)]
    seen = set()
    con = warehouse.connect(settings=load_settings())
    try:
        while any(w.poll() is None for w in writers):
            row = con.execute(
                "SELECT count(*), count(DISTINCT patient_id), min(stroke_probability), "
                "max(stroke_probability), min(model_version), max(model_version) FROM scores"
            ).fetchone()
            # A version published between the query's two listings hides the day from that query
            # (count 0); a mix of two versions never shows.
            assert row in {
                (0, 0, None, None, None, None),
                (300, 300, 0.1, 0.1, "300", "300"),
                (700, 700, 0.2, 0.2, "700", "700"),
            }
            seen.add(row[0])
    finally:
        con.close()
    for w in writers:
        assert w.wait(timeout=120) == 0, w.stderr.read()
    assert {300, 700} <= seen
    final = day_rows()  # the last writer won, whole
    assert len(final) in {300, 700} and final["model_version"].nunique() == 1


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
            warehouse.replace_rows(batch, "scores", day, frame)
            warehouse.replace_quarantine_rows(
                batch,
                pd.DataFrame(
                    {"row_number": [1], "patient_id": ["x"], "reason": ["bad"], "record": ["{}"]}
                ),
                "cohort",
                day,
            )
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
                    "forkserver": {"preload_modules": ["stroke_dagster.warehouse", "pandas"]}
                },
            }
        }
    }
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
    from stroke_dagster.api.telemetry import TelemetryWriter, compact_telemetry, read_day

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


# -- migration from the single-file layout -------------------------------------------------------


def _write_old_layout(home: Path) -> dict[str, int]:
    """A warehouse as earlier versions wrote it: the DDL's tables inside warehouse.duckdb."""
    home.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    for _, sql in warehouse.ddl_statements(home):
        if "CREATE TABLE" in sql:
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
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("scores", "quarantine")
    }
    con.execute("CHECKPOINT")
    con.close()
    (home / "warehouse_snapshot.duckdb").write_bytes((home / "warehouse.duckdb").read_bytes())
    (home / "warehouse.lock").touch()
    return counts


def _all_rows(db: Path, table: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        frame = con.execute(f"SELECT * FROM {table}").df()
    return frame.sort_values(list(frame.columns)[:4], ignore_index=True)


def test_stroke_warehouse_migrate_converts_an_old_warehouse_without_losing_a_row(
    stroke_home: Path,
) -> None:
    counts = _write_old_layout(stroke_home)
    before = {t: _all_rows(stroke_home / "warehouse.duckdb", t) for t in counts}
    command = [sys.executable, "-m", "stroke_dagster.cli", "warehouse", "migrate"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert {t: n for t, n in summary["rows"].items() if n} == counts
    assert summary["skipped_tables"] == ["api_test_load"]
    assert summary["partitions"] == 3 + 3  # 3 days of scores; 3 (day, source) of quarantine
    backup = stroke_home / "warehouse.v1.duckdb"
    assert summary["backup"] == str(backup) and backup.exists()
    assert not (stroke_home / "warehouse_snapshot.duckdb").exists()
    assert not (stroke_home / "warehouse.lock").exists()
    for table, frame in before.items():
        after = _all_rows(stroke_home / "warehouse.duckdb", table)
        pd.testing.assert_frame_equal(after[frame.columns], frame, check_dtype=False)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert json.loads(again.stdout.strip().splitlines()[-1])["rows"] == {}  # nothing left to do
    info = subprocess.run(command[:-1] + ["info"], capture_output=True, text=True, timeout=300)
    rows = json.loads(info.stdout.strip().splitlines()[-1])["rows"]
    assert {t: n for t, n in rows.items() if n} == counts


def test_the_first_access_migrates_automatically_and_keeps_newer_days(stroke_home: Path) -> None:
    counts = _write_old_layout(stroke_home)
    # A crash after the rename, with one day already written in the new layout by a newer run.
    os.rename(stroke_home / "warehouse.duckdb", stroke_home / "warehouse.migrating.duckdb")
    wh = Warehouse(stroke_home)
    staged = wh.stage("scores", dt.date(2026, 1, 2), scores_frame(7, version="9"))
    wh.publish(staged)
    got = warehouse.query_df(
        "SELECT strftime(cohort_date, '%d') AS d, count(*) AS n, max(model_version) AS v "
        "FROM scores GROUP BY 1 ORDER BY 1",
        settings=load_settings(),
    )
    assert got["d"].tolist() == ["01", "02", "03"]
    assert got["v"].tolist() == ["1", "9", "1"]  # the newer day was kept
    old = _all_rows(stroke_home / "warehouse.v1.duckdb", "scores")
    assert got["n"].tolist() == [
        int((old["cohort_date"].dt.day == 1).sum()),
        7,
        int((old["cohort_date"].dt.day == 3).sum()),
    ]
    assert (
        warehouse.query_df("SELECT count(*) AS n FROM quarantine", settings=load_settings())[
            "n"
        ].item()
        == counts["quarantine"]
    )
