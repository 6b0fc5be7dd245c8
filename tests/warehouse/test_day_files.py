"""A day's data file committed as it is (``warehouse.day_files``): what the table then holds,
slices demoted and replaced without rewriting the new rows, the fallback for files that mix
slices, refused rows, and writers of one new day racing (Delta's application transactions)."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from stroke_dagster.core.settings import load_settings
from stroke_dagster.warehouse import store as warehouse
from stroke_dagster.warehouse.store import Provenance, Warehouse

DAY = "2026-01-05"
SCORES = "score_history"
SCORED_AT = dt.datetime(2026, 1, 6, 2, tzinfo=dt.UTC)


def sid(version: str) -> str:
    """The slice id of :func:`day_file`'s slice of ``version``."""
    return f"v{version}:{version:0<16}"


def rows(n: int, prob: float = 0.1) -> pa.Table:
    return pa.table(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "stroke_probability": [prob] * n,
            "risk_tier": ["low"] * n,
        }
    )


def day_file(
    wh: Warehouse, tmp: Path, version: str, n: int = 50, prob: float = 0.1, **kwargs: object
) -> warehouse.StagedDay:
    """A staged data file of slice ``v<version>`` (two batches of rows)."""
    provenance = Provenance(model_version=version, input_sha256=f"{version:0<64}")
    constants = warehouse.score_slice_constants(
        provenance, model_name="StrokeRF", scored_at=SCORED_AT, **kwargs
    )
    path = tmp / f"slice-{version}-{n}-{threading.get_ident()}.parquet"
    writer = wh.day_writer(SCORES, path, constants)
    writer.write(rows(n // 2, prob))
    writer.write(rows(n, prob).slice(n // 2))
    writer.close()
    return wh.stage_day_file(SCORES, DAY, path, shadow=kwargs.get("role") == "shadow")


def commit(wh: Warehouse, staged: warehouse.StagedDay) -> None:
    with warehouse.write_transaction(wh) as batch:
        batch.add(staged)


def slices(wh: Warehouse) -> dict[str, tuple[int, bool]]:
    """``slice_id -> (rows, is_current)`` of the day (one flag per slice)."""
    got = wh.query_df(
        "SELECT slice_id, count(*) AS n, count(DISTINCT is_current) AS flags, "
        "bool_or(is_current) AS now FROM score_history WHERE cohort_date = ? GROUP BY 1",
        [dt.date.fromisoformat(DAY)],
    )
    assert set(got["flags"]) <= {1}
    return {r.slice_id: (int(r.n), bool(r.now)) for r in got.itertuples()}


def day_files_of(wh: Warehouse) -> list[str]:
    table = wh.table(SCORES)
    actions = pa.table(table.get_add_actions(flatten=True))
    days = actions.column(f"partition.{warehouse.PARTITION_COLUMN}").to_pylist()
    paths = actions.column("path").to_pylist()
    return [path for path, day in zip(paths, days, strict=True) if str(day) == DAY]


@pytest.fixture
def wh(stroke_home: Path) -> Warehouse:
    found = warehouse.of(load_settings())
    found.ensure()
    return found


def test_the_file_written_is_the_table_data_file(wh: Warehouse, tmp_path: Path) -> None:
    staged = day_file(wh, tmp_path, "1", n=40)
    digest = hashlib.sha256(staged.path.read_bytes()).hexdigest()
    commit(wh, staged)

    (name,) = day_files_of(wh)
    stored = wh.files.read_bytes(wh.data_dir / SCORES / name)
    assert hashlib.sha256(stored).hexdigest() == digest  # moved, not re-encoded
    assert not staged.path.exists()
    assert slices(wh) == {sid("1"): (40, True)}
    scores = wh.query_df("SELECT * FROM scores ORDER BY patient_id")
    assert set(scores["model_version"]) == {"1"} and set(scores["scored_at"]) == {SCORED_AT}
    # any Delta reader: the partition from the path, the statistics from the footer
    table = DeltaTable(wh.table_uri(SCORES)).to_pyarrow_table()
    assert table.num_rows == 40 and set(table.column("cohort_date").to_pylist()) == {
        dt.date.fromisoformat(DAY)
    }
    actions = pa.table(wh.table(SCORES).get_add_actions(flatten=True)).to_pylist()[0]
    assert actions["num_records"] == 40 and actions["min.slice_id"] == actions["max.slice_id"]


def test_a_new_slice_demotes_the_current_one_and_a_rerun_replaces_itself(
    wh: Warehouse, tmp_path: Path
) -> None:
    commit(wh, day_file(wh, tmp_path, "1", n=40))
    commit(wh, day_file(wh, tmp_path, "2", n=60, prob=0.2))
    commit(wh, day_file(wh, tmp_path, "2", n=60, prob=0.3))  # a rerun of v2's slice
    assert slices(wh) == {sid("1"): (40, False), sid("2"): (60, True)}
    assert set(wh.query_df("SELECT stroke_probability FROM scores")["stroke_probability"]) == {0.3}
    assert len(day_files_of(wh)) == 2  # one file per slice: the rerun removed its old file


def test_a_shadow_slice_keeps_the_current_one(wh: Warehouse, tmp_path: Path) -> None:
    commit(wh, day_file(wh, tmp_path, "1", n=40))
    commit(wh, day_file(wh, tmp_path, "2", n=40, role="shadow"))
    commit(wh, day_file(wh, tmp_path, "1", n=40, role="shadow"))  # already the current slice
    assert slices(wh) == {sid("1"): (40, True), sid("2"): (40, False)}


def test_a_day_whose_file_mixes_slices_is_rewritten(wh: Warehouse, tmp_path: Path) -> None:
    """Days written by whole-day rewrites (older versions, compaction) hold several slices in
    one file: the new slice then goes through the rewrite, with the same outcome."""
    for version in ("1", "2"):
        frame = (
            rows(30)
            .to_pandas()
            .assign(model_name="StrokeRF", model_version=version, scored_at=SCORED_AT)
        )
        warehouse.replace_partition(SCORES, DAY, frame, settings=wh)
    assert len(day_files_of(wh)) == 1  # v2 and the demoted v1 in one file
    commit(wh, day_file(wh, tmp_path, "3", n=20))
    got = slices(wh)
    assert sorted(got.values()) == [(20, True), (30, False), (30, False)]
    assert got[sid("3")] == (20, True)


def test_rows_the_ddl_refuses_are_never_committed(wh: Warehouse, tmp_path: Path) -> None:
    with pytest.raises(duckdb.ConstraintException, match="stroke_probability"):
        day_file(wh, tmp_path, "1", prob=1.5)
    assert slices(wh) == {} and day_files_of(wh) == []
    bad = tmp_path / "other.parquet"
    pa.parquet.write_table(rows(3), bad)
    with pytest.raises(ValueError, match="not a data file of score_history"):
        wh.stage_day_file(SCORES, DAY, bad)


def test_writers_of_a_new_day_racing_leave_one_current_slice(
    wh: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers read the (empty) day before either commits. Adding files conflicts with
    nothing, so only the day's application transaction stops the second commit; it is then
    planned again on the new version and demotes the first writer's slice."""
    staged = [day_file(wh, tmp_path, v, n=30) for v in ("1", "2")]
    both_read = threading.Barrier(2, timeout=60)
    plan = Warehouse._file_plan
    calls: dict[int, int] = {}

    def plan_then_wait(self: Warehouse, table: DeltaTable, day: warehouse.StagedDay) -> object:
        found = plan(self, table, day)
        me = threading.get_ident()
        calls[me] = calls.get(me, 0) + 1
        if calls[me] == 1:  # the plan a writer's first commit carries: both on the empty day
            both_read.wait()
        return found

    monkeypatch.setattr(Warehouse, "_file_plan", plan_then_wait)
    errors: list[BaseException] = []

    def write(item: warehouse.StagedDay) -> None:
        try:
            commit(warehouse.of(load_settings()), item)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(item,)) for item in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    got = slices(wh)
    assert sorted(got.values()) == [(30, False), (30, True)]  # both kept, exactly one current


def test_a_file_placed_by_a_writer_that_died_before_its_commit_is_vacuumed(
    wh: Warehouse, tmp_path: Path
) -> None:
    """A writer killed between moving its file into the table and committing it leaves a file
    no commit names: readers never see it, and maintenance deletes it once it is older than
    the time-travel window."""
    import os

    commit(wh, day_file(wh, tmp_path, "1", n=40))
    orphan_file = day_file(wh, tmp_path, "2", n=10)
    orphan = wh.data_dir / SCORES / f"{warehouse.PARTITION_COLUMN}={DAY}" / "part-orphan.parquet"
    wh.files.publish(orphan_file.path, orphan)
    assert slices(wh) == {sid("1"): (40, True)}
    old = (dt.datetime.now() - dt.timedelta(days=wh.config.time_travel_days + 1)).timestamp()
    os.utime(orphan, (old, old))
    wh.maintain()
    assert not Path(orphan).exists()
    assert slices(wh) == {sid("1"): (40, True)}
