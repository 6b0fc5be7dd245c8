"""Request telemetry: buffered in memory, flushed by a background thread to Parquet segments.

A request only appends a dict to an in-memory list; a daemon thread writes the buffer every
``flush_seconds`` as one Parquet file per UTC day under ``STROKE_HOME/telemetry/date=YYYY-MM-DD/``
(written under a temporary name, then renamed: readers never see half a file). The service never
opens the DuckDB warehouse, so it never competes with the pipeline for DuckDB's single writer;
the warehouse exposes the segments as the view ``inference_log`` (``sql/ddl/inference_log.sql``).
:meth:`TelemetryWriter.close` flushes what is left (the app calls it on shutdown).

With ``store_features`` (``STROKE_TELEMETRY_FEATURES=1``; off by default: it keeps patient data)
each scored patient's features are also written, to ``STROKE_HOME/telemetry_features/`` (outside
the view's glob), and :func:`request_cohort` returns a day of them in the raw schema, so the drift
monitor can treat live traffic as one more cohort.

**Compaction and retention.** :func:`compact_telemetry` (run by the daily asset
``inference_daily_summary`` and ``stroke warehouse compact-telemetry``) merges each past day's
segments into one new version ``date=D/compacted~<version>.parquet`` (each row keeps the name of
its segment in ``segment``); readers skip a segment already present in the day's newest compacted
file, so no row is counted twice while both exist. Merged segments and superseded compacted
versions are deleted by a later run, once the grace period (an hour) has passed, so a query that
listed them can still read them: a past day ends as one file. Days older than the retention
(default 90) are deleted, request log and kept features alike.

**Storage.** The directories are those of the platform's file storage
(:mod:`stroke_dagster.storage`): ``STROKE_HOME`` by default, an object-store prefix when
``storage.url`` is set (a segment is then written to a local scratch file and uploaded in one
``PUT``). The functions below take a directory and, for object storage, its ``storage``.

**Audit records.** With an :class:`~stroke_dagster.audit.AuditLog` the writer also buffers the
requests' audit records (one per scored patient); the flush thread links them to the worker's
hash chain and appends them to the warehouse table ``prediction_audit`` in one commit (Delta
appends of several workers never conflict). A failed append keeps the linked records for the
next flush, in order, so the chain never skips a number.

This module does not import FastAPI or Dagster: the daily summary (:func:`summarize_day`) runs
in the Dagster asset ``inference_daily_summary``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import threading
import time
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stroke_dagster.audit import AuditLog
from stroke_dagster.risk import TIERS
from stroke_dagster.schema import (
    BINARY_FEATURES,
    FEATURES,
    ID,
    NUMERIC_FEATURES,
    REQUIRED_COLUMNS,
)
from stroke_dagster.settings import Settings
from stroke_dagster.storage import Storage, StoragePath, storage_for
from stroke_dagster.versioned_files import remove_superseded, version_name, versions

log = logging.getLogger(__name__)

TELEMETRY_DIR = "telemetry"
FEATURES_DIR = "telemetry_features"
SEGMENT_PREFIX = "part-"
COMPACTED_KEY = "compacted"  # compacted~<version>.parquet (see versioned_files)
DEFAULT_RETENTION_DAYS = 90
# Rows kept in memory at most while the disk is unwritable; newer rows are then counted as dropped.
MAX_BUFFERED_ROWS = 1_000_000

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


def feature_means(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """``mean_<feature>`` of each numeric feature over a request's patients (missing skipped)."""
    means: dict[str, float | None] = {}
    for name, column in zip(NUMERIC_FEATURES, MEAN_COLUMNS, strict=True):
        values = [r[name] for r in records if r.get(name) is not None]
        means[column] = float(sum(values) / len(values)) if values else None
    return means


def scoring_summary(
    records: list[dict[str, Any]],
    probabilities: np.ndarray,
    tiers: np.ndarray,
    model_name: str,
    model_version: str,
) -> dict[str, Any]:
    """The scoring fields of one telemetry row (the middleware adds path, status, latency)."""
    counts = {tier: 0 for tier in TIERS}
    for tier in tiers:
        counts[tier] += 1
    return {
        "n_patients": len(records),
        **feature_means(records),
        "mean_probability": float(np.mean(probabilities)) if len(records) else None,
        **{f"tier_{tier}": n for tier, n in counts.items()},
        "model_name": model_name,
        "model_version": model_version,
    }


