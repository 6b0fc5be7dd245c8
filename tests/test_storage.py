"""The platform's file storage, on the local disk and on an S3 API server (moto)."""

from __future__ import annotations

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

from stroke_dagster.risk import RiskThresholds
from stroke_dagster.schema import FEATURES
from stroke_dagster.settings import SettingsError, load_settings
from stroke_dagster.simulate import simulate_patients
from stroke_dagster.storage import RemotePath, Storage

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

    from stroke_dagster import warehouse

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
    from stroke_dagster.training import build_pipeline
    from stroke_dagster.validation import validate_patients

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

    from stroke_dagster import arrivals, performance, scoring, warehouse
    from stroke_dagster.api.telemetry import (
        TelemetryWriter,
        compact_telemetry,
        read_day,
        request_cohort,
    )
    from stroke_dagster.cli import sql as cli_sql
    from stroke_dagster.cli import warehouse as cli_warehouse
    from stroke_dagster.drift.daily import check_day
    from stroke_dagster.drift.store import detector_for_model, fit_for_model
    from stroke_dagster.settings import COHORT_SUFFIXES, DriftSettings

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
    assert performance.labelled_days(settings) == [DAY]
    [realized] = performance.day_performance(DAY, settings).to_dict("records")
    assert realized["n_scored"] == scored.rows_scored and realized["model_version"] == "9"
    assert len(performance.labeled_cohorts(settings)) == 300  # raw rows, read from the bucket

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

    from stroke_dagster import warehouse
    from stroke_dagster.defs.resources import StrokeSettings
    from stroke_dagster.defs.scoring import cohort_scores, daily_cohort

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
