"""Immutable, versioned files: the naming shared by the warehouse and the telemetry log.

A published file is never modified or renamed over. A new version of ``<key>`` gets a new name,
``<key>~<version>.parquet`` (version zero-padded, so names sort by version); readers take the
newest name of each key. Warehouse days number their versions 1, 2, 3... (:func:`sequence_name`,
claimed by an exclusive create); the telemetry log and older warehouses use the publication
time in ns (:func:`version_name`), and a sequence continues from the newest of those. A
superseded version is deleted once its successor is older than a grace period, so that a query
that listed it can still open it.

The directories are those of a :class:`~stroke_dagster.storage.Storage` (a local directory or an
object-store prefix); without one, plain local paths.
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import PurePath

from stroke_dagster.storage import Storage, StoragePath, storage_for

VERSION_SEP = "~"


def version_name(key: str, version: int | None = None) -> str:
    """``<key>~<version>.parquet``; the version defaults to the current time in ns."""
    version = time.time_ns() if version is None else version
    return f"{key}{VERSION_SEP}{version:020d}-{uuid.uuid4().hex[:8]}.parquet"


def sequence_name(key: str, number: int) -> str:
    """``<key>~<number>.parquet``: the name of version ``number``, the same for every writer."""
    return f"{key}{VERSION_SEP}{number:020d}.parquet"


def version_number(path: PurePath) -> int:
    """The version number of a published file's name (either form above)."""
    return int(path.name.split(VERSION_SEP, 1)[1][:20])


def versions(directory: PurePath, key: str, storage: Storage | None = None) -> list[StoragePath]:
    """The published versions of ``key`` in a partition directory, oldest first."""
    files = storage_for(directory, storage).list_files(directory, f"{key}{VERSION_SEP}*.parquet")
    return [item.path for item in files]


def latest_files(directory: PurePath, storage: Storage | None = None) -> list[StoragePath]:
    """The current file of every key of a partition directory."""
    current: dict[str, StoragePath] = {}
    for item in storage_for(directory, storage).list_files(directory, f"*{VERSION_SEP}*.parquet"):
        current[item.name.split(VERSION_SEP, 1)[0]] = item.path
    return sorted(current.values(), key=lambda path: path.name)


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
