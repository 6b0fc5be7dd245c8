"""Cost and exactness of per-patient explanations on a forest trained on the real data.

The forest is ``stroke train``'s default (trial 0) configuration fit on the Kaggle file
(``STROKE_RAW_CSV``); patients to explain are simulated. For each method (exact TreeSHAP via
``shap``, and the tree-path decomposition) on one core: seconds per explained patient (median of
``--runs`` runs of ``--n`` patients), the largest |base + sum(contributions) - probability|, and
the extrapolated cost of explaining a day's ``high`` tier when 1M patients are scored (the
``high`` tier is the top 10 % of training risk, so about 100,000 patients).

    STROKE_RAW_CSV=/path/to/healthcare-dataset-stroke-data.csv \
        .venv/bin/python benchmarks/explain.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from stroke_dagster.clinical import explain
from stroke_dagster.clinical.recalibration import compose
from stroke_dagster.core.features import feature_frame
from stroke_dagster.io.readers import read_patient_file
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model.training import DEFAULT_PARAMS, HIGH_RISK_SHARE, build_pipeline
from stroke_dagster.simulate.generator import simulate_patients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raw = os.environ.get("STROKE_RAW_CSV", "")
    if not Path(raw).is_file():
        raise SystemExit("set STROKE_RAW_CSV to the Kaggle stroke CSV")
    train = validate_patients(read_patient_file(raw), require_label=True).valid
    pipe = build_pipeline({**DEFAULT_PARAMS, "n_jobs": 1}).fit(
        feature_frame(train), train["stroke"]
    )
    forest = pipe.named_steps["model"]
    depth = np.mean([t.get_depth() for t in forest.estimators_])
    print(
        f"forest: {forest.n_estimators} trees, mean depth {depth:.1f}, fit on {len(train)} patients"
    )
    patients = simulate_patients(args.n, seed=3)
    high_tier = int(1_000_000 * HIGH_RISK_SHARE)
    for name, model in (("plain", pipe), ("recalibrated", compose(pipe, -1.1, 0.9))):
        served = model.predict_proba(feature_frame(patients))[:, 1]
        for method in explain.METHODS:
            explain.explain(model, patients.head(5), method=method)  # warm-up (imports)
            times, err = [], 0.0
            for _ in range(args.runs):
                t0 = time.perf_counter()
                e = explain.explain(model, patients, method=method)
                times.append(time.perf_counter() - t0)
                total = e.base_value + e.contributions.sum(axis=1).to_numpy()
                err = max(err, float(np.max(np.abs(total - served))))
            per = statistics.median(times) / args.n
            print(
                f"{name:12s} {method:8s}: {per * 1e3:7.3f} ms/patient (median of {args.runs} x "
                f"{args.n}); max additivity error {err:.2e}; day's high tier at 1M scored "
                f"(~{high_tier:,} patients): {per * high_tier / 60:6.1f} min on one core"
            )
    e_shap = explain.explain(pipe, patients, method="treeshap").contributions
    e_path = explain.explain(pipe, patients, method="path").contributions
    top_shap = e_shap.abs().idxmax(axis=1)
    top_path = e_path.abs().idxmax(axis=1)
    print(f"top feature agrees between methods for {np.mean(top_shap == top_path):.0%} of patients")


if __name__ == "__main__":
    main()
