"""The platform's file storage, on the local disk and on an S3 API server (moto)."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _s3 import MotoS3, moto_s3, s3_bucket  # noqa: F401 - fixtures

from stroke_dagster.settings import SettingsError, load_settings
from stroke_dagster.storage import RemotePath, Storage


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
