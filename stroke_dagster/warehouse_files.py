"""Immutable, versioned files: the naming shared by the warehouse and the telemetry log.

A published file is never modified or renamed over. A new version of ``<key>`` gets a new name,
``<key>~<version>.parquet`` (version: publication time in ns, zero-padded, so names sort by
version); readers take the newest name of each key. A superseded version is deleted once its
successor is older than a grace period, so that a query that listed it can still open it.
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

VERSION_SEP = "~"


def version_name(key: str, version: int | None = None) -> str:
    """``<key>~<version>.parquet``; the version defaults to the current time in ns."""
    version = time.time_ns() if version is None else version
    return f"{key}{VERSION_SEP}{version:020d}-{uuid.uuid4().hex[:8]}.parquet"


def versions(directory: Path, key: str) -> list[Path]:
    """The published versions of ``key`` in a partition directory, oldest first."""
    return sorted(directory.glob(f"{key}{VERSION_SEP}*.parquet"))


def latest_files(directory: Path) -> list[Path]:
    """The current file of every key of a partition directory."""
    current: dict[str, Path] = {}
    for path in sorted(directory.glob(f"*{VERSION_SEP}*.parquet")):
        current[path.name.split(VERSION_SEP, 1)[0]] = path
    return sorted(current.values())


def remove_superseded(directory: Path, key: str, grace_seconds: float) -> int:
    """Delete versions whose successor was published more than ``grace_seconds`` ago."""
    found = versions(directory, key)
    removed = 0
    now = time.time()
    for old, successor in itertools.pairwise(found):
        try:
            if successor.stat().st_mtime < now - grace_seconds:
                old.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
