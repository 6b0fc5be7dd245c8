"""Which day files are waiting in a drop directory, and which are skipped and why.

A day's file is ``<dir>/<YYYY-MM-DD><suffix>``. Its version is a hash of its modification time and
size, so a replaced file is a new version and an untouched one is not. Files that cannot be a
day's file (bad name, wrong suffix, a day outside ``first_day``..``last_day``) are listed with
their reason instead of raising, so one bad file never holds back the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DayFile:
    """The file holding one day's data and its version."""

    day: str
    path: Path
    version: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Scan:
    """The day files of a directory (one per day, oldest first) and the skipped names."""

    files: list[DayFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> reason


def file_version(path: Path) -> tuple[str, int, int]:
    """``(version, size, mtime_ns)``: the version hashes modification time and size."""
    stat = path.stat()
    digest = hashlib.sha1(f"{stat.st_mtime_ns}:{stat.st_size}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:16], stat.st_size, stat.st_mtime_ns


def scan(
    directory: Path, suffixes: Sequence[str], *, first_day: dt.date, last_day: dt.date
) -> Scan:
    """The day files in ``directory``; when a day has several suffixes, the first one wins."""
    result = Scan()
    if not directory.is_dir():
        return result
    chosen: dict[str, DayFile] = {}
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes:
            result.skipped[name] = f"not a {' or '.join(suffixes)} file"
            continue
        try:
            day = dt.date.fromisoformat(path.stem)
        except ValueError:
            result.skipped[name] = "name is not a day (expected YYYY-MM-DD" + path.suffix + ")"
            continue
        if len(path.stem) != 10:
            result.skipped[name] = "name is not a day (expected YYYY-MM-DD" + path.suffix + ")"
            continue
        if day > last_day:
            result.skipped[name] = f"dated in the future (last open day is {last_day})"
            continue
        if day < first_day:
            result.skipped[name] = f"dated before the first day {first_day}"
            continue
        key = day.isoformat()
        previous = chosen.get(key)
        rank = list(suffixes).index(path.suffix.lower())
        if previous is not None and list(suffixes).index(previous.path.suffix.lower()) <= rank:
            result.skipped[name] = f"{previous.path.name} is the file of {key}"
            continue
        if previous is not None:
            result.skipped[previous.path.name] = f"{name} is the file of {key}"
        try:
            version, size, mtime = file_version(path)
        except FileNotFoundError:  # removed while scanning
            continue
        chosen[key] = DayFile(day=key, path=path, version=version, size=size, mtime_ns=mtime)
    result.files.extend(chosen[key] for key in sorted(chosen))
    return result
