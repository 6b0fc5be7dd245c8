"""``stroke drift``: check patient files for drift against the champion's reference data.

One JSON object per input on its own stdout line. The champion's fitted detector is loaded once,
so a call with a hundred inputs costs one model lookup plus a few tens of milliseconds per file.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="PATH",
        help="patient file (CSV or Parquet, raw schema); repeat for several files",
    )
    parser.add_argument(
        "--cohort-date",
        help="YYYY-MM-DD: also write the result as that day's rows of drift_metrics/drift_summary "
        "(one --input only; the day's scores add prediction drift)",
    )
    parser.add_argument(
        "--backend",
        choices=("alibi", "scipy"),
        help="test engine (default: STROKE_DRIFT_BACKEND or alibi)",
    )


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    from pathlib import Path

    from stroke_dagster.errors import InputError

    cohort_date = None
    if args.cohort_date:
        try:
            cohort_date = dt.date.fromisoformat(args.cohort_date).isoformat()
        except ValueError:
            raise InputError(
                f"--cohort-date must be YYYY-MM-DD, got {args.cohort_date!r}"
            ) from None
        if len(args.input) != 1:
            raise InputError("--cohort-date takes exactly one --input (the cohort of that day)")
    for path in args.input:  # fail before the (slow) detector load
        if not Path(path).is_file():
            raise InputError(f"input file not found: {path}")

    from stroke_dagster.drift import DriftConfig
    from stroke_dagster.drift.daily import day_predictions, read_valid_rows, write_report
    from stroke_dagster.drift.store import detector_for_model

    config = DriftConfig.from_env(backend=args.backend)
    loaded = detector_for_model(config=config)
    for path in args.input:
        cohort, rows_in = read_valid_rows(path)
        predictions = None
        if cohort_date:
            predictions, _ = day_predictions(cohort_date, loaded.version)
        report = loaded.detector.check(
            cohort, predictions if predictions is not None and not predictions.empty else None
        )
        if cohort_date:
            write_report(cohort_date, report)
        line = {"input": path, **report.to_json(), "rows_in": rows_in}
        if cohort_date:
            line["cohort_date"] = cohort_date
        print(json.dumps(line), flush=True)
    return 0
