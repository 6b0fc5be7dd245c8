"""``stroke audit verify [--days N]``: check the hash chains of the prediction audit trail.

Recomputes every chain of ``prediction_audit`` (API records and the chained records of batch score
slices) and every audited slice of ``score_history`` (see :mod:`stroke_dagster.audit.records`).
Exit 0
when all check, 1 naming the first broken record (day, chain, seq and request id, or slice and
patient). The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = sub.add_parser("verify", help="check every chain; exit 1 naming the first break")
    verify.add_argument(
        "--days",
        type=int,
        help="only the N most recent days that have audit records (default: every day kept)",
    )


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.core.errors import InputError

    if args.days is not None and args.days < 1:
        raise InputError(f"--days must be an integer >= 1, got {args.days}")
    from stroke_dagster.audit import records as audit
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.warehouse import store as warehouse

    result = audit.verify(warehouse.of(load_settings()), args.days)
    if result.problem is not None:
        print(f"stroke audit: broken: {result.problem}", file=sys.stderr)
    print(json.dumps(result.to_dict()))
    return 0 if result.problem is None else 1
