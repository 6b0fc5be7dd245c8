"""The stroke model: pipeline, Optuna tuning, final fit and holdout evaluation.

Stages (each a plain function, so the Dagster assets and ``stroke train`` run the same code):

1. :func:`tune` - an Optuna TPE study (seeded) maximising stratified-CV ROC AUC of
   :func:`build_pipeline`, under a calibration constraint (see below).
2. :func:`fit_final` - the best parameters refit on the whole training split.
3. :func:`evaluate` - holdout ROC AUC, PR AUC, Brier, accuracy, sensitivity/specificity at the
   high-risk threshold, ROC and calibration plots.

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

Risk tiers. Thresholds are chosen on the out-of-fold predictions of the best trial on the TRAINING
split (never the holdout): ``elevated`` is the highest threshold still catching
``ELEVATED_SENSITIVITY`` (80 %) of the training strokes - a screening net; ``high`` flags the
``HIGH_RISK_SHARE`` (10 %) of training patients with the highest predicted risk - a follow-up list a
clinic can act on. See :func:`choose_thresholds`.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stroke_dagster.features import ONE_HOT_FEATURES, SCALED_FEATURES, feature_frame
from stroke_dagster.risk import RiskThresholds, assign_tiers
from stroke_dagster.schema import ID, TARGET

log = logging.getLogger(__name__)

# Defaults of `stroke train` (and of the Dagster training job).
DEFAULT_N_TRIALS = 16
DEFAULT_CV_FOLDS = 4
ELEVATED_SENSITIVITY = 0.80
HIGH_RISK_SHARE = 0.10
# A trial whose first fold already scores a Brier above WRECK_FACTOR x the ceiling skips its
# remaining folds (it cannot become feasible; this saves most of the cost of ``balanced`` trials).
WRECK_FACTOR = 1.5
PRUNER_STARTUP_TRIALS = 5

# A well-regularised forest: the parameters used when nothing is tuned.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "max_depth": 8,
    "min_samples_leaf": 25,
    "max_features": 0.4,
    "max_samples": 0.6,
    "class_weight": None,
    "criterion": "entropy",
    "random_state": 0,
    "n_jobs": -1,
}
_FOREST_KEYS = frozenset(DEFAULT_PARAMS)


@dataclass(frozen=True)
class SearchSpace:
    """Ranges Optuna samples from (``(low, high)``; ``n_estimators`` also has a step)."""

    n_estimators: tuple[int, int, int] = (150, 350, 50)
    max_depth: tuple[int, int] = (4, 12)
    min_samples_leaf: tuple[int, int] = (10, 60)
    max_features: tuple[float, float] = (0.2, 0.6)
    max_samples: tuple[float, float] = (0.4, 0.9)
    class_weight: tuple[str | None, ...] = (None, "balanced", "balanced_subsample")
    # Entropy splits ranked patients consistently better than Gini on the Kaggle data (repeated
    # CV, +0.002-0.003 ROC AUC at equal settings), so it is fixed by default; widen to search it.
    criterion: tuple[str, ...] = ("entropy",)

    def clamp(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` moved into this space (used to enqueue :data:`DEFAULT_PARAMS` as trial 0)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            bounds, value = getattr(self, name), params[name]
            if name in ("class_weight", "criterion"):
                out[name] = value if value in bounds else bounds[0]
            elif name == "n_estimators":
                low, high, step = bounds
                out[name] = int(min(max(low + round((value - low) / step) * step, low), high))
            else:
                out[name] = type(bounds[0])(min(max(value, bounds[0]), bounds[1]))
        return out

    def suggest(self, trial: Any) -> dict[str, Any]:
        low, high, step = self.n_estimators
        return {
            "n_estimators": trial.suggest_int("n_estimators", low, high, step=step),
            "max_depth": trial.suggest_int("max_depth", *self.max_depth),
            "min_samples_leaf": trial.suggest_int(
                "min_samples_leaf", *self.min_samples_leaf, log=True
            ),
            "max_features": trial.suggest_float("max_features", *self.max_features),
            "max_samples": trial.suggest_float("max_samples", *self.max_samples),
            "class_weight": trial.suggest_categorical("class_weight", list(self.class_weight)),
            "criterion": trial.suggest_categorical("criterion", list(self.criterion)),
        }


DEFAULT_SEARCH_SPACE = SearchSpace()
# Small forests for tests and smoke runs: same shape of search, a fraction of the cost.
FAST_SEARCH_SPACE = SearchSpace(n_estimators=(20, 60, 20))


def build_pipeline(params: dict[str, Any] | None = None) -> Pipeline:
    """Raw feature columns in, ``predict_proba`` out.

    Every schema feature is listed explicitly: numeric and 0/1 columns are median-imputed and
    scaled, categoricals one-hot encoded (unknown categories ignored). The imputer also adds a
    0/1 "was missing" column for each column that had gaps in training (bmi): a missing
    measurement is itself informative (in the Kaggle data bmi is missing for 16 % of stroke
    patients against 3.3 % of the others), and median imputation alone would hide it.
    ``params`` override :data:`DEFAULT_PARAMS` (forest hyper-parameters, ``random_state``,
    ``n_jobs``).
    """
    merged = {**DEFAULT_PARAMS, **(params or {})}
    unknown = set(merged) - _FOREST_KEYS
    if unknown:
        raise ValueError(f"unknown model parameter(s): {', '.join(sorted(unknown))}")
    preprocess = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                list(SCALED_FEATURES),
            ),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                list(ONE_HOT_FEATURES),
            ),
        ],
        remainder="drop",
    )
    forest = RandomForestClassifier(**merged)
    return Pipeline([("preprocess", preprocess), ("model", forest)])


def _labels(df: pd.DataFrame) -> np.ndarray:
    return df[TARGET].to_numpy(dtype=int)


def no_skill_brier(y: np.ndarray) -> float:
    """Brier score of always predicting the prevalence: ``p * (1 - p)``."""
    p = float(np.mean(y))
    return p * (1.0 - p)


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


@dataclass
class CVScores:
    """Cross-validated scores of one parameter set (means over the folds that ran)."""

    roc_auc: float
    brier: float
    oof: np.ndarray = field(repr=False)
    folds_run: int
    complete: bool


def cross_validate(
    train_df: pd.DataFrame,
    params: dict[str, Any],
    cv_folds: int,
    seed: int,
    *,
    stop_above_brier: float | None = None,
    on_fold: Callable[[int, float], None] | None = None,
) -> CVScores:
    """Mean fold ROC AUC, mean fold Brier and out-of-fold probabilities of one parameter set.

    With ``stop_above_brier``, folds stop as soon as one fold's Brier score exceeds it (the
    parameter set is hopelessly mis-calibrated; the means then cover the folds run so far and
    the out-of-fold array is incomplete: ``complete`` is False). ``on_fold(step, mean_auc)`` is
    called after every other fold with the running mean ROC AUC (Optuna pruning hooks in here).
    """
    x, y = feature_frame(train_df), _labels(train_df)
    oof = np.full(len(y), np.nan)
    aucs, briers = [], []
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    for fit_idx, val_idx in folds.split(x, y):
        model = build_pipeline(params).fit(x.iloc[fit_idx], y[fit_idx])
        prob = model.predict_proba(x.iloc[val_idx])[:, 1]
        oof[val_idx] = prob
        aucs.append(roc_auc_score(y[val_idx], prob))
        briers.append(brier_score_loss(y[val_idx], prob))
        if stop_above_brier is not None and briers[-1] > stop_above_brier:
            break
        if on_fold is not None:
            on_fold(len(aucs) - 1, float(np.mean(aucs)))
    return CVScores(
        roc_auc=float(np.mean(aucs)),
        brier=float(np.mean(briers)),
        oof=oof,
        folds_run=len(aucs),
        complete=len(aucs) == cv_folds,
    )


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
    y = _labels(train_df)
    ceiling = no_skill_brier(y) if brier_ceiling is None else float(brier_ceiling)
    mlflow = _active_mlflow() if log_trials else None
    oof_by_trial: dict[int, np.ndarray] = {}
    started = time.perf_counter()

    def prune_check(trial: optuna.Trial, params: dict[str, Any]) -> Callable[[int, float], None]:
        def check(step: int, running_auc: float) -> None:
            trial.report(running_auc, step)
            if trial.should_prune():
                if mlflow is not None:
                    _log_pruned(mlflow, trial.number, params, running_auc, step + 1)
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
            _log_trial(mlflow, trial.number, params, scores, feasible)
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


def _active_mlflow() -> Any:
    """The ``mlflow`` module when a run is active (trials are then logged as nested runs)."""
    import mlflow

    return mlflow if mlflow.active_run() is not None else None


def _log_trial(
    mlflow: Any, number: int, params: dict[str, Any], scores: CVScores, feasible: bool
) -> None:
    with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True):
        mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})
        mlflow.log_metrics(
            {
                "cv_roc_auc": scores.roc_auc,
                "cv_brier": scores.brier,
                "feasible": float(feasible),
                "folds_run": float(scores.folds_run),
            }
        )
        mlflow.set_tag("stroke.stage", "tuning-trial")


def _log_pruned(
    mlflow: Any, number: int, params: dict[str, Any], running_auc: float, folds_run: int
) -> None:
    with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True):
        mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})
        mlflow.log_metrics({"cv_roc_auc_running": running_auc, "folds_run": float(folds_run)})
        mlflow.set_tags({"stroke.stage": "tuning-trial", "pruned": "true"})


def fit_final(train_df: pd.DataFrame, params: dict[str, Any]) -> Pipeline:
    """Refit the pipeline with ``params`` on the whole training split."""
    return build_pipeline(params).fit(feature_frame(train_df), _labels(train_df))


def choose_thresholds(
    y: np.ndarray,
    probabilities: np.ndarray,
    *,
    elevated_sensitivity: float = ELEVATED_SENSITIVITY,
    high_share: float = HIGH_RISK_SHARE,
) -> RiskThresholds:
    """Tier thresholds from (out-of-fold) training predictions.

    ``elevated``: the highest threshold at which at least ``elevated_sensitivity`` of the positive
    patients score ``>=`` it. ``high``: the threshold above which the top ``high_share`` of all
    patients fall. ``elevated`` is capped at ``high`` (tiers stay ordered).
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    positives = np.sort(p[y == 1])
    if positives.size == 0:
        raise ValueError("threshold selection needs at least one positive patient")
    # Keep the ceil(sensitivity * n_pos) highest-scoring positives at or above the threshold.
    keep = int(np.ceil(elevated_sensitivity * positives.size))
    elevated = float(positives[positives.size - keep])
    high = float(np.quantile(p, 1.0 - high_share, method="higher"))
    high = min(max(high, 0.0), 1.0)
    return RiskThresholds(elevated=min(elevated, high), high=high)


