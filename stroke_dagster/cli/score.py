"""``stroke score``: score a patient file with a registered model (CSV and/or warehouse day)."""

from __future__ import annotations

import argparse
import json
import re

DEFAULT_MODEL_URI = "models:/StrokeRF@champion"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="patient file (CSV or Parquet, raw schema)")
    parser.add_argument("--output", help="CSV to write: id, stroke_probability, risk_tier")
    parser.add_argument(
        "--cohort-date",
        help="YYYY-MM-DD: replace that day's rows of the warehouse table `scores` (refused for "
        "a day the daily loop manages; reported to the Dagster instance)",
    )
    parser.add_argument(
        "--model-uri",
        default=DEFAULT_MODEL_URI,
        help="models:/StrokeRF@<alias> or models:/StrokeRF/<version> (default: %(default)s)",
    )
    parser.add_argument("--batch-rows", type=int, default=100_000, help=argparse.SUPPRESS)


def parse_model_uri(uri: str) -> str:
    """The registry reference (alias or version number) named by a ``models:/`` URI."""
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.core.settings import MODEL_NAME

    match = _MODEL_URI.match(uri.strip())
    if not match:
        raise InputError(
            f"--model-uri must look like models:/{MODEL_NAME}@champion or "
            f"models:/{MODEL_NAME}/3, got {uri!r}"
        )
    if match["name"] != MODEL_NAME:
        raise InputError(f"unknown model {match['name']!r}: this platform serves {MODEL_NAME}")
    return match["alias"] or match["version"]


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.cli import parse_day
    from stroke_dagster.core.errors import InputError

    if args.output is None and args.cohort_date is None:
        raise InputError("give --output PATH, --cohort-date YYYY-MM-DD, or both")
    cohort_date = parse_day(args.cohort_date, "--cohort-date") if args.cohort_date else None
    reference = parse_model_uri(args.model_uri)

    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.model.store import load_model
    from stroke_dagster.scoring.batch import score_file

    settings = load_settings()
    check = None
    if cohort_date is not None:  # asked of Dagster while the file is scored; before any write
        from stroke_dagster.cli.loop import refuse_managed_day
        from stroke_dagster.scoring.batch import Background

        check = Background(lambda: refuse_managed_day(settings, cohort_date))
    # an alias resolution younger than STROKE_MODEL_ALIAS_TTL is reused from the model cache
    max_age = settings.model_cache.alias_ttl_seconds
    summary = score_file(
        args.input,
        # loaded in the background while the first batch is read and validated
        lambda: load_model(reference, settings=settings, max_age=max_age),
        cohort_date=cohort_date,
        output_csv=args.output,
        batch_rows=args.batch_rows,
        before_write=check.result if check is not None else None,
        settings=settings,
    )
    if cohort_date is not None:
        import sys

        from stroke_dagster.cli.loop import report_scores

        warning = report_scores(settings, summary)
        if warning:
            print(warning, file=sys.stderr)
    print(json.dumps(summary.to_dict()))
    return 0
