"""``stroke recalibrate``: fit, register, gate and document a site recalibration of the champion."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--days",
        default=None,
        help="comma-separated cohort days YYYY-MM-DD (default: every labelled day under "
        "STROKE_HOME: incoming/D.* joined with labels/D.csv on id)",
    )
    parser.add_argument(
        "--min-events", type=int, default=None, help="fewest strokes to recalibrate (default 20)"
    )
    parser.add_argument(
        "--slope-min-events",
        type=int,
        default=None,
        help="fewest strokes to fit a slope as well as an intercept (default 100)",
    )


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.cli import parse_day
    from stroke_dagster.clinical.recalibration import RecalibrationConfig
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.model.recalibrate import run_recalibration

    days = None
    if args.days:
        days = [parse_day(d.strip(), "--days") for d in args.days.split(",") if d.strip()]
    defaults = RecalibrationConfig()
    try:
        config = RecalibrationConfig(
            min_events=args.min_events or defaults.min_events,
            slope_min_events=args.slope_min_events or defaults.slope_min_events,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    settings = load_settings()
    settings.ensure_dirs()
    summary = run_recalibration(settings, days, config)
    sys.stdout.flush()
    print(json.dumps(summary, default=str))
    return 0
