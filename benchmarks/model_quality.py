"""Model quality on the real data: repeated stratified nested CV, plus the cost of `stroke train`.

Protocol: ``--repeats`` x stratified ``--folds``-fold outer CV on the labelled file at
``STROKE_RAW_CSV``. Inside each outer training fold the model is tuned exactly as ``stroke train``
tunes it by default (same trials, inner CV folds, search space and calibration constraint), refit
on the whole outer training fold and scored on the outer test fold. A logistic regression with the
same preprocessing is scored on the same outer folds as an anchor. Risk-tier thresholds chosen on
the inner out-of-fold predictions are applied to the outer test fold (sensitivity/specificity).

Finally one default ``stroke train`` is run as a subprocess (process start included) in a
temporary STROKE_HOME, and its wall time is reported.

    STROKE_RAW_CSV=/path/to/healthcare-dataset-stroke-data.csv \
        .venv/bin/python benchmarks/model_quality.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stroke_dagster.core.features import ONE_HOT_FEATURES, SCALED_FEATURES, feature_frame
from stroke_dagster.core.schema import TARGET
from stroke_dagster.io.readers import read_patient_file
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model import training

TARGETS = {"roc_auc": (">=", 0.845), "brier": ("<=", 0.0425), "train_seconds": ("<=", 90.0)}


def logistic_anchor() -> Pipeline:
    """Logistic regression on the same preprocessing as the forest."""
    preprocess = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                list(SCALED_FEATURES),
            ),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(ONE_HOT_FEATURES)),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("model", LogisticRegression(max_iter=2000))])


def scores(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": roc_auc_score(y, prob),
        "pr_auc": average_precision_score(y, prob),
        "brier": brier_score_loss(y, prob),
    }


def nested_cv(
    df: pd.DataFrame, repeats: int, folds: int, n_trials: int, cv_folds: int
) -> pd.DataFrame:
    y = df[TARGET].to_numpy(dtype=int)
    outer = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=0)
    rows = []
    for index, (fit_idx, test_idx) in enumerate(outer.split(df, y)):
        started = time.perf_counter()
        fit_df, test_df = df.iloc[fit_idx].reset_index(drop=True), df.iloc[test_idx]
        y_test = y[test_idx]
        tuned = training.tune(
            fit_df, n_trials=n_trials, seed=index, cv_folds=cv_folds, log_trials=False
        )
        forest = training.fit_final(fit_df, tuned.best_params)
        prob = forest.predict_proba(feature_frame(test_df))[:, 1]
        thresholds = tuned.thresholds
        high, elevated = prob >= thresholds.high, prob >= thresholds.elevated
        anchor = logistic_anchor().fit(feature_frame(fit_df), y[fit_idx])
        prob_lr = anchor.predict_proba(feature_frame(test_df))[:, 1]
        row = {
            "fold": index,
            **{f"rf_{k}": v for k, v in scores(y_test, prob).items()},
            **{f"lr_{k}": v for k, v in scores(y_test, prob_lr).items()},
            "rf_inner_cv_auc": tuned.cv_roc_auc,
            "sens_high": high[y_test == 1].mean(),
            "spec_high": (~high[y_test == 0]).mean(),
            "sens_elevated": elevated[y_test == 1].mean(),
            "spec_elevated": (~elevated[y_test == 0]).mean(),
            "share_high": high.mean(),
            "class_weight": str(tuned.best_params["class_weight"]),
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        print(
            f"  outer fold {index + 1:2d}/{repeats * folds}: RF AUC {row['rf_roc_auc']:.4f} "
            f"Brier {row['rf_brier']:.4f} | LR AUC {row['lr_roc_auc']:.4f} | "
            f"{row['seconds']:.0f}s",
            flush=True,
        )
    return pd.DataFrame(rows)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_default_train(csv: Path) -> tuple[float, dict, float]:
    """Wall time of one default ``stroke train`` subprocess in a fresh STROKE_HOME."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STROKE_HOME": home, "DAGSTER_HOME": str(Path(home) / "dagster")}
        env.pop("MLFLOW_TRACKING_URI", None)
        script = Path(sys.executable).with_name("stroke")
        command = [str(script), "train", "--data", str(csv)]
        cpu_before = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        cpu_seconds = _children_cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"stroke train failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1]), cpu_seconds


def mean_sd(values: pd.Series) -> str:
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f} (median {values.median():.4f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=training.DEFAULT_N_TRIALS)
    parser.add_argument("--cv-folds", type=int, default=training.DEFAULT_CV_FOLDS)
    parser.add_argument("--skip-train-timing", action="store_true")
    args = parser.parse_args()

    csv = Path(os.environ.get("STROKE_RAW_CSV", ""))
    if not csv.is_file():
        raise SystemExit("set STROKE_RAW_CSV to the Kaggle stroke CSV")
    df = validate_patients(read_patient_file(csv), require_label=True).valid
    print(
        f"data: {len(df)} patients, {int(df[TARGET].sum())} strokes; cores: {os.cpu_count()}; "
        f"load average at start: {os.getloadavg()[0]:.1f}"
    )
    print(
        f"protocol: {args.repeats}x stratified {args.folds}-fold nested CV; inner: "
        f"{args.trials} Optuna trials x {args.cv_folds}-fold CV (the `stroke train` defaults)"
    )

    train_seconds = None
    if not args.skip_train_timing:
        load = os.getloadavg()[0]
        train_seconds, summary, cpu_seconds = time_default_train(csv)
        print(
            f"one default `stroke train` (subprocess, process start included): "
            f"{train_seconds:.1f} s wall, {cpu_seconds:.1f} s CPU (load average before: "
            f"{load:.1f}); holdout ROC AUC {summary['holdout_roc_auc']}, "
            f"Brier {summary['holdout_brier']}, CV ROC AUC {summary['cv_roc_auc']}",
            flush=True,
        )

    started = time.perf_counter()
    table = nested_cv(df, args.repeats, args.folds, args.trials, args.cv_folds)
    print(f"nested CV wall time: {time.perf_counter() - started:.0f} s")
    print("\nresults over outer folds (mean ± sd):")
    for metric in ("roc_auc", "pr_auc", "brier"):
        rf, lr = mean_sd(table[f"rf_{metric}"]), mean_sd(table[f"lr_{metric}"])
        print(f"  {metric:8s} RF {rf}   LR {lr}")
    print(
        f"  RF inner-CV AUC of the chosen trial (optimistic): {table['rf_inner_cv_auc'].mean():.4f}"
    )
    print(
        "  risk tiers on outer test folds: high  sensitivity "
        f"{mean_sd(table['sens_high'])}, specificity {mean_sd(table['spec_high'])}, "
        f"share flagged {table['share_high'].mean():.3f}"
    )
    print(
        "                                  elevated+ sensitivity "
        f"{mean_sd(table['sens_elevated'])}, specificity {mean_sd(table['spec_elevated'])}"
    )
    print(f"  chosen class_weight: {table['class_weight'].value_counts().to_dict()}")
    ratio = table["rf_roc_auc"].mean() - table["lr_roc_auc"].mean()
    print(f"  RF - LR mean ROC AUC: {ratio:+.4f}")

    measured = {"roc_auc": table["rf_roc_auc"].mean(), "brier": table["rf_brier"].mean()}
    if train_seconds is not None:
        measured["train_seconds"] = train_seconds
    print("\ntargets:")
    for name, value in measured.items():
        op, goal = TARGETS[name]
        ok = value >= goal if op == ">=" else value <= goal
        print(f"  {name:13s} {value:.4f} {op} {goal}: {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