@dataclass
class Evaluation:
    """Holdout metrics of one fitted pipeline (classification metrics at ``thresholds.high``)."""

    roc_auc: float
    pr_auc: float
    brier: float
    accuracy: float
    sensitivity: float
    specificity: float
    sensitivity_elevated: float
    specificity_elevated: float
    n_holdout: int
    n_positive: int
    thresholds: RiskThresholds
    tier_counts: dict[str, int]
    predictions: pd.DataFrame = field(repr=False)
    roc_png: bytes = field(repr=False, default=b"")
    calibration_png: bytes = field(repr=False, default=b"")

    def metrics(self, prefix: str = "holdout_") -> dict[str, float]:
        """Numeric metrics for MLflow / asset metadata."""
        names = (
            "roc_auc",
            "pr_auc",
            "brier",
            "accuracy",
            "sensitivity",
            "specificity",
            "sensitivity_elevated",
            "specificity_elevated",
        )
        values = {f"{prefix}{n}": float(getattr(self, n)) for n in names}
        values[f"{prefix}prevalence"] = self.n_positive / max(self.n_holdout, 1)
        return values


def _rates(y: np.ndarray, flagged: np.ndarray) -> tuple[float, float, float]:
    """Sensitivity, specificity and accuracy of a 0/1 flag against labels."""
    tp = np.sum(flagged & (y == 1))
    tn = np.sum(~flagged & (y == 0))
    pos, neg = np.sum(y == 1), np.sum(y == 0)
    sens = tp / pos if pos else float("nan")
    spec = tn / neg if neg else float("nan")
    return float(sens), float(spec), float((tp + tn) / len(y))


