"""``stroke train``: the Dagster ``training_job`` in-process (validate, tune, evaluate, register,
gate), recorded in the Dagster instance under ``DAGSTER_HOME`` (``make run`` runs it).

Stdout ends with a short human summary (the gate's outcome, the champion, real or synthetic
training data, where the state lives, what to run next) followed by one JSON line, the last line,
that scripts and tests parse."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="labelled patients (CSV or Parquet, raw schema); default: the file at "
        "STROKE_RAW_CSV (default STROKE_HOME/raw/healthcare-dataset-stroke-data.csv) or, when it "
        "does not exist and STROKE_ALLOW_SYNTHETIC is on, synthetic patients",
    )
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials (default 16)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of CV and search (holdout: fixed per id)",
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="share of patients (chosen by a hash of the id) kept out for evaluation",
    )
    parser.add_argument(
        "--auc-floor",
        type=float,
        default=None,
        help="holdout ROC AUC the champion gate requires (default STROKE_GATE_AUC_FLOOR or 0.70)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="allowed AUC drop versus the current champion (default STROKE_GATE_TOLERANCE or 0.01)",
    )


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.core.settings import load_settings

    if args.trials is not None and args.trials < 1:
        raise InputError("--trials must be at least 1")
    if not 0.0 < args.holdout_fraction < 1.0:
        raise InputError("--holdout-fraction must be between 0 and 1")
    settings = load_settings()
    gate = {
        "auc_floor": settings.gate.auc_floor if args.auc_floor is None else args.auc_floor,
        "tolerance": settings.gate.tolerance if args.tolerance is None else args.tolerance,
    }
    settings = settings.replace(gate=gate)
    from stroke_dagster.defs.training_command import describe, run_training

    summary = run_training(
        args.data,
        settings=settings,
        n_trials=args.trials,
        seed=args.seed,
        holdout_fraction=args.holdout_fraction,
    )
    sys.stdout.flush()
    print("\n".join(describe(summary, settings)))
    print(json.dumps(summary, default=str))  # the last line: machine-readable
    return 0
