"""Site recalibration and the calibration-aware gate on a low-prevalence site.

A site population is simulated (``stroke_dagster.simulate.generator``) with each stroke kept with
probability 1/3, so its stroke rate is about a third of the training data's. A champion is trained
on the real Kaggle file (``STROKE_RAW_CSV``; ``stroke train``'s code, ``--trials`` Optuna
trials) in a temporary STROKE_HOME.

1. End to end: labelled site days are written to ``incoming/`` + ``labels/`` (enough that the fit
   part holds about ``--fit-patients``), ``run_recalibration`` fits, registers, gates and
   documents. Then on ``--eval-patients`` other site patients: mean predicted risk vs observed
   rate, ROC AUC of champion and recalibrated version.
   Target: mean predicted within 20 % of observed, AUC unchanged (+-0.005).
2. The gate: a second recalibration on the same days (no better) must stay challenger; the
   original forest judged against the recalibrated champion on unseen patients must be refused.
3. Repeats: the core fit on ``--repeats`` fresh site samples of ``--fit-patients`` patients each,
   to show how often the 20 % target holds, not just once.

    STROKE_RAW_CSV=/path/to/healthcare-dataset-stroke-data.csv \
        .venv/bin/python benchmarks/recalibration.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from stroke_dagster.core.features import feature_frame
from stroke_dagster.simulate.generator import simulate_patients

KEEP_POSITIVE = 1 / 3


def site_patients(n: int, seed: int, id_start: int = 1) -> pd.DataFrame:
    """About ``n`` site patients: simulated, each stroke kept with probability 1/3."""
    df = simulate_patients(int(n * 1.02), seed=seed, id_start=id_start)
    keep = np.random.default_rng(10_000 + seed).random(len(df)) < KEEP_POSITIVE
    df = df[(df["stroke"] == 0) | keep].head(n)
    return df.reset_index(drop=True)


def write_days(home: Path, df: pd.DataFrame, n_days: int) -> list[str]:
    days = []
    for i, part in enumerate(np.array_split(df, n_days)):
        day = f"2026-03-{i + 1:02d}"
        part.drop(columns=["stroke"]).to_csv(home / "incoming" / f"{day}.csv", index=False)
        part[["id", "stroke"]].to_csv(home / "labels" / f"{day}.csv", index=False)
        days.append(day)
    return days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--fit-patients", type=int, default=5000)
    parser.add_argument("--eval-patients", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    raw = os.environ.get("STROKE_RAW_CSV", "")
    if not Path(raw).is_file():
        raise SystemExit("set STROKE_RAW_CSV to the Kaggle stroke CSV")

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["STROKE_HOME"] = str(home)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from stroke_dagster.clinical.recalibration import (
            RecalibrationConfig,
            recalibrate,
        )
        from stroke_dagster.core.settings import load_settings
        from stroke_dagster.defs.training_command import run_training
        from stroke_dagster.model import registry
        from stroke_dagster.model.recalibrate import run_recalibration

        settings = load_settings()
        settings.ensure_dirs()
        started = time.perf_counter()
        trained = run_training(Path(raw), settings=settings, n_trials=args.trials, seed=0)
        print(
            f"champion v{trained['version']} trained in {time.perf_counter() - started:.0f} s; "
            f"holdout ROC AUC {trained['holdout_roc_auc']}"
        )
        config = RecalibrationConfig()
        n_labelled = int(round(args.fit_patients / (1 - config.judge_fraction)))
        labelled = site_patients(n_labelled, seed=1, id_start=1)
        days = write_days(home, labelled, 10)
        started = time.perf_counter()
        summary = run_recalibration(settings, None, config)
        seconds = time.perf_counter() - started
        print("\n== 1. end to end (stroke recalibrate's code)")
        print(
            json.dumps(
                {
                    k: summary[k]
                    for k in (
                        "version",
                        "alias",
                        "method",
                        "n_patients",
                        "n_events",
                        "intercept",
                        "slope",
                        "n_fit",
                        "n_fit_events",
                        "n_judge",
                        "n_judge_events",
                    )
                }
            )
        )
        print(f"gate reason: {summary['reason']}")
        print(f"recalibration run (fit + register + gate + document): {seconds:.1f} s")

        registry.clear_cache()
        old = registry.load_model(trained["version"], settings=settings)
        new = registry.load_model(summary["version"], settings=settings)
        other = site_patients(args.eval_patients, seed=2, id_start=10_000_000)
        y = other["stroke"].to_numpy()
        p_old, p_new = old.predict_proba(other), new.predict_proba(other)
        obs = y.mean()
        auc_old, auc_new = roc_auc_score(y, p_old), roc_auc_score(y, p_new)
        print(
            f"site stroke rate {obs:.4f} observed on {len(y)} other "
            f"site patients ({int(y.sum())} strokes)"
        )
        print(
            f"champion:     mean predicted {p_old.mean():.4f}  ratio to observed "
            f"{p_old.mean() / obs:.3f}  ROC AUC {auc_old:.4f}"
        )
        print(
            f"recalibrated: mean predicted {p_new.mean():.4f}  ratio to observed "
            f"{p_new.mean() / obs:.3f}  ROC AUC {auc_new:.4f}"
        )
        ok_mean = abs(p_new.mean() / obs - 1) <= 0.20
        ok_auc = abs(auc_new - auc_old) <= 0.005
        print(
            f"TARGET mean within 20%: {'MET' if ok_mean else 'MISSED'}; "
            f"AUC within 0.005: {'MET' if ok_auc else 'MISSED'} ({auc_new - auc_old:+.6f})"
        )

        print("\n== 2. gate")
        again = run_recalibration(settings, days, config)
        print(f"second recalibration on the same days -> {again['alias']}: {again['reason']}")
        from stroke_dagster.model import gate

        def judged(candidate, champion, criteria):  # noqa: ANN001, ANN202
            evidence = gate.Evidence(
                y, candidate, champion, settings.gate, "new", summary["version"], "benchmark"
            )
            return gate.judge(evidence, criteria)

        worse = judged(p_old, p_new, gate.DEFAULT_CRITERIA)
        print(
            f"gate (default criteria): original forest as candidate vs recalibrated champion on "
            f"{len(y)} unseen site patients -> {worse.alias}: {worse.reason}"
        )
        better = judged(p_new, p_old, gate.RECALIBRATION_CRITERIA)
        print(f"gate (recalibration criteria): recalibrated vs original -> {better.alias}")

        print(f"\n== 3. {args.repeats} repeats of the core fit ({args.fit_patients} fit patients)")
        base = old.pipeline
        ratios, aucs, methods = [], [], []
        x_other = feature_frame(other)
        p_base = base.predict_proba(x_other)[:, 1]
        for r in range(args.repeats):
            sample = site_patients(n_labelled, seed=100 + r, id_start=1)
            fit = recalibrate(base, sample, config)
            q = fit.model.transform_probability(p_base)
            ratios.append(q.mean() / obs)
            aucs.append(roc_auc_score(y, q) - auc_old)
            methods.append(fit.method)
        ratios = np.asarray(ratios)
        within = np.mean(np.abs(ratios - 1) <= 0.2)
        print(
            f"mean predicted / observed: median {np.median(ratios):.3f}, "
            f"min {ratios.min():.3f}, max {ratios.max():.3f}; within 20% in "
            f"{within:.0%} of repeats; methods {dict(pd.Series(methods).value_counts())}"
        )
        print(f"AUC change: max |delta| {np.max(np.abs(aucs)):.2e}")


if __name__ == "__main__":
    main()
