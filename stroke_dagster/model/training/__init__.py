"""The stroke model: pipeline, Optuna tuning, final fit and holdout evaluation.

Stages (each a plain function, so the Dagster assets and ``stroke train`` run the same code):

1. :func:`tune` - an Optuna TPE study (seeded) maximising stratified-CV ROC AUC of
   :func:`build_pipeline`, under a calibration constraint (see below).
2. :func:`fit_final` - the best parameters refit on the whole training split.
3. :func:`evaluate` - holdout ROC AUC, PR AUC, Brier, accuracy, sensitivity/specificity at the
   high-risk threshold, ROC and calibration plots.

Modules: :mod:`.pipeline` (the model), :mod:`.search_space`, :mod:`.cv` (the CV loop),
:mod:`.tuning` (Optuna), :mod:`.trial_logging` (MLflow nested runs), :mod:`.thresholds` (risk
tiers), :mod:`.metrics` (holdout evaluation) and :mod:`.plots`.
"""

from stroke_dagster.model.training.cv import CVScores, cross_validate, no_skill_brier
from stroke_dagster.model.training.metrics import Evaluation, evaluate
from stroke_dagster.model.training.pipeline import DEFAULT_PARAMS, build_pipeline, fit_final
from stroke_dagster.model.training.plots import calibration_plot, roc_plot
from stroke_dagster.model.training.search_space import DEFAULT_SEARCH_SPACE, SearchSpace
from stroke_dagster.model.training.thresholds import (
    ELEVATED_SENSITIVITY,
    HIGH_RISK_SHARE,
    choose_thresholds,
)
from stroke_dagster.model.training.tuning import (
    DEFAULT_CV_FOLDS,
    DEFAULT_N_TRIALS,
    TuningResult,
    select_best,
    tune,
)

__all__ = [
    "DEFAULT_CV_FOLDS",
    "DEFAULT_N_TRIALS",
    "DEFAULT_PARAMS",
    "DEFAULT_SEARCH_SPACE",
    "ELEVATED_SENSITIVITY",
    "HIGH_RISK_SHARE",
    "CVScores",
    "Evaluation",
    "SearchSpace",
    "TuningResult",
    "build_pipeline",
    "calibration_plot",
    "choose_thresholds",
    "cross_validate",
    "evaluate",
    "fit_final",
    "no_skill_brier",
    "roc_plot",
    "select_best",
    "tune",
]
