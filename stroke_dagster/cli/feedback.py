"""``stroke feedback import FILE``: record a CSV of clinicians' feedback (see
:mod:`stroke_dagster.audit.feedback`); rows naming no known prediction are quarantined with the
reason.
The last stdout line is a JSON summary (``rows_in == recorded + quarantined``).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imported = sub.add_parser("import", help="record a feedback CSV (e.g. feedback/<day>.csv)")
    imported.add_argument("file", help="CSV with a header row (see stroke_dagster.audit.feedback)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stroke_dagster.audit.feedback import import_csv
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.core.settings import load_settings

    if not Path(args.file).is_file():
        raise InputError(f"no such feedback file: {args.file}")
    print(json.dumps(import_csv(args.file, settings=load_settings()).to_dict()))
    return 0
