"""``stroke simulate``: write realistic synthetic patients (CSV or Parquet by suffix).

With ``--date D`` the file is the cohort of day D: no label column, ids ``D`` followed by seven
digits (``202601150000001`` ...) so cohorts of different days never share an id, written by
default to ``STROKE_HOME/incoming/D.csv``; ``--labels`` also writes that day's outcomes to
``STROKE_HOME/labels/D.csv`` (``id,stroke``). The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from stroke_dagster.core.storage import Storage

MAX_COHORT_ROWS = 10_000_000  # ids of a dated cohort are YYYYMMDD + 7 digits


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=_non_negative_int, required=True, help="number of patients")
    parser.add_argument(
        "--seed",
        type=_non_negative_int,
        default=None,
        help="random seed (default 0, or YYYYMMDD of --date)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="file to write (.csv or .parquet); required unless --date is given",
    )
    parser.add_argument(
        "--date",
        type=_date,
        default=None,
        help="write the unlabelled cohort of this day (default output STROKE_HOME/incoming/D.csv)",
    )
    parser.add_argument("--no-label", action="store_true", help="omit the stroke column")
    parser.add_argument(
        "--labels",
        action="store_true",
        help="with --date: also write the day's outcomes to STROKE_HOME/labels/D.csv (id,stroke)",
    )


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    date: dt.date | None = args.date
    if date is None and args.output is None:
        raise InputError("--output is required unless --date is given")
    if date is None and args.labels:
        raise InputError("--labels needs --date")
    settings = load_settings()
    output = args.output if args.output is not None else settings.incoming_dir / f"{date}.csv"
    if isinstance(output, Path) and output.is_dir():
        if date is None:
            raise InputError(f"--output is a directory: {output}")
        output = output / f"{date}.csv"
    if output.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        raise InputError(f"--output must end in .csv or .parquet: {output}")

    if date is not None:
        if args.n >= MAX_COHORT_ROWS:
            raise InputError(f"a dated cohort holds at most {MAX_COHORT_ROWS - 1} rows")
        stamp = int(date.strftime("%Y%m%d"))
        seed = stamp if args.seed is None else args.seed
        id_start = stamp * MAX_COHORT_ROWS + 1
        with_label = False
    else:
        seed = 0 if args.seed is None else args.seed
        id_start = 1
        with_label = not args.no_label

    patients = simulate_patients(args.n, seed=seed, with_label=True, id_start=id_start)
    labels = patients[["id", "stroke"]]
    if not with_label:
        patients = patients.drop(columns="stroke")
    files = settings.files
    _write(write_patients, patients, output, files)
    summary = {"output": str(output), "rows": len(patients), "seed": seed, "with_label": with_label}
    if args.labels:
        labels_path = _write(write_patients, labels, settings.labels_dir / f"{date}.csv", files)
        summary["labels"] = str(labels_path)
    print(json.dumps(summary))
    return 0


def _write(
    write: Callable[[pd.DataFrame, Path], Path], df: pd.DataFrame, target: PurePath, files: Storage
) -> PurePath:
    """Write ``df`` to ``target``: a local path, or a path in object storage (uploaded whole)."""
    from stroke_dagster.core.storage import RemotePath

    if not isinstance(target, RemotePath):
        return write(df, Path(target))
    with files.staged_file(target.suffix) as tmp:
        write(df, tmp)
        files.publish(tmp, target)
    return target
