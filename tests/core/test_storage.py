"""The platform's file storage, on the local disk and on an S3 API server (moto)."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _s3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _s3 import MotoS3

from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.schema import FEATURES
from stroke_dagster.core.settings import SettingsError, load_settings
from stroke_dagster.core.storage import RemotePath, Storage
from stroke_dagster.simulate.generator import simulate_patients

DAY = "2026-01-05"

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


def _all_files(store: Storage) -> set[str]:
    """Every file under the root, relative to it (through the storage's own filesystem)."""
    root = store.key(store.root)
    return {name[len(root) + 1 :] for name in store.fs.find(root)}


def test_paths_are_pathlib_paths_locally_and_remote_paths_in_a_bucket(store: Storage) -> None:
    kind = Path if store.is_local else RemotePath
    store.write_text(store.path("incoming", "a.csv"), "x")
    found = [
        store.path("incoming"),
        *(info.path for info in store.list_files(store.path("incoming"))),
        *store.list_dirs(store.root),
        *store.glob(store.path("incoming", "*.csv")),
        store.info(store.path("incoming", "a.csv")).path,
        store.as_path(store.uri(store.path("incoming", "a.csv"))),
    ]
    assert all(isinstance(path, kind) for path in found), found
    assert store.as_path(store.uri(found[1])) == found[1] == store.path("incoming", "a.csv")
    if store.is_local:
        assert store.uri(found[1]) == str(store.root / "incoming" / "a.csv")
    else:
        assert store.uri(found[1]) == f"{store.url}/incoming/a.csv"


def test_listings_show_visible_files_and_directories_only(store: Storage) -> None:
    directory = store.path("day")
    for name in ("b.csv", "a.csv", ".a.csv.tmp", "notes.txt", "sub/inner.csv"):
        store.write_text(directory / name, name)
    assert [f.name for f in store.list_files(directory)] == ["a.csv", "b.csv", "notes.txt"]
    assert [f.name for f in store.list_files(directory, "*.csv")] == ["a.csv", "b.csv"]
    assert [p.name for p in store.list_dirs(directory)] == ["sub"]
    assert store.list_dirs(directory, "x*") == []
    # A missing directory, or a file listed as one, lists nothing.
    for missing in (store.path("nowhere"), directory / "a.csv", directory / "a.csv" / "x"):
        assert store.list_files(missing) == [] and store.list_dirs(missing) == []
    assert store.exists(directory) and store.exists(directory / "sub")  # a prefix exists
    assert not store.is_file(directory) and store.info(directory) is None  # it is not a file
    under_a_file = directory / "a.csv" / "x"
    assert not store.exists(under_a_file) and store.info(under_a_file) is None
    [listed] = store.list_files(directory, "a.csv")
    info = store.info(directory / "a.csv")  # one HEAD (S3 gives its time in whole seconds)
    assert (listed.path, listed.size, listed.version) == (info.path, info.size, info.version)
    assert listed.size == len("a.csv")


def test_writes_replace_files_atomically_and_leave_no_temporary_file(store: Storage) -> None:
    target = store.path("labels", "2026-01-01.csv")
    store.write_text(target, "id,stroke\n1,0\n")
    store.write_bytes(target, b"id,stroke\n1,1\n")
    assert store.read_bytes(target) == b"id,stroke\n1,1\n"
    assert _all_files(store) == {"labels/2026-01-01.csv"}

    # publish: a move empties the local side, a copy keeps it; the target is replaced whole.
    with store.staged_file(".csv") as tmp:
        tmp.write_text("copied")
        assert store.publish(tmp, target, move=False) and tmp.read_text() == "copied"
    with store.staged_file(".csv", near=target.parent) as tmp:
        tmp.write_text("moved")
        assert store.publish(tmp, target, fsync=False) and not tmp.exists()
    assert store.read_text(target) == "moved"
    assert _all_files(store) == {"labels/2026-01-01.csv"}


def test_staged_files_are_beside_the_target_locally_and_in_scratch_otherwise(
    store: Storage,
) -> None:
    near = store.path("cohorts")
    with store.staged_file(".parquet", near=near) as tmp:
        assert tmp.parent == (Path(near) if store.is_local else store.scratch)
        assert tmp.name.startswith(".") and tmp.suffix == ".parquet"
        tmp.write_bytes(b"x")
    assert not tmp.exists()
    store.makedirs(store.path("incoming"))  # a directory locally; nothing in a bucket
    assert store.exists(store.path("incoming")) == store.is_local


def test_reads_go_through_the_storage_or_fail_as_missing(store: Storage) -> None:
    path = store.path("cohorts", "2026-01-01.parquet")
    with store.staged_file(".parquet") as tmp:
        pq.write_table(pa.table({"x": [1, 2]}), tmp)
        store.publish(tmp, path)
    with store.open(path) as handle:
        assert pq.read_table(handle).column("x").to_pylist() == [1, 2]
    arrow = pq.read_table(store.key(path), filesystem=store.arrow_filesystem())
    assert arrow.num_rows == 2 and store.read_parquet(path, columns=["x"]).num_rows == 2
    with store.local_copy(path) as local:
        assert isinstance(local, Path) and pq.read_table(local).num_rows == 2
        assert (local == path) == store.is_local  # a download only from a bucket
    assert local.exists() == store.is_local  # ... removed afterwards
    missing = store.path("cohorts", "missing.parquet")
    with pytest.raises(FileNotFoundError):
        store.read_bytes(missing)
    with pytest.raises(FileNotFoundError), store.open(missing):
        pass
    assert not store.delete(missing)
    store.delete_tree(store.path("nowhere"))  # nothing to delete is no error
    store.delete_tree(store.path("cohorts"))
    assert _all_files(store) == set() and not store.exists(path)


def test_create_exclusive_refuses_an_existing_file(store: Storage) -> None:
    path = store.path("locks", "alias.lock")
    assert store.create_exclusive(path, b"first")
    assert not store.create_exclusive(path, b"second")
    assert store.read_bytes(path) == b"first"
    with store.staged_file(".json") as tmp:
        tmp.write_text("new")
        if store.is_local:  # a local rename cannot refuse: exclusive is for object storage
            with pytest.raises(ValueError, match="object storage"):
                store.publish(tmp, path, exclusive=True)
        else:  # a conditional PUT (If-None-Match): refused, nothing published
            assert not store.publish(tmp, path, move=False, exclusive=True)
            assert store.publish(tmp, store.path("locks", "other"), exclusive=True)
    assert store.read_bytes(path) == b"first"


def test_a_lock_excludes_a_second_holder_until_released(store: Storage) -> None:
    path = store.path("warehouse", "migrate.lock")
    with store.lock(path), pytest.raises(TimeoutError), store.lock(path, timeout=0.1):
        pass
    with store.lock(path, timeout=0.1):  # released: taken again at once
        pass
    # Locally the lock file stays (flock); a bucket's lease object is removed on release.
    assert store.exists(path) == store.is_local


def test_a_stale_lease_in_a_bucket_is_broken(moto_s3: MotoS3) -> None:
    store = Storage(f"s3://{moto_s3.create_bucket()}/stroke", endpoint_url=moto_s3.endpoint_url)
    path = store.path("warehouse", "migrate.lock")
    assert store.create_exclusive(path, b'{"host": "gone"}')  # its holder died
    with store.lock(path, timeout=5.0, lease=0.0):
        assert store.read_bytes(path) != b'{"host": "gone"}'
    assert not store.exists(path)


def test_versions_change_with_the_file(store: Storage) -> None:
    path = store.path("incoming", "2026-01-01.csv")
    store.write_text(path, "id\n1\n")
    first = store.info(path)
    store.write_text(path, "id\n2\n")  # the same size
    if store.is_local:  # a version of modification time and size: make the time differ
        os.utime(path, ns=(first.mtime_ns + 1_000_000, first.mtime_ns + 1_000_000))
        second = store.info(path)
        assert (second.etag, second.size) == (None, first.size)
        assert second.mtime_ns == first.mtime_ns + 1_000_000  # to the nanosecond
        expected = hashlib.sha1(
            f"{second.mtime_ns}:{second.size}".encode(), usedforsecurity=False
        ).hexdigest()[:16]
        assert second.version == expected  # kept in sensor cursors: must not change
    else:  # a version of the ETag (the content's MD5 for a single PUT)
        second = store.info(path)
        assert second.etag == hashlib.md5(b"id\n2\n", usedforsecurity=False).hexdigest()
        store.write_text(path, "id\n2\n")
        assert store.info(path).version == second.version  # the same content, the same version
    assert second.version != first.version


def test_local_listings_follow_symbolic_links(tmp_path: Path) -> None:
    store = Storage.local(tmp_path / "home")
    store.write_text(store.path("elsewhere", "2026-01-01.csv"), "id\n1\n")
    incoming = Path(store.path("incoming"))
    incoming.mkdir()
    (incoming / "2026-01-01.csv").symlink_to(store.path("elsewhere", "2026-01-01.csv"))
    (incoming / "2026-01-02.csv").symlink_to(incoming / "missing.csv")  # broken: not a file
    (Path(store.root) / "linked").symlink_to(Path(store.path("elsewhere")))
    [linked] = store.list_files(incoming)
    assert linked.path == incoming / "2026-01-01.csv" and linked.size == 5
    target = os.stat(store.path("elsewhere", "2026-01-01.csv"))
    assert linked.mtime_ns == target.st_mtime_ns
    assert [p.name for p in store.list_dirs(store.root)] == ["elsewhere", "incoming", "linked"]
    assert store.is_file(incoming / "2026-01-01.csv")
    assert not store.exists(incoming / "2026-01-02.csv")


def test_duckdb_sees_a_file_published_after_the_connection_was_registered(
    store: Storage,
) -> None:
    import duckdb

    def publish(day: str, rows: list[int]) -> None:
        with store.staged_file(".parquet") as tmp:
            pq.write_table(pa.table({"x": rows}), tmp)
            store.publish(tmp, store.path("t", f"cohort_date={day}", "data.parquet"))

    publish("2026-01-01", [1])
    con = store.register(duckdb.connect())
    query = f"SELECT sum(x) FROM read_parquet('{store.uri(store.path('t', '*', '*.parquet'))}')"
    assert con.execute(query).fetchone() == (1,)
    publish("2026-01-02", [2])  # a write of this process clears the kept listings
    assert con.execute(query).fetchone() == (3,)


def _home_files(home: Path) -> list[str]:
    """Files under STROKE_HOME, relative."""
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())