def evaluate(
    pipeline: Pipeline, holdout_df: pd.DataFrame, thresholds: RiskThresholds
) -> Evaluation:
    """Score the holdout and compute metrics; ``thresholds`` come from training data only."""
    y = _labels(holdout_df)
    prob = pipeline.predict_proba(feature_frame(holdout_df))[:, 1]
    tiers = assign_tiers(prob, thresholds)
    sens, spec, acc = _rates(y, prob >= thresholds.high)
    sens_e, spec_e, _ = _rates(y, prob >= thresholds.elevated)
    predictions = pd.DataFrame(
        {
            ID: holdout_df[ID].to_numpy() if ID in holdout_df else np.arange(len(y)).astype(str),
            "stroke_probability": prob,
            "risk_tier": tiers,
            TARGET: y,
        }
    )
    counts = pd.Series(tiers).value_counts()
    return Evaluation(
        roc_auc=float(roc_auc_score(y, prob)),
        pr_auc=float(average_precision_score(y, prob)),
        brier=float(brier_score_loss(y, prob)),
        accuracy=acc,
        sensitivity=sens,
        specificity=spec,
        sensitivity_elevated=sens_e,
        specificity_elevated=spec_e,
        n_holdout=len(y),
        n_positive=int(y.sum()),
        thresholds=thresholds,
        tier_counts={t: int(counts.get(t, 0)) for t in ("low", "elevated", "high")},
        predictions=predictions,
        roc_png=roc_plot(y, prob),
        calibration_png=calibration_plot(y, prob),
    )


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(4.5, 4.5))


