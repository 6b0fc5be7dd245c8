"""Decision curves, subgroup tables and label-free performance estimates on synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stroke_dagster.clinical import decision_curve as dc
from stroke_dagster.clinical import stats, subgroups
from stroke_dagster.clinical.calibration import expit
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.monitoring import label_free

THRESHOLDS = RiskThresholds(elevated=0.03, high=0.12)


def _cohort(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.uniform(1, 90, n)
    p = expit(-7 + 0.07 * age + rng.normal(0, 0.5, n))
    y = (rng.random(n) < p).astype(int)
    features = pd.DataFrame(
        {
            "gender": rng.choice(["Female", "Male", "Other"], n, p=[0.55, 0.449, 0.001]),
            "age": age,
            "Residence_type": rng.choice(["Rural", "Urban"], n),
            "work_type": rng.choice(
                ["Private", "Self-employed", "Never_worked"], n, p=[0.7, 0.29, 0.01]
            ),
        }
    )
    return features, y, p


def test_net_benefit_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    flagged = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    # TP/n = 0.1, FP/n = 0.1, t/(1-t) = 0.25
    assert float(dc.net_benefit(y, flagged, 0.2)) == pytest.approx(0.1 - 0.1 * 0.25)


def test_decision_curve_on_an_informative_model() -> None:
    _, y, p = _cohort(20_000)
    curve = dc.decision_curve(y, p, THRESHOLDS)
    t = curve.table
    assert t["treat_all"].iloc[0] == pytest.approx(y.mean() - (1 - y.mean()) * 0.01 / 0.99)
    assert (t["treat_none"] == 0).all()
    assert curve.useful_ranges, "a calibrated informative model adds value somewhere"
    lo, hi = curve.useful_ranges[0]
    assert lo <= 0.05 and hi > lo
    assert set(curve.tier_net_benefit) == {"elevated", "high"}
    assert dc.decision_curve_plot(curve).startswith(b"\x89PNG")


def test_uninformative_model_adds_no_value() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(5_000) < 0.05).astype(int)
    curve = dc.decision_curve(y, np.full(5_000, 0.05), grid=np.array([0.02, 0.1, 0.2]))
    assert curve.useful_ranges == []
    assert "no threshold" in curve.describe_ranges()


def test_delong_matches_sklearn_and_covers() -> None:
    _, y, p = _cohort(3_000, seed=2)
    auc, low, high = stats.auc_ci(y, p)
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert stats.auc(y, p) == pytest.approx(auc, abs=1e-15)
    assert low < auc < high and high - low < 0.2
    assert stats.auc(np.zeros(5, dtype=int), np.linspace(0, 1, 5)) is None


def test_subgroup_table_reports_small_groups() -> None:
    features, y, p = _cohort(8_000, seed=3)
    table = subgroups.subgroup_table(features, y, p, THRESHOLDS)
    assert table.iloc[0]["group"] == "all"
    assert set(table["subgroup"]) == {"all", *subgroups.SUBGROUP_COLUMNS}
    assert set(table[table.subgroup == "age_band"].group) == set(subgroups.AGE_BANDS)
    other = table[(table.subgroup == "gender") & (table.group == "Other")].iloc[0]
    assert other["status"] == subgroups.TOO_SMALL and other["n"] > 0
    tiny = table[(table.subgroup == "work_type") & (table.group == "Never_worked")].iloc[0]
    assert tiny["status"] == subgroups.TOO_SMALL and tiny["n"] > 0
    male = table[(table.subgroup == "gender") & (table.group == "Male")].iloc[0]
    assert male["status"] == subgroups.OK and male["roc_auc_low"] < male["roc_auc"]
    md = subgroups.to_markdown(table)
    assert "too small" in md and "| gender | Other |" in md


def test_subgroup_warnings_fire_on_a_miscalibrated_group() -> None:
    features, y, p = _cohort(20_000, seed=4)
    rural = (features["Residence_type"] == "Rural").to_numpy()
    p_bad = np.where(rural, np.clip(p * 3, 0, 1), p)
    table = subgroups.subgroup_table(features, y, p_bad, THRESHOLDS)
    warnings = subgroups.subgroup_warnings(table)
    assert any("Residence_type=Rural" in w and "observed/expected" in w for w in warnings)
    calibrated = subgroups.subgroup_warnings(subgroups.subgroup_table(features, y, p, THRESHOLDS))
    # Within an age band age no longer separates patients, so only age bands may trail.
    assert all(w.startswith("age_band=") for w in calibrated)
    noisy = np.where(rural, np.random.default_rng(0).permutation(p), p)
    table = subgroups.subgroup_table(features, y, noisy, THRESHOLDS)
    assert any("Rural: ROC AUC" in w for w in subgroups.subgroup_warnings(table))


def test_expected_auc_tracks_realized_auc_when_calibrated() -> None:
    _, _, p = _cohort(50_000, seed=5)
    rng = np.random.default_rng(6)
    realized = [roc_auc_score((rng.random(len(p)) < p).astype(int), p) for _ in range(5)]
    est = label_free.estimate(p)
    assert est.expected_roc_auc == pytest.approx(np.mean(realized), abs=0.01)
    assert est.expected_observed_rate == pytest.approx(p.mean())


def test_expected_auc_edge_cases() -> None:
    assert label_free.expected_roc_auc(np.full(10, 0.2)) == pytest.approx(0.5)
    assert label_free.expected_roc_auc(np.zeros(5)) is None
    assert label_free.expected_roc_auc(np.array([])) is None
