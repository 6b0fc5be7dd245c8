"""The model pipeline, tuning (seeded, calibration-constrained), thresholds and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.features import holdout_mask, split_train_holdout
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.schema import BINARY_FEATURES, CATEGORICAL_FEATURES, FEATURES, TARGET
from stroke_dagster.io.readers import read_patient_file
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model import training

SMALL_FOREST = {"n_estimators": 40, "min_samples_leaf": 5, "max_features": 1.0, "max_depth": 8}
TINY_SPACE = training.SearchSpace(
    n_estimators=(20, 40, 20), class_weight=(None, "balanced", "balanced_subsample")
)


@pytest.fixture(scope="module")
def patients(synthetic_train_csv: Path) -> pd.DataFrame:
    return validate_patients(read_patient_file(synthetic_train_csv), require_label=True).valid


@pytest.fixture(scope="module")
def split(patients: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_train_holdout(patients, holdout_fraction=0.2)


@pytest.fixture(scope="module")
def fitted(split: tuple[pd.DataFrame, pd.DataFrame]):
    return training.fit_final(split[0], SMALL_FOREST)


def test_holdout_is_fixed_per_patient_id(patients: pd.DataFrame) -> None:
    train, holdout = split_train_holdout(patients, holdout_fraction=0.2)
    assert len(train) + len(holdout) == len(patients)
    assert set(train["id"]).isdisjoint(holdout["id"])
    # About a fifth, each class about a fifth too (a hash, not a stratified draw).
    assert len(holdout) / len(patients) == pytest.approx(0.2, abs=0.03)
    positives = patients[TARGET].sum()
    assert holdout[TARGET].sum() / positives == pytest.approx(0.2, abs=0.08)
    # Row order, other rows and more data never move a patient to the other side.
    shuffled = patients.sample(frac=1.0, random_state=1)
    _, holdout_shuffled = split_train_holdout(shuffled, holdout_fraction=0.2)
    assert set(holdout_shuffled["id"]) == set(holdout["id"])
    more = pd.concat([patients, patients.assign(id="extra-" + patients["id"].astype(str))])
    _, holdout_more = split_train_holdout(more, holdout_fraction=0.2)
    assert set(holdout["id"]) <= set(holdout_more["id"])
    assert holdout_mask(["9046", 9046, " 9046 "]).tolist() == [holdout_mask(["9046"])[0]] * 3


def test_split_needs_ids_and_both_classes(patients: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="'id' column"):
        split_train_holdout(patients.drop(columns="id"))
    with pytest.raises(InputError, match="at least 10 patients of each class"):
        split_train_holdout(patients.assign(**{TARGET: 0}))


def test_every_schema_feature_reaches_the_model(fitted) -> None:
    names = list(fitted.named_steps["preprocess"].get_feature_names_out())
    for column in FEATURES:
        if column in CATEGORICAL_FEATURES:
            assert any(n.startswith(f"categorical__{column}_") for n in names), column
        else:
            assert f"numeric__{column}" in names, column
    # The forest sees exactly the transformed columns (nothing dropped in between).
    assert fitted.named_steps["model"].n_features_in_ == len(names)


@pytest.mark.parametrize("column", BINARY_FEATURES)
def test_binary_flags_change_predictions(fitted, split, column: str) -> None:
    holdout = split[1]
    off = fitted.predict_proba(holdout.assign(**{column: 0})[list(FEATURES)])[:, 1]
    on = fitted.predict_proba(holdout.assign(**{column: 1})[list(FEATURES)])[:, 1]
    assert not np.allclose(off, on), f"{column} has no effect on the predictions"


def test_outputs_are_probabilities_not_labels(fitted, split) -> None:
    holdout = split[1].copy()
    holdout.loc[:9, "bmi"] = np.nan  # missing bmi is imputed
    holdout.loc[10, "work_type"] = "Astronaut"  # unseen category is ignored
    proba = fitted.predict_proba(holdout[list(FEATURES)])
    assert proba.shape == (len(holdout), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert len(np.unique(proba[:, 1])) > 20


def test_build_pipeline_rejects_unknown_parameters() -> None:
    with pytest.raises(ValueError, match="max_leaf"):
        training.build_pipeline({"max_leaf": 3})


def test_tuning_is_seeded(split) -> None:
    kwargs = {"n_trials": 3, "cv_folds": 3, "search_space": TINY_SPACE, "log_trials": False}
    first = training.tune(split[0], seed=11, **kwargs)
    second = training.tune(split[0], seed=11, **kwargs)
    assert first.best_params == second.best_params
    pd.testing.assert_frame_equal(first.trials, second.trials)
    assert len(first.trials) == 3
    assert first.trials.loc[0, "n_estimators"] == 40  # trial 0 = defaults clamped to the space
    assert first.trials.loc[0, "class_weight"] is None
    assert first.cv_brier <= first.brier_ceiling


def test_calibration_guard_rejects_a_wrecking_class_weight(split) -> None:
    train = split[0]
    wrecking = {**SMALL_FOREST, "n_estimators": 30, "class_weight": "balanced"}
    plain = {**wrecking, "class_weight": None}
    ceiling = training.no_skill_brier(train[TARGET].to_numpy())
    weighted = training.cross_validate(train, wrecking, cv_folds=3, seed=0)
    unweighted = training.cross_validate(train, plain, cv_folds=3, seed=0)
    brier_w, brier_p, auc_p = weighted.brier, unweighted.brier, unweighted.roc_auc
    assert brier_w > ceiling > brier_p  # balanced weighting wrecks calibration
    # Even when the wrecking trial ranks better, it is never selected.
    trials = pd.DataFrame(
        [
            {"trial": 0, "class_weight": None, "cv_roc_auc": auc_p, "cv_brier": brier_p},
            {
                "trial": 1,
                "class_weight": "balanced",
                "cv_roc_auc": auc_p + 0.05,
                "cv_brier": brier_w,
            },
        ]
    ).assign(feasible=lambda t: t["cv_brier"] <= ceiling)
    assert int(training.select_best(trials)["trial"]) == 0


def test_tuning_never_picks_a_wrecking_trial_that_wins_on_auc(split) -> None:
    # With this seed the study samples one `balanced` trial that ranks best on AUC.
    space = training.SearchSpace(n_estimators=(20, 40, 20), class_weight=("balanced", None))
    result = training.tune(
        split[0], n_trials=4, seed=6, cv_folds=3, search_space=space, log_trials=False
    )
    balanced = result.trials[result.trials["class_weight"] == "balanced"]
    assert len(balanced) == 1
    assert balanced["cv_roc_auc"].iloc[0] > result.cv_roc_auc
    assert balanced["cv_brier"].iloc[0] > 2 * result.brier_ceiling
    assert balanced["folds_run"].iloc[0] == 1  # stopped after the first wrecked fold
    assert not balanced["feasible"].any()
    assert result.best_params["class_weight"] is None
    assert result.cv_brier <= result.brier_ceiling
    assert not np.isnan(result.oof_predictions).any()


def test_select_best_falls_back_to_best_calibrated_when_nothing_is_feasible() -> None:
    trials = pd.DataFrame(
        {
            "trial": [0, 1],
            "cv_roc_auc": [0.9, 0.8],
            "cv_brier": [0.2, 0.1],
            "feasible": [False, False],
        }
    )
    assert int(training.select_best(trials)["trial"]) == 1


def test_threshold_rule_on_constructed_scores() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50, int), np.zeros(950, int)]
    p = np.r_[rng.uniform(0.05, 0.6, 50), rng.uniform(0.0, 0.3, 950)]
    thr = training.choose_thresholds(y, p)
    assert np.mean(p[y == 1] >= thr.elevated) >= 0.80
    assert np.mean(p[y == 1] > thr.elevated) < 0.80 + 1 / 50 + 1e-9  # highest such threshold
    assert np.mean(p >= thr.high) == pytest.approx(0.10, abs=0.002)
    assert thr.elevated <= thr.high


def test_evaluate_reports_holdout_metrics_and_plots(fitted, split) -> None:
    holdout = split[1]
    thresholds = RiskThresholds(elevated=0.05, high=0.15)
    result = training.evaluate(fitted, holdout, thresholds)
    y = holdout[TARGET].to_numpy()
    prob = result.predictions["stroke_probability"].to_numpy()
    flagged = prob >= 0.15
    assert 0.6 < result.roc_auc <= 1.0
    assert result.brier == pytest.approx(np.mean((prob - y) ** 2))
    assert result.sensitivity == pytest.approx(flagged[y == 1].mean())
    assert result.specificity == pytest.approx((~flagged[y == 0]).mean())
    assert result.accuracy == pytest.approx(np.mean(flagged == (y == 1)))
    assert result.predictions["id"].tolist() == holdout["id"].tolist()
    assert set(result.predictions["risk_tier"]) <= {"low", "elevated", "high"}
    assert sum(result.tier_counts.values()) == len(holdout)
    assert result.roc_png.startswith(b"\x89PNG") and result.calibration_png.startswith(b"\x89PNG")
    assert set(result.metrics()) >= {"holdout_roc_auc", "holdout_pr_auc", "holdout_brier"}
