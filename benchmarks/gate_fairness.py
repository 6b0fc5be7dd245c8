"""Is the champion gate fair to a retrain? Train the same data with several seeds and watch it.

Runs ``stroke train``'s path (``training_job`` in-process) once per seed, in sequence, into one
temporary ``STROKE_HOME``, on the real file at ``STROKE_RAW_CSV``. For each version it prints its
AUC on its own holdout and the gate's comparison with the champion of the moment: both AUCs on
the patients neither trained on, the paired difference with DeLong's 95 % CI, how many patients
(and strokes) that is, and the verdict. Same data, another seed: the models are about equally
good, so each new version should be promoted within the tolerance.

    STROKE_RAW_CSV=/path/to/healthcare-dataset-stroke-data.csv python benchmarks/gate_fairness.py
    ... --seeds 3 4 5 --trials 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--trials", type=int, default=8, help="Optuna trials per training")
    args = parser.parse_args()
    raw = os.environ.get("STROKE_RAW_CSV", "")
    if not raw or not Path(raw).is_file():
        print("set STROKE_RAW_CSV to the real patient file", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        # The whole run lives in the temporary home (the MLflow store and the Dagster instance).
        os.environ["STROKE_HOME"] = str(home)
        os.environ["DAGSTER_HOME"] = str(home / "dagster")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from stroke_dagster.settings import load_settings
        from stroke_dagster.training_run import run_training

        settings = load_settings()
        print(
            f"data {raw}; seeds {args.seeds}; {args.trials} trials each; gate floor "
            f"{settings.gate.auc_floor:.2f}, tolerance {settings.gate.tolerance:.3f}"
        )
        header = (
            f"{'ver':>3} {'seed':>4} {'own AUC':>8} | {'vs':>3} {'n':>5} {'ev':>3} "
            f"{'cand AUC':>8} {'champ AUC':>9} {'diff':>7} {'95% CI':>17} | verdict"
        )
        print(header)
        print("-" * len(header))
        for seed in args.seeds:
            started = time.perf_counter()
            s = run_training(raw, settings=settings, n_trials=args.trials, seed=seed)
            seconds = time.perf_counter() - started
            versus = s["previous_champion"] or "-"
            if "gate_champion_auc" in s:
                low, high = s["gate_auc_difference_ci_low"], s["gate_auc_difference_ci_high"]
                ci = f"{low:+.4f}..{high:+.4f}"
                comparison = (
                    f"{versus:>3} {s['gate_n_unseen']:>5.0f} {s['gate_n_unseen_events']:>3.0f} "
                    f"{s['gate_candidate_auc']:>8.4f} {s['gate_champion_auc']:>9.4f} "
                    f"{s['gate_auc_difference']:>+7.4f} {ci:>17}"
                )
            else:
                comparison = (
                    f"{versus:>3} {s['gate_n_unseen']:>5.0f} {s['gate_n_unseen_events']:>3.0f} "
                    f"{s['gate_candidate_auc']:>8.4f} {'(no champion yet)':>36}"
                )
            print(
                f"{s['version']:>3} {seed:>4} {s['holdout_roc_auc']:>8.4f} | {comparison} | "
                f"{s['alias']} ({seconds:.0f} s)"
            )
            print(f"      {s['gate_reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