def roc_plot(y: np.ndarray, prob: np.ndarray) -> bytes:
    """ROC curve (PNG bytes)."""
    fpr, tpr, _ = roc_curve(y, prob)
    fig, ax = _figure()
    ax.plot(fpr, tpr, label=f"ROC AUC = {roc_auc_score(y, prob):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title("Holdout ROC curve")
    ax.legend(loc="lower right")
    return _png(fig)


def calibration_plot(y: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> bytes:
    """Reliability diagram over quantile bins of predicted risk (PNG bytes)."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, prob, n_bins=n_bins, strategy="quantile")
    fig, ax = _figure()
    top = float(max(predicted.max(initial=0), observed.max(initial=0), 0.05)) * 1.1
    ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.plot(predicted, observed, marker="o", label=f"model (Brier {brier_score_loss(y, prob):.4f})")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("Mean predicted stroke probability")
    ax.set_ylabel("Observed stroke rate")
    ax.set_title("Holdout calibration (quantile bins)")
    ax.legend(loc="upper left")
    return _png(fig)


def tuning_summary(result: TuningResult) -> dict[str, Any]:
    """JSON-friendly summary of a tuning result (for logs and metadata)."""
    return {
        "best_params": result.best_params,
        "cv_roc_auc": result.cv_roc_auc,
        "cv_brier": result.cv_brier,
        "brier_ceiling": result.brier_ceiling,
        "n_trials": result.n_trials,
        "n_feasible": int(result.trials["feasible"].sum()),
        "thresholds": asdict(result.thresholds),
    }


__all__ = [
    "DEFAULT_PARAMS",
    "DEFAULT_SEARCH_SPACE",
    "CVScores",
    "FAST_SEARCH_SPACE",
    "Evaluation",
    "SearchSpace",
    "TuningResult",
    "build_pipeline",
    "choose_thresholds",
    "cross_validate",
    "evaluate",
    "fit_final",
    "no_skill_brier",
    "select_best",
    "tune",
]
