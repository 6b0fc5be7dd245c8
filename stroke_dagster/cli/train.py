"""``stroke train``: validate, tune, evaluate, register and gate a model on a labelled file."""

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
        "STROKE_RAW_CSV, or synthetic patients (with a warning) when it does not exist",
    )
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, CV and search")
    parser.add_argument(
        "--holdout-fraction", type=float, default=0.2, help="share kept out for evaluation"
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
    from stroke_dagster.errors import InputError
    from stroke_dagster.settings import get_settings

    if args.trials is not None and args.trials < 1:
        raise InputError("--trials must be at least 1")
    if not 0.0 < args.holdout_fraction < 1.0:
        raise InputError("--holdout-fraction must be between 0 and 1")
    from stroke_dagster.training_run import run_training

    data, source = args.data, None
    if data is None:
        from stroke_dagster.training_data import load_raw_training_data

        raw = load_raw_training_data(get_settings(), seed=args.seed)
        data, source = raw.frame, raw.source
    summary = run_training(
        data,
        source=source,
        n_trials=args.trials,
        seed=args.seed,
        holdout_fraction=args.holdout_fraction,
        auc_floor=args.auc_floor,
        tolerance=args.tolerance,
    )
    sys.stdout.flush()
    print(json.dumps(summary, default=str))
    return 0
