"""The ``stroke`` command line: one sub-module per command, each imported only when it runs.

A command module defines ``add_arguments(parser)`` (cheap: no heavy imports at module level) and
``run(args) -> int``. An :class:`~stroke_dagster.core.errors.InputError` becomes one stderr line
and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "simulate": "Write synthetic patients in the raw schema.",
    "train": "Validate, tune, evaluate, register and gate a model.",
    "score": "Score a patient file with the champion model.",
    "drift": "Check patient files for drift against the champion's reference data.",
    "serve": "Run the online scoring API.",
    "recalibrate": "Recalibrate the champion on labelled site patients; register and gate it.",
    "rollback": "Point the champion alias back at an earlier version (with the reason).",
    "model-card": "Print a model version's generated model card.",
    "sql": "Run SQL on the warehouse (read-only; never waits for the pipeline).",
    "warehouse": "Warehouse maintenance: migrate, compact-telemetry, info.",
    "audit": "Verify the hash chains of the prediction audit trail.",
    "feedback": "Record clinicians' feedback on flagged patients from a CSV.",
}


def parse_day(text: str, option: str) -> str:
    """``YYYY-MM-DD`` of an option's value, or an :class:`InputError` naming the option."""
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.io.arrivals import parse_day as strict_day

    day = strict_day(text.strip())
    if day is None:
        raise InputError(f"{option} must be a date YYYY-MM-DD, got {text!r}")
    return day


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stroke", description="Stroke-risk scoring platform.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"stroke_dagster.cli.{name.replace('-', '_')}")
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from stroke_dagster.core.errors import InputError, RegistryUnavailableError

    module = importlib.import_module(f"stroke_dagster.cli.{args.command.replace('-', '_')}")
    try:
        return int(module.run(args) or 0)
    except InputError as exc:
        print(f"stroke {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RegistryUnavailableError as exc:
        print(f"stroke {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# Commands whose process leaves at once when done (see :func:`leave`).
QUICK_EXIT = {"score"}


def run() -> None:
    """The ``stroke`` console script: :func:`main`, then :func:`leave`."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT:
        leave(code)
    sys.exit(code)


def leave(code: int) -> None:
    """Flush and end the process without the interpreter's teardown.

    After ``stroke score`` every result is committed (warehouse) or renamed into place (CSV)
    and the streams are flushed here, so the second or so the interpreter spends freeing a
    million rows' worth of objects and tearing down pyarrow, pandas and Dagster buys nothing.
    """
    import logging
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
