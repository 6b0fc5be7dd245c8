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
        default=[],
        metavar="PATH",
        help="patient file (CSV or Parquet, raw schema); repeat for several files",
    )
    parser.add_argument(
        "--online-date",
        action="append",
        default=[],
        metavar="YYYY-MM-DD",
        help="also check the patients the API scored that UTC day (needs the service to run "
        "with STROKE_TELEMETRY_FEATURES=1; off by default for privacy); repeatable",
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
    from pathlib import Path

    from stroke_dagster.cli import parse_day
    from stroke_dagster.core.errors import InputError

    if not args.input and not args.online_date:
        raise InputError("give at least one --input PATH or --online-date YYYY-MM-DD")
    online_days = [parse_day(day, "--online-date") for day in args.online_date]
    cohort_date = None
    if args.cohort_date:
        cohort_date = parse_day(args.cohort_date, "--cohort-date")
        if len(args.input) != 1:
            raise InputError("--cohort-date takes exactly one --input (the cohort of that day)")
    for path in args.input:  # fail before the (slow) detector load
        if not Path(path).is_file():
            raise InputError(f"input file not found: {path}")

    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.monitoring.drift.daily import day_predictions, read_valid_rows, write_report
    from stroke_dagster.monitoring.drift.store import detector_for_model

    settings = load_settings()
    config = settings.drift.with_backend(args.backend)
    loaded = detector_for_model(config=config, settings=settings)
    for day in online_days:
        from stroke_dagster.warehouse.telemetry import request_cohort

        cohort = request_cohort(settings, day)
        if cohort.empty:
            raise InputError(
                f"no online patients recorded for {day}: the API keeps them only with "
                "STROKE_TELEMETRY_FEATURES=1"
            )
        report = loaded.detector.check(cohort, None)
        line = {"input": f"online:{day}", **report.to_json(), "rows_in": len(cohort)}
        print(json.dumps(line), flush=True)
    for path in args.input:
        cohort, rows_in = read_valid_rows(path)
        predictions = None
        if cohort_date:
            predictions, _ = day_predictions(cohort_date, loaded.version, settings)
        report = loaded.detector.check(
            cohort, predictions if predictions is not None and not predictions.empty else None
        )
        if cohort_date:
            write_report(cohort_date, report, settings=settings)
        line = {"input": path, **report.to_json(), "rows_in": rows_in}
        if cohort_date:
            line["cohort_date"] = cohort_date
        print(json.dumps(line), flush=True)
    return 0
