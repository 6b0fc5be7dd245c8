"""The API's request log as files: layout, schemas, compaction, retention and daily summaries.

The API's writer (:class:`stroke_dagster.api.telemetry.TelemetryWriter`) flushes one Parquet
segment per UTC day under ``telemetry/date=YYYY-MM-DD/`` (and, with feature capture, the scored
patients under ``telemetry_features/``); the warehouse exposes the segments as the view
``inference_log`` (``sql/ddl/inference_log.sql``). This module owns that layout, so the warehouse
and the daily assets read it without the API.

**Compaction and retention.** :func:`compact_telemetry` (run by the daily asset
``inference_daily_summary`` and ``stroke warehouse compact-telemetry``) merges each past day's
segments into one new version ``date=D/compacted~<version>.parquet`` (each row keeps the name of
its segment in ``segment``); readers skip a segment already present in the day's newest compacted
file, so no row is counted twice while both exist. Merged segments and superseded compacted
versions are deleted by a later run, once the grace period (an hour) has passed, so a query that
listed them can still read them: a past day ends as one file. Days older than the retention
(default 90) are deleted, request log and kept features alike.

**Storage.** The directories are those of the platform's file storage
(:mod:`stroke_dagster.core.storage`): ``STROKE_HOME`` by default, an object-store prefix when
``storage.url`` is set. The functions below take a directory and, for object storage, its
``storage``. With feature capture on, :func:`request_cohort` returns a day of the scored patients
in the raw schema, so the drift monitor can treat live traffic as one more cohort.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import PurePath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stroke_dagster.core.risk import TIERS
from stroke_dagster.core.schema import (
    BINARY_FEATURES,
    FEATURES,
    ID,
    NUMERIC_FEATURES,
    REQUIRED_COLUMNS,
)
from stroke_dagster.core.settings import Settings
from stroke_dagster.core.storage import Storage, StoragePath, storage_for
from stroke_dagster.io.versioned_files import remove_superseded, version_name, versions

log = logging.getLogger(__name__)

TELEMETRY_DIR = "telemetry"
FEATURES_DIR = "telemetry_features"
SEGMENT_PREFIX = "part-"
COMPACTED_KEY = "compacted"  # compacted~<version>.parquet (see versioned_files)
DEFAULT_RETENTION_DAYS = 90

MEAN_COLUMNS: tuple[str, ...] = tuple(f"mean_{name}" for name in NUMERIC_FEATURES)
TIER_COLUMNS: tuple[str, ...] = tuple(f"tier_{tier}" for tier in TIERS)

REQUEST_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("method", pa.string()),
        ("path", pa.string()),
        ("status_code", pa.int32()),
        ("latency_ms", pa.float64()),
        ("n_patients", pa.int32()),
        *((name, pa.float64()) for name in MEAN_COLUMNS),
        ("mean_probability", pa.float64()),
        *((name, pa.int32()) for name in TIER_COLUMNS),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("worker_pid", pa.int32()),
    ]
)


def _feature_type(name: str) -> pa.DataType:
    if name in NUMERIC_FEATURES:
        return pa.float64()
    if name in BINARY_FEATURES:
        return pa.int64()
    return pa.string()


FEATURE_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("row_in_request", pa.int32()),
        (ID, pa.string()),
        *((name, _feature_type(name)) for name in FEATURES),
        ("stroke_probability", pa.float64()),
        ("risk_tier", pa.string()),
    ]
)


def telemetry_dir(settings: Settings) -> StoragePath:
    return settings.files.path(TELEMETRY_DIR)


def features_dir(settings: Settings) -> StoragePath:
    return settings.files.path(FEATURES_DIR)


# ------------------------------------------------------------------------------------------
# Reading (warehouse-free: plain Parquet)
# ------------------------------------------------------------------------------------------


def _day_files(
    root: PurePath, day: str | dt.date, storage: Storage | None = None
) -> list[StoragePath]:
    """The fresh (not yet compacted) segments of one day."""
    day = dt.date.fromisoformat(str(day))
    directory = root / f"date={day.isoformat()}"
    files = storage_for(root, storage).list_files(directory, f"{SEGMENT_PREFIX}*.parquet")
    return [item.path for item in files]


def _read_segments(
    files: list[StoragePath], schema: pa.Schema, skip: set[str], storage: Storage
) -> list[pa.Table]:
    tables = []
    for path in files:
        if path.name in skip:
            continue
        try:
            table = storage.read_parquet(path, schema=schema)
        except FileNotFoundError:  # compacted and deleted since it was listed
            continue
        tables.append(table.append_column("segment", pa.array([path.name] * len(table))))
    return tables


def _compacted(root: PurePath, day: dt.date, storage: Storage) -> StoragePath | None:
    found = versions(root / f"date={day.isoformat()}", COMPACTED_KEY, storage)
    return found[-1] if found else None


def read_log(root: PurePath, day: str | dt.date, *, storage: Storage | None = None) -> pa.Table:
    """Every request row of one UTC day under ``root``: the compacted file + fresh segments.

    Rows carry ``segment``, the segment they were flushed in.
    """
    storage = storage_for(root, storage)
    day = dt.date.fromisoformat(str(day))
    schema = REQUEST_SCHEMA.append(pa.field("segment", pa.string()))
    tables, done = [], set()
    compacted_path = _compacted(root, day, storage)
    if compacted_path is not None:
        compacted = storage.read_parquet(compacted_path, schema=schema)
        done = set(compacted.column("segment").unique().to_pylist())
        tables.append(compacted)
    tables += _read_segments(_day_files(root, day, storage), REQUEST_SCHEMA, done, storage)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_day(settings: Settings, day: str | dt.date) -> pd.DataFrame:
    """Every request row of one UTC day (empty frame with the columns when there are none)."""
    table = read_log(telemetry_dir(settings), day, storage=settings.files)
    return table.drop_columns(["segment"]).to_pandas()


def compact_day(
    root: PurePath,
    day: str | dt.date,
    *,
    grace_seconds: float = 3600.0,
    storage: Storage | None = None,
) -> int:
    """Merge the day's fresh segments into a new compacted version; the segments merged.

    Segments (and compacted versions) already merged into a compacted version older than
    ``grace_seconds`` are deleted: a query that listed them just before can still read them.
    """
    storage = storage_for(root, storage)
    day = dt.date.fromisoformat(str(day))
    directory = root / f"date={day.isoformat()}"
    merged = 0
    segments = _day_files(root, day, storage)
    current = _compacted(root, day, storage)
    done: set[str] = set()
    if current is not None:
        column = storage.read_parquet(current, columns=["segment"]).column(0)
        done = set(column.unique().to_pylist())
    if any(path.name not in done for path in segments):
        table = read_log(root, day, storage=storage)
        merged = sum(1 for path in segments if path.name not in done)
        current = directory / version_name(COMPACTED_KEY)
        with storage.staged_file(".tmp", near=directory) as tmp:
            pq.write_table(table.sort_by([("ts", "ascending")]), tmp, compression="zstd")
            storage.publish(tmp, current, fsync=False)
        done = set(table.column("segment").unique().to_pylist())
    info = storage.info(current) if current is not None else None
    if info is not None and info.mtime_ns < (time.time() - grace_seconds) * 1e9:
        for path in segments:
            if path.name in done:
                storage.delete(path)
    remove_superseded(directory, COMPACTED_KEY, grace_seconds, storage)
    return merged


def ensure_placeholders(root: PurePath, *, storage: Storage | None = None) -> None:
    """Empty files (``date=NULL``) that keep the ``inference_log`` view's globs matching."""
    storage = storage_for(root, storage)
    directory = root / "date=NULL"
    schema = REQUEST_SCHEMA.append(pa.field("segment", pa.string()))
    for name, file_schema in (
        (version_name(COMPACTED_KEY, 0), schema),
        (f"{SEGMENT_PREFIX}placeholder.parquet", REQUEST_SCHEMA),
    ):
        key = name.split("~")[0]
        if "~" in name:
            existing = bool(versions(directory, key, storage))
        else:
            existing = storage.is_file(directory / name)
        if existing:
            continue
        with storage.staged_file(".tmp", near=directory) as tmp:
            pq.write_table(file_schema.empty_table(), tmp)
            storage.publish(tmp, directory / name, fsync=False)


