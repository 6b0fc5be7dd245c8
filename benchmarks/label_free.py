"""Label-free (CBPE-style) performance estimates against the realized figures, per simulated day.

A forest with ``stroke train``'s default configuration is fit on the Kaggle file
(``STROKE_RAW_CSV``). Days of ``--day-size`` simulated patients are scored and, from the
probabilities alone, get an expected ROC AUC and expected stroke rate; the realized figures come
from the simulated outcomes. Scenarios (``--days`` days each):

- ``none``: the simulator as fitted to the Kaggle data;
- ``older``: covariate shift - the age histogram tilted towards older patients;
- ``prevalence/3``: the outcome model's intercept lowered so strokes are a third as frequent
  (the external-site situation), scored by the uncorrected forest;
- ``prevalence/3 recalibrated``: the same days scored after an intercept recalibration fit on
  5,000 labelled patients of the same population.

Reported per scenario: mean realized AUC, mean absolute error and bias of the expected AUC, the
sampling SD of the realized AUC across days (the floor any estimate faces), and the error of the
expected observed rate.

    STROKE_RAW_CSV=/path/to/healthcare-dataset-stroke-data.csv \
        .venv/bin/python benchmarks/label_free.py
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from stroke_dagster.clinical.recalibration import INTERCEPT, compose, fit_recalibration
from stroke_dagster.core.features import feature_frame
from stroke_dagster.io.readers import read_patient_file
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model.training import DEFAULT_PARAMS, build_pipeline
from stroke_dagster.monitoring import label_free
from stroke_dagster.simulate.generator import load_params, simulate_patients


def older(params: dict) -> dict:
    age = params["age"]
    n = len(age["weights"])
    centers = age["start"] + age["bin_width"] * (np.arange(n) + 0.5)
    tilted = np.asarray(age["weights"], dtype=float) * np.exp(0.02 * (centers - 45.0))
    age["weights"] = (tilted / tilted.sum()).tolist()
    return params


def rarer(params: dict) -> dict:
    params["models"]["stroke"]["intercept"] += float(np.log(1 / 3))
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--day-size", type=int, default=3000)
    args = parser.parse_args()
    raw = os.environ.get("STROKE_RAW_CSV", "")
    if not Path(raw).is_file():
        raise SystemExit("set STROKE_RAW_CSV to the Kaggle stroke CSV")
    train = validate_patients(read_patient_file(raw), require_label=True).valid
    pipe = build_pipeline({**DEFAULT_PARAMS, "n_jobs": 1}).fit(
        feature_frame(train), train["stroke"]
    )
    calib = simulate_patients(5000, seed=999, params=rarer(load_params()))
    intercept, slope = fit_recalibration(
        pipe.predict_proba(feature_frame(calib))[:, 1], calib["stroke"].to_numpy(), INTERCEPT
    )
    recalibrated = compose(pipe, intercept, slope)
    scenarios = {
        "none": (load_params(), pipe),
        "older": (older(load_params()), pipe),
        "prevalence/3": (rarer(load_params()), pipe),
        "prevalence/3 recalibrated": (rarer(load_params()), recalibrated),
    }
    print(f"{args.days} days x {args.day_size} patients per scenario")
    header = (
        f"{'scenario':27s} {'events/day':>10s} {'real AUC':>8s} {'MAE':>6s} {'bias':>7s} "
        f"{'AUC sd':>6s} {'rate':>7s} {'exp rate':>8s} {'rate MAE':>8s}"
    )
    print(header)
    for name, (params, model) in scenarios.items():
        real, est, rate, exp_rate, events = [], [], [], [], []
        for d in range(args.days):
            day = simulate_patients(args.day_size, seed=50_000 + d, params=params)
            y = day["stroke"].to_numpy()
            p = model.predict_proba(feature_frame(day))[:, 1]
            e = label_free.estimate(p)
            real.append(roc_auc_score(y, p))
            est.append(e.expected_roc_auc)
            rate.append(y.mean())
            exp_rate.append(e.expected_observed_rate)
            events.append(y.sum())
        real, est = np.asarray(real), np.asarray(est)
        rate, exp_rate = np.asarray(rate), np.asarray(exp_rate)
        print(
            f"{name:27s} {np.mean(events):10.0f} {real.mean():8.4f} "
            f"{np.mean(np.abs(est - real)):6.4f} {np.mean(est - real):+7.4f} "
            f"{real.std(ddof=1):6.4f} {rate.mean():7.4f} {exp_rate.mean():8.4f} "
            f"{np.mean(np.abs(exp_rate - rate)):8.4f}"
        )


if __name__ == "__main__":
    main()