class TelemetryWriter:
    """Thread-safe buffer of request rows with a background flush thread.

    ``record`` never blocks on I/O. ``start`` launches the flush thread; ``close`` stops it and
    writes whatever is buffered. With ``enabled=False`` every call is a no-op. Segments go to
    ``storage`` (default: the local directory ``home``).
    """

    def __init__(
        self,
        home: Path,
        *,
        enabled: bool = True,
        store_features: bool = False,
        flush_seconds: float = 5.0,
        storage: Storage | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.home = Path(home)
        self.audit = audit
        self._audit: list[dict[str, Any]] = []  # not linked yet
        self._linked: list[dict[str, Any]] = []  # linked, not written yet
        self.storage = storage or Storage.local(self.home)
        self.enabled = enabled
        self.store_features = store_features and enabled
        self.flush_seconds = flush_seconds
        self.rows_written = 0
        self.rows_dropped = 0
        self._rows: list[dict[str, Any]] = []
        self._features: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sequence = itertools.count()

    # -- recording (request path) ----------------------------------------------------------

    def record(
        self,
        row: dict[str, Any],
        features: list[dict[str, Any]] | None = None,
    ) -> None:
        """Buffer one request row (and its patients' feature rows, when they are kept)."""
        if not self.enabled:
            return
        with self._lock:
            if len(self._rows) >= MAX_BUFFERED_ROWS:
                self.rows_dropped += 1
                return
            self._rows.append(row)
            if features and self.store_features:
                self._features.extend(features)

    def record_audit(self, rows: list[dict[str, Any]]) -> None:
        """Buffer a request's audit records (linked and written by the flush thread)."""
        if self.audit is None:
            return
        with self._lock:
            self._audit.extend(rows)

    def pending_audit(self, request_id: str) -> list[dict[str, Any]]:
        """The audit records of ``request_id`` not written yet (a just-answered request)."""
        with self._lock:
            rows = [*self._linked, *self._audit]
        return [row for row in rows if row.get("request_id") == request_id]

    # -- flushing (background thread) -------------------------------------------------------

    def start(self) -> None:
        if not (self.enabled or self.audit is not None) or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="telemetry-flush", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        """Stop the flush thread and write every buffered row."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write the buffered rows now; returns the number of request rows written."""
        if self.audit is not None:
            self._flush_audit()
        if not self.enabled:
            return 0
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
                features, self._features = self._features, []
            if not rows and not features:
                return 0
            try:
                self._write(self.storage.path(TELEMETRY_DIR), rows, REQUEST_SCHEMA)
                if features:
                    self._write(self.storage.path(FEATURES_DIR), features, FEATURE_SCHEMA)
            except Exception:
                log.exception("telemetry flush failed; keeping %d rows for the next try", len(rows))
                with self._lock:
                    self._rows[:0] = rows
                    self._features[:0] = features
                return 0
            self.rows_written += len(rows)
            return len(rows)

    def _flush_audit(self) -> None:
        assert self.audit is not None
        with self._flush_lock:
            with self._lock:
                rows, self._audit = self._audit, []
            linked_now = self.audit.link(rows)  # outside the lock requests take
            with self._lock:
                self._linked.extend(linked_now)
                linked = list(self._linked)
            if not linked:
                return
            try:
                self.audit.write(linked)
            except Exception:
                log.exception(
                    "audit append failed; keeping %d records for the next try", len(linked)
                )
                return
            with self._lock:
                del self._linked[: len(linked)]

    def _write(self, root: StoragePath, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
        by_day: dict[dt.date, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(row["ts"].astimezone(dt.UTC).date(), []).append(row)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for day, day_rows in sorted(by_day.items()):
            directory = root / f"date={day.isoformat()}"
            name = f"{SEGMENT_PREFIX}{stamp}-{os.getpid()}-{next(self._sequence):06d}.parquet"
            table = pa.Table.from_pylist(day_rows, schema=schema)
            with self.storage.staged_file(".tmp", near=directory) as tmp:
                pq.write_table(table, tmp, compression="zstd")
                self.storage.publish(tmp, directory / name, fsync=False)


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
