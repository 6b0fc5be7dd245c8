"""Is the champion gate fair to a retrain? Train the same data with several seeds and watch it.

Runs ``stroke train``'s path (``training_job`` in-process) on the real file at ``STROKE_RAW_CSV``
(read in place, never copied into the repository), each scenario in its own temporary
``STROKE_HOME``:

1. same-data retrains: one training per seed (default 3, 4, 5), in sequence. The models are
   about equally good, so each new version should be promoted (or, when the data cannot tell,
   held back as inconclusive), never refused.
2. a real improvement: a deliberately weak first champion (a quarter of the patients, a small
   forest, two trials), then a full retrain (the first seed) that should be promoted.

For each version it prints its AUC on its own holdout and the gate's verdict against the champion
of the moment on the patients neither trained on (how many, and how many strokes): the outcome
(promote / inconclusive / refuse) and, for each criterion, its estimate, 95 % CI, the bound that
decides, the margin it is held to, and the criterion's outcome.

    STROKE_RAW_CSV=/path/to/healthcare-dataset-stroke-data.csv python benchmarks/gate_fairness.py
    ... --seeds 3 4 5 --trials 8 [--skip-improvement]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# (criterion, label, estimate key (margin: "<key>_margin"), CI key prefix, deciding bound, format)
ROWS = (
    ("auc_vs_champion", "AUC difference", "auc_difference", "auc_difference", "low", "+.4f"),
    (
        "calibration_vs_champion",
        "log-loss ratio",
        "log_loss_ratio",
        "log_loss_ratio",
        "high",
        ".3f",
    ),
    (
        "calibration_in_the_large_vs_champion",
        "|ln O:E| excess",
        "oe_excess",
        "oe_excess",
        "high",
        "+.3f",
    ),
)


def _verdict(settings: Any, version: str) -> dict[str, Any]:
    """The gate's recorded verdict (``gate/verdict.json`` on the version's run)."""
    from stroke_dagster.core.settings import MODEL_NAME
    from stroke_dagster.model import registry

    client = registry.client(settings)
    run_id = client.get_model_version(MODEL_NAME, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "gate/verdict.json", tmp)
        return json.loads(Path(path).read_text())


def _report(label: str, summary: dict[str, Any], verdict: dict[str, Any], seconds: float) -> None:
    metrics = verdict["metrics"]
    versus = verdict["champion_version"]
    head = f"v{summary['version']} {label:<28} own-holdout AUC {summary['holdout_roc_auc']:.4f} | "
    if versus is None:
        print(f"{head}no champion yet: {verdict['outcome'].upper()} -> {verdict['alias']}")
    else:
        print(
            f"{head}vs v{versus} on {metrics['n_unseen']:.0f} patients neither trained on "
            f"({metrics['n_unseen_events']:.0f} strokes): {verdict['outcome'].upper()} -> "
            f"{verdict['alias']} ({seconds:.0f} s)"
        )
    outcomes = {c["name"]: c["outcome"] for c in verdict["criteria"]}
    if "auc_floor" in outcomes:
        print(
            f"      {'auc_floor':<37} {outcomes['auc_floor']:<12} candidate AUC "
            f"{metrics['candidate_auc']:.4f} vs floor > {metrics['auc_floor']:.2f}"
        )
    for name, text, estimate, ci, side, fmt in ROWS:
        if name not in outcomes or f"{estimate}_margin" not in metrics:
            continue
        margin = metrics[f"{estimate}_margin"]
        if estimate not in metrics:
            print(f"      {name:<37} {outcomes[name]:<12} (not computed)")
            continue
        low, high = metrics[f"{ci}_ci_low"], metrics[f"{ci}_ci_high"]
        bound, which = (low, "lower") if side == "low" else (high, "upper")
        relation = ">=" if side == "low" else "<="
        print(
            f"      {name:<37} {outcomes[name]:<12} {text} {metrics[estimate]:{fmt}} "
            f"(95% CI {low:{fmt}}..{high:{fmt}}): {which} bound {bound:{fmt}}, "
            f"margin {relation} {margin:{fmt}}"
        )
    if versus is not None:
        print(
            f"      (log loss {metrics['candidate_log_loss']:.5f} vs "
            f"{metrics['champion_log_loss']:.5f}, Brier {metrics['candidate_brier']:.5f} vs "
            f"{metrics['champion_brier']:.5f}, "
            f"O:E {metrics['candidate_oe_ratio']:.3f} vs {metrics['champion_oe_ratio']:.3f})"
        )
    print(f"      reason: {summary['gate_reason']}")


def _fresh_home(root: Path, name: str) -> Any:
    """Point the platform at a new home under ``root`` and load its settings."""
    home = root / name
    # The whole run lives in the temporary home (the MLflow store and the Dagster instance).
    os.environ["STROKE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from stroke_dagster.core.settings import load_settings

    return load_settings()


def _train(label: str, data: Any, settings: Any, **kwargs: Any) -> None:
    from stroke_dagster.defs.training_command import run_training

    started = time.perf_counter()
    summary = run_training(data, settings=settings, **kwargs)
    seconds = time.perf_counter() - started
    _report(label, summary, _verdict(settings, str(summary["version"])), seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--trials", type=int, default=8, help="Optuna trials per training")
    parser.add_argument(
        "--skip-improvement", action="store_true", help="only the same-data retrains"
    )
    args = parser.parse_args()
    raw = os.environ.get("STROKE_RAW_CSV", "")
    if not raw or not Path(raw).is_file():
        print("set STROKE_RAW_CSV to the real patient file", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        settings = _fresh_home(Path(tmp), "retrains")
        gate = settings.gate
        print(
            f"data {raw}; seeds {args.seeds}; {args.trials} trials each; gate: AUC floor "
            f"{gate.auc_floor:.2f}, AUC margin -{gate.tolerance:.3f} (lower bound), log-loss "
            f"ratio margin {1 + gate.log_loss_margin:.3f} (upper bound), O:E margin x"
            f"{gate.oe_margin:g} (|ln O:E| excess upper bound <= {math.log(gate.oe_margin):.3f}), "
            f"min events {gate.min_events}"
        )
        print("\n== same data, another seed ==")
        for seed in args.seeds:
            _train(f"seed {seed} (same data)", raw, settings, n_trials=args.trials, seed=seed)

        if not args.skip_improvement:
            import numpy as np

            from stroke_dagster.io.readers import read_patient_file

            print("\n== a real improvement ==")
            settings = _fresh_home(Path(tmp), "improvement")
            patients = read_patient_file(raw)
            rng = np.random.default_rng(0)
            quarter = patients.iloc[np.sort(rng.permutation(len(patients))[: len(patients) // 4])]
            _train(
                "weak: 1/4 of patients, 10 trees",
                quarter.reset_index(drop=True),
                settings,
                n_trials=2,
                seed=args.seeds[0],
                n_estimators=(10, 10, 10),
            )
            _train(
                f"full retrain, seed {args.seeds[0]}",
                raw,
                settings,
                n_trials=args.trials,
                seed=args.seeds[0],
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
