"""Optuna TPE search (seeded) maximising stratified-CV ROC AUC under a calibration constraint.

Calibration constraint. What is served is a probability, so a trial only counts when its mean
CV Brier score is no worse than the no-skill Brier score ``p * (1 - p)`` (``p`` = training
prevalence), i.e. a Brier skill score >= 0. Class re-weighting (``balanced``) inflates the
probabilities of a rare outcome several-fold; it can keep or even raise the ranking quality
(AUC) while its Brier score lands far above the no-skill level. Such trials are recorded as
infeasible through Optuna's ``Trial.set_constraint`` (so TPE learns to avoid them) and can never
be selected as best. Trial 0 is always the well-regularised :data:`DEFAULT_PARAMS`, so a
calibrated candidate exists; a trial whose first fold is already far above the ceiling stops
early (see ``WRECK_FACTOR``).

Cost. ``stroke train`` must stay well inside 90 s on two cores: 16 trials x 4-fold CV, forests of
150-350 trees, median pruning of trials that trail after two folds, and the early stop above
(the search space is narrowed to the well-regularised region where this data set's forests do
best; see ``benchmarks/model_quality.py`` for the nested-CV figures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.model.training.cv import cross_validate, no_skill_brier
from stroke_dagster.model.training.pipeline import DEFAULT_PARAMS, labels
from stroke_dagster.model.training.search_space import DEFAULT_SEARCH_SPACE, SearchSpace
from stroke_dagster.model.training.thresholds import choose_thresholds
from stroke_dagster.model.training.trial_logging import active_mlflow, log_pruned, log_trial

log = logging.getLogger(__name__)

# Defaults of `stroke train` (and of the Dagster training job).
DEFAULT_N_TRIALS = 16
DEFAULT_CV_FOLDS = 4
# A trial whose first fold already scores a Brier above WRECK_FACTOR x the ceiling skips its
# remaining folds (it cannot become feasible; this saves most of the cost of ``balanced`` trials).
WRECK_FACTOR = 1.5
PRUNER_STARTUP_TRIALS = 5


@dataclass
class TuningResult:
    """Outcome of :func:`tune`: best feasible parameters and their cross-validated scores."""

    best_params: dict[str, Any]
    cv_roc_auc: float
    cv_brier: float
    n_trials: int
    trials: pd.DataFrame
    brier_ceiling: float
    cv_folds: int
    best_trial: int
    oof_predictions: np.ndarray = field(repr=False)
    oof_labels: np.ndarray = field(repr=False)
    seconds: float = 0.0

    @property
    def thresholds(self) -> RiskThresholds:
        """Risk-tier thresholds from the best trial's out-of-fold training predictions."""
        return choose_thresholds(self.oof_labels, self.oof_predictions)


