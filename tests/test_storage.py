"""The platform's file storage, on the local disk and on an S3 API server (moto)."""

from __future__ import annotations

import time
from pathlib import Path

import _s3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _s3 import MotoS3

from stroke_dagster.settings import SettingsError, load_settings
from stroke_dagster.storage import RemotePath, Storage

moto_s3 = _s3.moto_s3  # fixtures: one moto S3 server per session, a fresh bucket per test
s3_bucket = _s3.s3_bucket


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage.local(tmp_path / "home")
    s3: MotoS3 = request.getfixturevalue("moto_s3")
    bucket = s3.create_bucket()
    return Storage(f"s3://{bucket}/stroke", endpoint_url=s3.endpoint_url)


def test_settings_choose_the_storage(tmp_path: Path) -> None:
    local = load_settings({"STROKE_HOME": str(tmp_path)})
    assert local.files.is_local and local.files.root == tmp_path.resolve()
    assert local.incoming_dir == tmp_path.resolve() / "incoming"
    remote = load_settings(
        {
            "STROKE_HOME": str(tmp_path),
            "STROKE_STORAGE_URL": "s3://bucket/some/prefix/",
            "STROKE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    assert remote.storage.remote and not remote.files.is_local
    assert str(remote.incoming_dir) == "s3://bucket/some/prefix/incoming"
    assert remote.files.endpoint_url == "http://127.0.0.1:9000"
    assert remote.models_dir == tmp_path.resolve() / "models"  # local caches stay local
    with pytest.raises(SettingsError, match="STROKE_STORAGE_URL must be"):
        load_settings({"STROKE_STORAGE_URL": "ftp://host/x"})


def test_a_remote_path_is_never_taken_for_a_local_file() -> None:
    path = Storage("s3://bucket/prefix").path("incoming", "2026-01-01.csv")
    assert isinstance(path, RemotePath) and path.name == "2026-01-01.csv"
    assert str(path.parent) == "s3://bucket/prefix/incoming" and path.key.startswith("bucket/")
    with pytest.raises(TypeError, match="object storage"), open(path):  # noqa: PTH123
        pass


def test_write_list_read_publish_delete(store: Storage) -> None:
    directory = store.path("incoming")
    assert store.list_files(directory) == [] and not store.exists(directory / "a.csv")
    store.write_text(directory / "a.csv", "id\n1\n")
    store.write_text(directory / "b.txt", "x")
    [first] = store.list_files(directory, "*.csv")
    assert first.name == "a.csv" and first.size == 5 and first.mtime_ns > 0
    assert store.read_text(first.path) == "id\n1\n" and store.is_file(first.path)
    time.sleep(0.01)
    store.write_text(directory / "a.csv", "id\n1\n2\n")
    [second] = store.list_files(directory, "*.csv")
    assert second.version != first.version  # a replaced file is a new version
    assert store.info(directory / "a.csv").version == second.version
    assert store.info(directory / "missing.csv") is None

    with store.staged_file(".parquet", near=store.path("cohorts")) as tmp:
        pq.write_table(pa.table({"x": [1, 2, 3]}), tmp)
        store.publish(tmp, store.path("cohorts", "day.parquet"))
        assert not tmp.exists()
    assert store.read_parquet(store.path("cohorts", "day.parquet")).num_rows == 3
    with store.local_copy(store.path("cohorts", "day.parquet")) as local:
        assert pq.read_table(local).column("x").to_pylist() == [1, 2, 3]
    assert [p.name for p in store.list_dirs(store.root)] == ["cohorts", "incoming"]
    assert [p.name for p in store.glob(store.path("*", "*.parquet"))] == ["day.parquet"]

    assert store.delete(directory / "b.txt") and not store.delete(directory / "b.txt")
    store.delete_tree(store.path("cohorts"))
    assert not store.exists(store.path("cohorts", "day.parquet"))
    with pytest.raises(FileNotFoundError), store.local_copy(store.path("cohorts", "day.parquet")):
        pass


def test_duckdb_reads_the_storage(store: Storage) -> None:
    import duckdb

    for day, rows in (("2026-01-01", [1, 2]), ("2026-01-02", [3])):
        with store.staged_file(".parquet") as tmp:
            pq.write_table(pa.table({"x": rows}), tmp)
            store.publish(tmp, store.path("t", f"cohort_date={day}", "data.parquet"))
    con = store.register(duckdb.connect())
    glob = store.uri(store.path("t", "*", "*.parquet"))
    total = con.execute(
        f"SELECT sum(x), count(DISTINCT cohort_date) FROM read_parquet('{glob}', "
        "hive_partitioning = true)"
    ).fetchone()
    assert total == (6, 2)


def _home_files(home: Path) -> list[str]:
    """Files under STROKE_HOME, relative (the warehouse's file of views excepted)."""
    return sorted(
        p.relative_to(home).as_posix()
        for p in home.rglob("*")
        if p.is_file() and p.name != "warehouse.duckdb"
    )


def test_warehouse_days_live_in_the_bucket(
    s3_bucket: str, moto_s3: MotoS3, stroke_home: Path
) -> None:
    import datetime as dt

    import pandas as pd

    from stroke_dagster import warehouse

    settings = load_settings()
    rows = pd.DataFrame(
        {"patient_id": ["a", "b"], "stroke_probability": [0.1, 0.9], "risk_tier": ["low", "high"]}
    )
    extra = {"model_name": "StrokeRF", "model_version": "1", "scored_at": dt.datetime.now(dt.UTC)}
    for day in ("2026-01-01", "2026-01-02"):
        warehouse.replace_partition("scores", day, rows, extra=extra, settings=settings)
    warehouse.replace_partition(
        "scores", "2026-01-02", rows.head(1), extra=extra, settings=settings
    )
    counts = warehouse.query_df(
        "SELECT cohort_date::VARCHAR AS day, count(*) AS n FROM scores GROUP BY 1 ORDER BY 1",
        settings=settings,
    )
    assert counts.to_dict("list") == {"day": ["2026-01-01", "2026-01-02"], "n": [2, 1]}
    wh = warehouse.of(settings)
    assert [str(d) for d in wh.partition_days("scores")] == ["2026-01-01", "2026-01-02", "None"]
    day2 = wh.partition_dir("scores", dt.date(2026, 1, 2))
    assert len(wh.files.list_files(day2)) == 2  # the superseded version waits for the grace
    assert wh.vacuum() == 0
    assert (
        warehouse.Warehouse(
            stroke_home, warehouse.WarehouseConfig(grace_seconds=0), storage=wh.files
        ).vacuum()
        == 1
    )
    assert len(wh.files.list_files(day2)) == 1
    keys = moto_s3.keys(s3_bucket)
    assert any(k.startswith("stroke/warehouse/scores/cohort_date=2026-01-02/data~") for k in keys)
    assert _home_files(stroke_home) == []  # only the views file is local
    con = warehouse.connect(settings)
    try:
        assert con.execute("SELECT count(*) FROM inference_log").fetchone() == (0,)
    finally:
        con.close()
