"""Request telemetry: buffered in memory, flushed by a background thread to Parquet segments.

A request only appends a dict to an in-memory list; a daemon thread writes the buffer every
``flush_seconds`` as one Parquet file per UTC day under ``STROKE_HOME/telemetry/date=YYYY-MM-DD/``
(written under a temporary name, then renamed: readers never see half a file). The service never
opens the DuckDB warehouse, so it never competes with the pipeline for DuckDB's single writer;
the layout, compaction and the warehouse's view are :mod:`stroke_dagster.warehouse.telemetry`.
:meth:`TelemetryWriter.close` flushes what is left (the app calls it on shutdown).

With ``store_features`` (``STROKE_TELEMETRY_FEATURES=1``; off by default: it keeps patient data)
each scored patient's features are also written, to ``STROKE_HOME/telemetry_features/`` (outside
the view's glob).

**Audit records.** With an :class:`~stroke_dagster.audit.records.AuditLog` the writer also
buffers the requests' audit records (one per scored patient); the flush thread links them to the
worker's hash chain and appends them to the warehouse table ``prediction_audit`` in one commit
(Delta appends of several workers never conflict). A failed append keeps the linked records for
the next flush, in order, so the chain never skips a number.

This module does not import FastAPI or Dagster.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stroke_dagster.audit.records import AuditLog
from stroke_dagster.core.risk import TIERS
from stroke_dagster.core.schema import (
    NUMERIC_FEATURES,
)
from stroke_dagster.core.storage import Storage, StoragePath
from stroke_dagster.warehouse.telemetry import (
    FEATURE_SCHEMA,
    FEATURES_DIR,
    MEAN_COLUMNS,
    REQUEST_SCHEMA,
    SEGMENT_PREFIX,
    TELEMETRY_DIR,
)

log = logging.getLogger(__name__)

# Rows kept in memory at most while the disk is unwritable; newer rows are then counted as dropped.
MAX_BUFFERED_ROWS = 1_000_000


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
