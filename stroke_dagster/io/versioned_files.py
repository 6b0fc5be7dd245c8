"""Immutable, versioned files: the naming of the API's telemetry log (``telemetry/``).

A published file is never modified or renamed over. A new version of ``<key>`` gets a new name,
``<key>~<version>.parquet`` (version = publication time in ns, zero-padded so that names sort by
version); readers take the newest name of each key. A superseded version is deleted once its
successor is older than a grace period, so that a query that listed it can still open it.

The directories are those of a :class:`~stroke_dagster.core.storage.Storage` (a local directory or
an
object-store prefix); without one, plain local paths. (The warehouse's tables are Delta tables:
:mod:`stroke_dagster.warehouse.store`.)
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import PurePath

from stroke_dagster.core.storage import Storage, StoragePath, storage_for

VERSION_SEP = "~"


def version_name(key: str, version: int | None = None) -> str:
    """``<key>~<version>.parquet``; the version defaults to the current time in ns."""
    version = time.time_ns() if version is None else version
    return f"{key}{VERSION_SEP}{version:020d}-{uuid.uuid4().hex[:8]}.parquet"


def versions(directory: PurePath, key: str, storage: Storage | None = None) -> list[StoragePath]:
    """The published versions of ``key`` in a partition directory, oldest first."""
    files = storage_for(directory, storage).list_files(directory, f"{key}{VERSION_SEP}*.parquet")
    return [item.path for item in files]


def remove_superseded(
    directory: PurePath, key: str, grace_seconds: float, storage: Storage | None = None
) -> int:
    """Delete versions whose successor was published more than ``grace_seconds`` ago."""
    store = storage_for(directory, storage)
    found = store.list_files(directory, f"{key}{VERSION_SEP}*.parquet")
    removed = 0
    cutoff_ns = (time.time() - grace_seconds) * 1e9
    for old, successor in itertools.pairwise(found):
        if successor.mtime_ns < cutoff_ns and store.delete(old.path):
            removed += 1
    return removed