def compact_telemetry(
    root: PurePath,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    today: dt.date | None = None,
    keep_from: dt.date | None = None,
    grace_seconds: float = 3600.0,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """Compact every past day under ``root`` (today stays fresh) and apply the retention.

    A day strictly older than ``today - retention_days`` is deleted, with the kept features of
    that day (``telemetry_features/``, a sibling of ``root``), unless it is on or after
    ``keep_from`` (the day a caller is about to read, e.g. a backfilled summary).
    """
    storage = storage_for(root, storage)
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = today - dt.timedelta(days=retention_days)
    if keep_from is not None:
        cutoff = min(cutoff, keep_from)
    compacted, deleted = {}, []
    for directory in storage.list_dirs(root, "date=*"):
        try:
            day = dt.date.fromisoformat(directory.name.split("=", 1)[1])
        except ValueError:
            continue
        if day < cutoff:
            storage.delete_tree(directory)
            storage.delete_tree(root.parent / FEATURES_DIR / directory.name)
            deleted.append(day.isoformat())
        elif day < today:
            merged = compact_day(root, day, grace_seconds=grace_seconds, storage=storage)
            if merged:
                compacted[day.isoformat()] = merged
    return {"compacted": compacted, "deleted": deleted, "retention_days": retention_days}


def request_cohort(settings: Settings, day: str | dt.date) -> pd.DataFrame:
    """One UTC day of scored online patients in the raw schema (``id`` + features), typed.

    Empty unless the service ran with ``STROKE_TELEMETRY_FEATURES=1``. A patient sent without an
    ``id`` gets ``<request_id>:<row>``, so every row has a unique identifier.
    """
    storage = settings.files
    files = _day_files(features_dir(settings), day, storage)
    if not files:
        frame = FEATURE_SCHEMA.empty_table().to_pandas()
    else:
        frame = pa.concat_tables(
            [storage.read_parquet(f, schema=FEATURE_SCHEMA) for f in files]
        ).to_pandas()
        frame = frame.sort_values(["ts", "request_id", "row_in_request"], kind="stable")
    generated = frame["request_id"].astype(str) + ":" + frame["row_in_request"].astype(str)
    frame[ID] = frame[ID].where(frame[ID].notna(), generated).astype(object)
    for name in FEATURES:
        if name in NUMERIC_FEATURES:
            frame[name] = frame[name].astype("float64")
        elif name in BINARY_FEATURES:
            frame[name] = frame[name].astype("int64")
        else:
            frame[name] = frame[name].astype(object)
    return frame[list(REQUIRED_COLUMNS)].reset_index(drop=True)


def summarize_day(settings: Settings, day: str | dt.date) -> dict[str, Any]:
    """The day's service figures: traffic, errors, latency, mean probability, tier counts.

    ``error_rate`` counts every 4xx/5xx answer; ``server_error_rate`` only 5xx. Latency
    percentiles are over all requests; ``mean_probability`` is per patient (requests weighted by
    their number of patients). Figures without data are ``None``.
    """
    df = read_day(settings, day)
    requests = len(df)
    scored = df[df["n_patients"].fillna(0) > 0]
    patients = int(scored["n_patients"].sum()) if len(scored) else 0
    summary: dict[str, Any] = {
        "date": dt.date.fromisoformat(str(day)).isoformat(),
        "request_count": requests,
        "error_count": int((df["status_code"] >= 400).sum()),
        "error_rate": float((df["status_code"] >= 400).mean()) if requests else None,
        "server_error_rate": float((df["status_code"] >= 500).mean()) if requests else None,
        "latency_p50_ms": float(df["latency_ms"].quantile(0.5)) if requests else None,
        "latency_p99_ms": float(df["latency_ms"].quantile(0.99)) if requests else None,
        "patients_scored": patients,
        "mean_probability": (
            float((scored["mean_probability"] * scored["n_patients"]).sum() / patients)
            if patients
            else None
        ),
        "model_versions": sorted(str(v) for v in df["model_version"].dropna().unique()),
    }
    for column in TIER_COLUMNS:
        summary[f"{column}_count"] = int(df[column].fillna(0).sum())
    return summary
