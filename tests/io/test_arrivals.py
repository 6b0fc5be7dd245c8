"""Which files of a drop directory are day files, and why the others are skipped."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from stroke_dagster.io.arrivals import scan

TODAY = dt.date(2026, 3, 10)
BOUNDS = {"first_day": dt.date(2026, 1, 1), "last_day": TODAY}
SUFFIXES = (".csv", ".parquet")


def touch(directory: Path, name: str, text: str = "id\n1\n") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_day_files_are_listed_and_the_others_skipped_with_a_reason(tmp_path: Path) -> None:
    for name in (
        "2026-03-09.csv",
        "2026-03-10.csv",
        "2026-03-11.csv",
        "cohort.csv",
        "2026-3-1.csv",
        "2026-03-08.txt",
        "2025-12-31.csv",
        ".2026-03-07.csv",
    ):
        touch(tmp_path, name)
    result = scan(tmp_path, SUFFIXES, **BOUNDS)
    assert [f.day for f in result.files] == ["2026-03-09", "2026-03-10"]
    assert result.skipped["2026-03-11.csv"] == "dated in the future (last open day is 2026-03-10)"
    assert result.skipped["cohort.csv"].startswith("name is not a day")
    assert result.skipped["2026-3-1.csv"].startswith("name is not a day")
    assert result.skipped["2026-03-08.txt"] == "not a .csv or .parquet file"
    assert "before the go-live day" in result.skipped["2025-12-31.csv"]
    assert ".2026-03-07.csv" not in result.skipped  # hidden files (partial copies) are ignored


def test_version_changes_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = touch(tmp_path, "2026-03-09.csv")
    (first,) = scan(tmp_path, SUFFIXES, **BOUNDS).files
    (same,) = scan(tmp_path, SUFFIXES, **BOUNDS).files
    path.write_text("id\n1\n2\n")
    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    (replaced,) = scan(tmp_path, SUFFIXES, **BOUNDS).files
    assert first.version == same.version != replaced.version


def test_csv_wins_over_parquet_of_the_same_day(tmp_path: Path) -> None:
    touch(tmp_path, "2026-03-09.parquet")
    touch(tmp_path, "2026-03-09.csv")
    result = scan(tmp_path, SUFFIXES, **BOUNDS)
    assert [f.path.name for f in result.files] == ["2026-03-09.csv"]
    assert result.skipped == {"2026-03-09.parquet": "2026-03-09.csv is the file of 2026-03-09"}


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    result = scan(tmp_path / "absent", SUFFIXES, **BOUNDS)
    assert result.files == [] and result.skipped == {}