def tune(
    train_df: pd.DataFrame,
    n_trials: int = DEFAULT_N_TRIALS,
    seed: int = 0,
    cv_folds: int = DEFAULT_CV_FOLDS,
    *,
    search_space: SearchSpace | None = None,
    brier_ceiling: float | None = None,
    log_trials: bool = True,
    n_jobs: int = -1,
) -> TuningResult:
    """Optuna TPE search (seeded) maximising stratified-CV ROC AUC under the calibration constraint.

    ``brier_ceiling`` defaults to the no-skill Brier score of ``train_df``; trials above it are
    infeasible. When an MLflow run is active each trial is logged as a nested run (parameters,
    ``cv_roc_auc``, ``cv_brier``, ``feasible``). If no trial is feasible the best-calibrated one
    (lowest CV Brier) is returned and a warning is logged.
    """
    import optuna

    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    space = search_space or DEFAULT_SEARCH_SPACE
    y = labels(train_df)
    ceiling = no_skill_brier(y) if brier_ceiling is None else float(brier_ceiling)
    mlflow = active_mlflow() if log_trials else None
    oof_by_trial: dict[int, np.ndarray] = {}
    started = time.perf_counter()

    def prune_check(trial: optuna.Trial, params: dict[str, Any]) -> Callable[[int, float], None]:
        def check(step: int, running_auc: float) -> None:
            trial.report(running_auc, step)
            if trial.should_prune():
                if mlflow is not None:
                    log_pruned(mlflow, trial.number, params, running_auc, step + 1)
                raise optuna.TrialPruned()

        return check

    def objective(trial: optuna.Trial) -> float:
        params = {**space.suggest(trial), "random_state": seed, "n_jobs": n_jobs}
        scores = cross_validate(
            train_df,
            params,
            cv_folds,
            seed,
            stop_above_brier=WRECK_FACTOR * ceiling,
            on_fold=prune_check(trial, params),
        )
        feasible = scores.brier <= ceiling
        trial.set_constraint("brier_above_no_skill", scores.brier - ceiling)
        trial.set_user_attr("cv_brier", scores.brier)
        trial.set_user_attr("feasible", feasible)
        trial.set_user_attr("folds_run", scores.folds_run)
        if scores.complete:
            oof_by_trial[trial.number] = scores.oof
        if mlflow is not None:
            log_trial(mlflow, trial.number, params, scores, feasible)
        return scores.roc_auc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, n_trials // 2)))
    # Median pruning: from the second fold on, a trial whose running CV AUC is below the median
    # of earlier trials at the same fold stops (it would not be chosen; saves about a third).
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=1)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    # Trial 0 is the well-regularised default, so one calibrated candidate always exists.
    study.enqueue_trial(space.clamp(DEFAULT_PARAMS))
    study.optimize(objective, n_trials=n_trials)

    trials = _trials_frame(study)
    best = select_best(trials)
    number = int(best["trial"])
    params = {**study.trials[number].params, "random_state": seed, "n_jobs": n_jobs}
    if number in oof_by_trial:
        oof = oof_by_trial[number]
    else:  # a fallback trial that stopped early: complete its out-of-fold predictions
        oof = cross_validate(train_df, params, cv_folds, seed).oof
    return TuningResult(
        best_params=params,
        cv_roc_auc=float(best["cv_roc_auc"]),
        cv_brier=float(best["cv_brier"]),
        n_trials=n_trials,
        trials=trials,
        brier_ceiling=ceiling,
        cv_folds=cv_folds,
        best_trial=number,
        oof_predictions=oof,
        oof_labels=y,
        seconds=time.perf_counter() - started,
    )


def select_best(trials: pd.DataFrame) -> pd.Series:
    """The feasible trial with the highest CV ROC AUC (earliest on ties).

    Infeasible trials (CV Brier above the ceiling) never win, whatever their AUC. When no trial is
    feasible the best-calibrated one (lowest CV Brier) is returned, with a warning.
    """
    feasible = trials[trials["feasible"].astype(bool)]
    if feasible.empty:
        log.warning("no trial met the calibration constraint; using the best-calibrated one")
        return trials.sort_values(["cv_brier", "trial"]).iloc[0]
    return feasible.sort_values(["cv_roc_auc", "trial"], ascending=[False, True]).iloc[0]


def _trials_frame(study: Any) -> pd.DataFrame:
    """One row per finished trial; pruned trials keep their last running AUC, no Brier."""
    rows = []
    for t in study.trials:
        pruned = t.state.name == "PRUNED"
        if t.value is None and not pruned:
            continue
        last_step = max(t.intermediate_values) if t.intermediate_values else -1
        rows.append(
            {
                "trial": t.number,
                **{k: t.params.get(k) for k in DEFAULT_SEARCH_SPACE.__dataclass_fields__},
                "cv_roc_auc": float(t.intermediate_values[last_step] if pruned else t.value),
                "cv_brier": float("nan") if pruned else float(t.user_attrs["cv_brier"]),
                "feasible": False if pruned else bool(t.user_attrs["feasible"]),
                "folds_run": last_step + 1 if pruned else int(t.user_attrs["folds_run"]),
                "pruned": pruned,
            }
        )
    return pd.DataFrame(rows)
