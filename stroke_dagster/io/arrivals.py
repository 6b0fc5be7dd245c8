"""Which day files are waiting in a drop directory, and which are skipped and why.

A day's file is ``<dir>/<YYYY-MM-DD><suffix>``. Its version is a hash of its modification time and
size (of its ETag in object storage), so a replaced file is a new version and an untouched one is
not. The directory is one of the platform's file storage (:mod:`stroke_dagster.core.storage`).
Files that
cannot be a day's file (bad name, wrong suffix, a day outside ``first_day``..``last_day``) are
listed with their reason instead of raising, so one bad file never holds back the others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from stroke_dagster.core.storage import Storage, StoragePath, storage_for


@dataclass(frozen=True)
class DayFile:
    """The file holding one day's data and its version."""

    day: str
    path: StoragePath
    version: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Scan:
    """The day files of a directory (one per day, oldest first) and the skipped names."""

    files: list[DayFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> reason


def parse_day(text: str) -> str | None:
    """``text`` if it is a date spelled exactly ``YYYY-MM-DD``, else ``None``.

    Stricter than :meth:`datetime.date.fromisoformat`, which also accepts ``2026-W10-1`` or
    ``20260302``: a day's name must read back as the day it stands for.
    """
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return None
    return text if day.isoformat() == text else None


def file_version(path: Path, storage: Storage | None = None) -> tuple[str, int, int]:
    """``(version, size, mtime_ns)``: the version hashes modification time and size (ETag)."""
    info = storage_for(path, storage).info(path)
    if info is None:
        raise FileNotFoundError(str(path))
    return info.version, info.size, info.mtime_ns


def scan(
    directory: PurePath,
    suffixes: Sequence[str],
    *,
    first_day: dt.date,
    last_day: dt.date,
    storage: Storage | None = None,
) -> Scan:
    """The day files in ``directory``; when a day has several suffixes, the first one wins.

    One listing gives every file's size and version (no further request per file).
    """
    result = Scan()
    chosen: dict[str, DayFile] = {}
    for info in storage_for(directory, storage).list_files(directory):
        path = info.path
        name = path.name
        if path.suffix.lower() not in suffixes:
            result.skipped[name] = f"not a {' or '.join(suffixes)} file"
            continue
        if parse_day(path.stem) is None:
            result.skipped[name] = "name is not a day (expected YYYY-MM-DD" + path.suffix + ")"
            continue
        day = dt.date.fromisoformat(path.stem)
        if day > last_day:
            result.skipped[name] = f"dated in the future (last open day is {last_day})"
            continue
        if day < first_day:
            result.skipped[name] = f"dated before the go-live day {first_day} (set STROKE_GO_LIVE)"
            continue
        key = day.isoformat()
        previous = chosen.get(key)
        rank = list(suffixes).index(path.suffix.lower())
        if previous is not None and list(suffixes).index(previous.path.suffix.lower()) <= rank:
            result.skipped[name] = f"{previous.path.name} is the file of {key}"
            continue
        if previous is not None:
            result.skipped[previous.path.name] = f"{name} is the file of {key}"
        chosen[key] = DayFile(
            day=key, path=path, version=info.version, size=info.size, mtime_ns=info.mtime_ns
        )
    result.files.extend(chosen[key] for key in sorted(chosen))
    return result
