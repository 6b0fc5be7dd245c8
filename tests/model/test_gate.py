"""The fair gate: shared unseen patients, DeLong's paired AUC difference, composable criteria."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stroke_dagster.core.features import split_train_holdout
from stroke_dagster.core.settings import GateSettings, load_settings
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model import gate, registry, training
from stroke_dagster.simulate.generator import simulate_patients


def _scores(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    signal = y + rng.normal(0, 1.0, n)
    good = signal + rng.normal(0, 0.3, n)
    poor = signal + rng.normal(0, 2.5, n)
    return y, good, poor


def _evidence(y, p_candidate, p_champion, settings: GateSettings | None = None) -> gate.Evidence:
    return gate.Evidence(y, p_candidate, p_champion, settings or GateSettings(), "2", "1")


def test_delong_difference_matches_sklearn_and_brackets_the_truth() -> None:
    y, good, poor = _scores()
    cand, champ, diff, low, high = gate.paired_auc_difference(y, good, poor)
    assert cand == pytest.approx(roc_auc_score(y, good))
    assert champ == pytest.approx(roc_auc_score(y, poor))
    assert diff == pytest.approx(cand - champ) and low < diff < high
    assert low > 0  # clearly better
    same = gate.paired_auc_difference(y, good, good)
    assert same[2] == pytest.approx(0.0) and same[3] == pytest.approx(same[4])
    # The paired CI is narrower than treating the two AUCs as independent would be.
    twin = good + np.random.default_rng(1).normal(0, 0.05, len(y))
    _, _, _, low_t, high_t = gate.paired_auc_difference(y, twin, good)
    assert high_t - low_t < 0.02
    with pytest.raises(ValueError, match="two patients of each class"):
        gate.paired_auc_difference(np.array([1, 0, 0]), np.ones(3), np.ones(3))


def test_unseen_patients_excludes_what_the_champion_trained_on() -> None:
    holdout = pd.DataFrame({"id": ["1", "2", "3", "4"], "stroke": [0, 1, 0, 1]})
    unseen, rule = gate.unseen_patients(holdout, champion_train_ids=[2, "9"])
    assert unseen["id"].tolist() == ["1", "3", "4"]
    assert rule == gate.CANDIDATE_MINUS_CHAMPION_TRAIN
    shared, rule = gate.unseen_patients(
        holdout, champion_train_ids=None, champion_holdout_ids=["3", "4", "5"]
    )
    assert shared["id"].tolist() == ["3", "4"] and rule == gate.HOLDOUT_INTERSECTION


def test_judge_promotes_a_non_inferior_version_and_explains() -> None:
    y, good, poor = _scores()
    better = gate.judge(_evidence(y, good, poor))
    assert better.alias == "champion" and better.promoted and better.outcome == "promote"
    assert "non-inferior" in better.reason
    worse = gate.judge(_evidence(y, poor, good, GateSettings(auc_floor=0.5)))
    assert worse.alias == "challenger" and worse.outcome == "refuse"
    assert "whole 95% CI beyond the margin -0.0200" in worse.reason
    assert worse.metrics()["auc_difference_ci_high"] < 0
    assert [c.name for c in worse.criteria] == [
        "auc_floor",
        "auc_vs_champion",
        "calibration_vs_champion",
        "calibration_in_the_large_vs_champion",
    ]
    assert worse.to_dict()["promoted"] is False and worse.to_dict()["outcome"] == "refuse"


def test_floor_and_first_version() -> None:
    y, good, _ = _scores()
    first = gate.judge(gate.Evidence(y, good, None, GateSettings(), "1", None))
    assert first.alias == "champion" and first.champion_version is None
    floored = gate.judge(gate.Evidence(y, good, None, GateSettings(auc_floor=0.99), "1", None))
    assert floored.alias == "challenger" and "not above the floor 0.9900" in floored.reason


def test_too_few_shared_events_never_promote() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0])
    p = np.linspace(0.9, 0.1, len(y))
    verdict = gate.judge(_evidence(y, p, p, GateSettings(auc_floor=0.5)))
    assert verdict.alias == "challenger" and "too few to compare" in verdict.reason
    assert verdict.outcome == "inconclusive"  # not a refusal: the data cannot tell


def test_an_added_criterion_can_hold_back_a_promotion() -> None:
    y, good, poor = _scores()

    def brier_not_worse(evidence: gate.Evidence) -> gate.Criterion:
        cand = float(np.mean((evidence.p_candidate - evidence.y) ** 2))
        champ = float(np.mean((evidence.p_champion - evidence.y) ** 2))
        return gate.Criterion("brier", cand <= champ, f"Brier {cand:.3f} vs {champ:.3f}")

    # Same ranking, but the candidate's numbers are far from probabilities of the outcome.
    candidate = good * 10.0
    champion = 1 / (1 + np.exp(-(poor - 0.5)))
    verdict = gate.judge(
        _evidence(y, candidate, champion),
        (gate.auc_floor_criterion, gate.auc_tolerance_criterion, brier_not_worse),
    )
    assert verdict.alias == "challenger" and verdict.reason.startswith("Brier")
    assert len(verdict.reasons) == 3


@pytest.fixture
def patients() -> pd.DataFrame:
    return validate_patients(simulate_patients(1500, seed=13), require_label=True).valid


def test_gate_ignores_patients_the_champion_trained_on(
    stroke_home: Path, patients: pd.DataFrame
) -> None:
    train, holdout = split_train_holdout(patients)
    # An older champion whose (random) split put half of today's holdout in its training data.
    seen = holdout.iloc[: len(holdout) // 2]
    old_train = pd.concat([train, seen], ignore_index=True)
    old_holdout = holdout.iloc[len(holdout) // 2 :]
    params = {"n_estimators": 30, "min_samples_leaf": 1, "max_depth": None}
    champion = training.fit_final(old_train, params)
    thresholds = training.choose_thresholds([0, 1], [0, 1])
    evaluation = training.evaluate(champion, old_holdout, thresholds)
    v1 = registry.register_model(
        champion, old_train, old_holdout, evaluation, settings=load_settings()
    )
    gate.gate_version(
        v1, champion, old_holdout, load_settings().replace(gate=GateSettings(auc_floor=0.5))
    )
    candidate = training.fit_final(train, {**params, "random_state": 1})
    evaluation = training.evaluate(candidate, holdout, evaluation.thresholds)
    v2 = registry.register_model(candidate, train, holdout, evaluation, settings=load_settings())
    verdict = gate.gate_version(
        v2, candidate, holdout, load_settings().replace(gate=GateSettings(auc_floor=0.5))
    )
    assert verdict.champion_version == v1
    assert verdict.n_unseen == len(holdout) - len(seen)
    # On all of the holdout the champion would look better than it is (it memorised half).
    unfair = roc_auc_score(
        holdout["stroke"], registry.load_model(v1, settings=load_settings()).predict_proba(holdout)
    )
    assert unfair > verdict.metrics()["champion_auc"]