def test_warehouse_tables_live_in_the_bucket_and_commit_conditionally(
    s3_bucket: str, moto_s3: MotoS3, stroke_home: Path
) -> None:
    import datetime as dt
    import threading

    import pandas as pd
    import polars as pl

    from stroke_dagster.warehouse import store as warehouse

    settings = load_settings()
    rows = pd.DataFrame(
        {"patient_id": ["a", "b"], "stroke_probability": [0.1, 0.9], "risk_tier": ["low", "high"]}
    )
    extra = {"model_name": "StrokeRF", "model_version": "1", "scored_at": dt.datetime.now(dt.UTC)}
    for day in ("2026-01-01", "2026-01-02"):
        warehouse.replace_partition("score_history", day, rows, extra=extra, settings=settings)
    # Two writers of one day at once: Delta's conditional commit (If-None-Match on the next
    # log entry) lets one win; the other is refused, reloads and commits after it.
    errors: list[str] = []

    def write(n: int) -> None:
        try:
            warehouse.replace_partition(
                "score_history", "2026-01-02", rows.head(n), extra=extra, settings=settings
            )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    wh = warehouse.of(settings)
    before = wh.table("score_history").version()
    writers = [threading.Thread(target=write, args=(n,)) for n in (1, 2, 1, 2)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert errors == []
    commits = [c for c in wh.history("score_history") if c["version"] > before]
    assert len(commits) == 4  # none lost to a lost update on the object store
    counts = warehouse.query_df(
        "SELECT cohort_date::VARCHAR AS day, count(*) AS n FROM scores GROUP BY 1 ORDER BY 1",
        settings=settings,
    )
    assert counts["day"].tolist() == ["2026-01-01", "2026-01-02"]
    assert counts["n"].iloc[0] == 2 and counts["n"].iloc[1] in (1, 2)
    keys = moto_s3.keys(s3_bucket)
    assert any(k.startswith("stroke/warehouse/score_history/_delta_log/") for k in keys)
    assert any(k.startswith("stroke/warehouse/score_history/cohort_date=2026-01-02/") for k in keys)
    # A second engine reads the table in the bucket.
    options = {
        **wh.files.delta_options,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    frame = pl.read_delta(wh.table_uri("score_history"), storage_options=options)
    assert frame.filter(pl.col("is_current")).height == counts["n"].sum()
    summary = wh.maintain()
    assert summary["files_vacuumed"] == 0  # a week of time travel is kept
    assert _home_files(stroke_home) == []  # nothing of the warehouse is local
    con = warehouse.connect(settings)
    try:
        assert con.execute("SELECT count(*) FROM inference_log").fetchone() == (0,)
    finally:
        con.close()


@dataclass
class SmallModel:
    """A fitted pipeline with what scoring and the drift store read of a registered version."""

    pipeline: Any
    reference: pd.DataFrame
    name: str = "StrokeRF"
    version: str = "9"
    thresholds: RiskThresholds = RiskThresholds(elevated=0.05, high=0.15)

    def reference_frame(self) -> pd.DataFrame:
        return self.reference

    def holdout_predictions(self) -> None:
        return None


@pytest.fixture(scope="module")
def small_model() -> SmallModel:
    from stroke_dagster.io.validation import validate_patients
    from stroke_dagster.model.training import build_pipeline

    train = validate_patients(simulate_patients(800, seed=11), require_label=True).valid
    pipeline = build_pipeline({"n_estimators": 10, "max_depth": 4, "n_jobs": 1})
    pipeline.fit(train[list(FEATURES)], train["stroke"])
    return SmallModel(pipeline, train)


def _upload_cohort(files: Storage, day: str, n: int = 300) -> int:
    """A cohort of ``n`` rows (3 of them bad) put in ``incoming/`` of the storage; bad rows."""
    df = simulate_patients(n, seed=5, with_label=False).astype({"age": object})
    df.loc[3, "age"] = "200"  # out of range
    df.loc[10, "gender"] = "Robot"  # unknown category
    df.loc[n - 1, "id"] = df.loc[0, "id"]  # duplicate
    with files.staged_file(".csv") as tmp:
        df.to_csv(tmp, index=False, na_rep="N/A")
        files.publish(tmp, files.path("incoming", f"{day}.csv"))
    return 3


def test_the_daily_loop_runs_on_object_storage(
    s3_bucket: str,
    moto_s3: MotoS3,
    stroke_home: Path,
    small_model: SmallModel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Arrival, typed copy, scoring, SQL, drift, labels, telemetry and vacuum, all in the bucket."""
    import argparse
    import datetime as dt
    import json

    from stroke_dagster.api.telemetry import TelemetryWriter
    from stroke_dagster.cli import sql as cli_sql
    from stroke_dagster.cli import warehouse as cli_warehouse
    from stroke_dagster.core.settings import COHORT_SUFFIXES, DriftSettings
    from stroke_dagster.io import arrivals
    from stroke_dagster.io.labels import labelled_cohorts, labelled_days
    from stroke_dagster.monitoring import performance
    from stroke_dagster.monitoring.drift.daily import check_day
    from stroke_dagster.monitoring.drift.store import detector_for_model, fit_for_model
    from stroke_dagster.scoring import batch as scoring
    from stroke_dagster.warehouse import store as warehouse
    from stroke_dagster.warehouse.telemetry import compact_telemetry, read_day, request_cohort

    settings = load_settings()
    files = settings.files
    assert not files.is_local and str(files.root) == f"s3://{s3_bucket}/stroke"
    before = set(_home_files(stroke_home))

    # Arrival: one listing gives the day and a version that changes when the file is replaced.
    bad = _upload_cohort(files, DAY)
    bounds = {"first_day": dt.date(2026, 1, 1), "last_day": dt.date(2026, 1, 31)}
    [arrival] = arrivals.scan(settings.incoming_dir, COHORT_SUFFIXES, storage=files, **bounds).files
    assert arrival.day == DAY and str(arrival.path).startswith("s3://")
    assert settings.incoming_file(DAY) == arrival.path

    # The typed copy and its summary go to the bucket; an unchanged input is not validated again.
    cohort = scoring.current_cohort(settings, DAY)
    assert (cohort.rows_in, cohort.rows_quarantined) == (300, bad)
    assert cohort.path == f"s3://{s3_bucket}/stroke/cohorts/{DAY}.parquet"
    assert scoring.current_cohort(settings, DAY) == cohort
    assert len(scoring.read_cohort(settings, cohort)) == cohort.rows_valid

    # Scoring from the typed copy into the warehouse in the bucket; every row accounted for.
    with files.local_copy(cohort.path) as local:
        scored = scoring.score_file(
            local, small_model, cohort_date=DAY, quarantine_source=None, settings=settings
        )
    assert scored.rows_scored + cohort.rows_quarantined == cohort.rows_in
    con = warehouse.connect(settings)
    try:
        n_scores, n_quarantined = con.execute(
            "SELECT (SELECT count(*) FROM scores WHERE cohort_date = $d),"
            " (SELECT count(*) FROM quarantine WHERE cohort_date = $d)",
            {"d": dt.date.fromisoformat(DAY)},
        ).fetchone()
    finally:
        con.close()
    assert (n_scores, n_quarantined) == (scored.rows_scored, bad)

    # Drift: the detector is saved to and loaded from the bucket; the check reads the typed copy.
    config = DriftSettings(backend="scipy")
    fitted = fit_for_model(small_model, config, settings)
    assert str(fitted.path) == f"s3://{s3_bucket}/stroke/models/9/drift_scipy.parquet"
    loaded = detector_for_model("9", config, settings=settings)
    assert not loaded.fitted_now and loaded.path == fitted.path
    result = check_day(DAY, config=config, settings=settings, loaded=loaded)
    assert result.rows_valid == cohort.rows_valid and result.prediction_note == "ok"

    # Labels in the bucket give the realized performance of the day.
    labels = simulate_patients(300, seed=5)[["id", "stroke"]]
    files.write_text(files.path("labels", f"{DAY}.csv"), labels.to_csv(index=False))
    assert labelled_days(settings) == [DAY]
    [realized] = performance.day_performance(DAY, settings).to_dict("records")
    assert realized["n_scored"] == scored.rows_scored and realized["model_version"] == "9"
    assert len(labelled_cohorts(settings)) == 300  # raw rows, read from the bucket

    # Telemetry: segments written to the bucket, compacted, read through the view.
    writer = TelemetryWriter(stroke_home, storage=files, store_features=True)
    yesterday = dt.datetime(2026, 1, 4, 12, tzinfo=dt.UTC)
    patients = simulate_patients(3, seed=1, with_label=False).to_dict("records")
    for i, patient in enumerate(patients):
        feature_row = {**patient, "id": str(patient["id"]), "ts": yesterday, "row_in_request": 0}
        feature_row["request_id"] = f"r{i}"
        writer.record({"ts": yesterday, "request_id": f"r{i}", "status_code": 200}, [feature_row])
        writer.flush()
    assert request_cohort(settings, "2026-01-04")["id"].tolist() == [str(p["id"]) for p in patients]
    summary = compact_telemetry(
        warehouse.of(settings).telemetry_dir, storage=files, today=dt.date(2026, 1, 5)
    )
    assert summary["compacted"] == {"2026-01-04": 3}
    assert len(read_day(settings, "2026-01-04")) == 3

    # A rescored day replaces its slice in one commit (the day's files are swapped).
    with files.local_copy(cohort.path) as local:
        scoring.score_file(
            local, small_model, cohort_date=DAY, quarantine_source=None, settings=settings
        )
    assert (
        warehouse.query_df(
            "SELECT count(*) AS n FROM score_history WHERE cohort_date = ?",
            [dt.date.fromisoformat(DAY)],
            settings=settings,
        )["n"].item()
        == scored.rows_scored
    )

    # The command line reads the same warehouse.
    cli_sql.run(
        argparse.Namespace(
            file=None,
            sql_text="SELECT count(*) AS n FROM inference_log",
            param=[],
            format="json",
        )
    )
    assert json.loads(capsys.readouterr().out) == [{"n": 3}]
    cli_warehouse.run(argparse.Namespace(action="info"))
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["tables"]["score_history"]["rows"] == scored.rows_scored
    assert info["tables"]["score_history"]["location"].startswith(files.url)

    keys = moto_s3.keys(s3_bucket, "stroke/")
    for prefix in ("incoming/", "labels/", "cohorts/", "models/9/", "warehouse/", "telemetry"):
        assert any(key.startswith(f"stroke/{prefix}") for key in keys), prefix
    # Nothing was added under STROKE_HOME.
    assert set(_home_files(stroke_home)) - before == set()


def test_file_arrivals_sensor_versions_bucket_files(s3_bucket: str, stroke_home: Path) -> None:
    """The sensor reports a file put in the bucket once, and again when it is replaced."""
    import datetime as dt

    import dagster as dg

    from stroke_dagster.defs.resources import StrokeSettings
    from stroke_dagster.defs.sources import DATA_VERSION_TAG, file_arrivals

    files = load_settings().files
    today = dt.datetime.now(dt.UTC).date().isoformat()
    _upload_cohort(files, today, n=20)
    files.write_text(files.path("labels", f"{today}.csv"), "id,stroke\n1,0\n")

    def tick(cursor: str | None) -> dg.SensorResult:
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources={"stroke": StrokeSettings(cohort_due_hour=23)},
            )
            return file_arrivals(context)

    def _arrived(result: dg.SensorResult) -> list[dg.AssetMaterialization]:
        return [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]

    first = tick(None)
    reported = {
        (e.asset_key.to_user_string(), e.partition): e.tags[DATA_VERSION_TAG]
        for e in _arrived(first)
    }
    assert set(reported) == {("incoming_cohort", today), ("cohort_labels", today)}
    assert not [
        e for e in tick(first.cursor).asset_events if isinstance(e, dg.AssetMaterialization)
    ]
    files.write_text(files.path("labels", f"{today}.csv"), "id,stroke\n1,1\n")
    again = [e for e in tick(first.cursor).asset_events if isinstance(e, dg.AssetMaterialization)]
    assert [(e.asset_key.to_user_string(), e.partition) for e in again] == [
        ("cohort_labels", today)
    ]
    assert again[0].tags[DATA_VERSION_TAG] != reported[("cohort_labels", today)]
    assert not (stroke_home / "incoming").exists() and not (stroke_home / "labels").exists()


def test_dagster_scores_a_bucket_cohort(
    s3_bucket: str, moto_s3: MotoS3, champion_home: Path
) -> None:
    """The daily_cohort and cohort_scores assets of one day, with every file in the bucket."""
    import datetime as dt

    import dagster as dg

    from stroke_dagster.defs.resources import StrokeSettings
    from stroke_dagster.defs.scoring import cohort_scores, daily_cohort
    from stroke_dagster.warehouse import store as warehouse

    settings = load_settings()
    bad = _upload_cohort(settings.files, DAY, n=120)
    result = dg.materialize(
        [daily_cohort, cohort_scores], partition_key=DAY, resources={"stroke": StrokeSettings()}
    )
    assert result.success
    [scored] = result.asset_materializations_for_node("cohort_scores")
    n = warehouse.query_df(
        "SELECT count(*) AS n FROM scores WHERE cohort_date = ?",
        [dt.date.fromisoformat(DAY)],
        settings=settings,
    )["n"].item()
    assert n == 120 - bad == scored.metadata["rows_scored"].value
    assert f"stroke/cohorts/{DAY}.parquet" in moto_s3.keys(s3_bucket)
    assert not (champion_home / "cohorts").exists() and not (champion_home / "warehouse").exists()
