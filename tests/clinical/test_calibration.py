"""Calibration metrics and site recalibration on synthetic predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from stroke_dagster.clinical import calibration as cal
from stroke_dagster.clinical import recalibration as rc


def _draw(n: int, seed: int = 0, a: float = 0.0, b: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Predictions p and outcomes drawn from expit(a + b * logit(p))."""
    rng = np.random.default_rng(seed)
    p = cal.expit(rng.normal(-3.0, 1.2, n))
    y = (rng.random(n) < cal.expit(a + b * cal.logit(p))).astype(int)
    return y, p


def test_calibrated_predictions_look_calibrated() -> None:
    y, p = _draw(40_000)
    r = cal.calibration_report(y, p)
    assert r.oe_ratio == pytest.approx(1.0, abs=0.05)
    assert r.calibration_intercept == pytest.approx(0.0, abs=0.06)
    assert r.calibration_slope == pytest.approx(1.0, abs=0.05)
    assert r.ece < 0.01
    assert r.brier == pytest.approx(np.mean((p - y) ** 2))


def test_threefold_over_prediction_is_seen() -> None:
    y, p = _draw(40_000)
    r = cal.calibration_report(y, np.clip(p * 3, 0, 1))
    assert r.oe_ratio == pytest.approx(1 / 3, rel=0.1)
    assert r.mean_difference > 0
    assert r.calibration_intercept < -0.8


def test_slope_below_one_when_predictions_too_extreme() -> None:
    y, p = _draw(40_000, a=0.3, b=0.6)
    r = cal.calibration_report(y, p)
    assert r.calibration_slope == pytest.approx(0.6, abs=0.06)


def test_fit_logistic_matches_sklearn() -> None:
    y, p = _draw(5_000, seed=3, a=-0.5, b=0.8)
    a, b = cal.fit_logistic(cal.logit(p), y)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(cal.logit(p)[:, None], y)
    assert a == pytest.approx(ref.intercept_[0], abs=1e-4)
    assert b == pytest.approx(ref.coef_[0, 0], abs=1e-4)


def test_undefined_figures_when_one_class() -> None:
    r = cal.calibration_report(np.zeros(50), np.full(50, 0.1))
    assert r.calibration_slope is None and r.calibration_intercept is None
    assert "calibration_slope" not in r.metrics()
    assert r.oe_ratio == 0.0


def test_reliability_plot_is_png() -> None:
    y, p = _draw(500)
    assert cal.reliability_plot(y, p).startswith(b"\x89PNG")


class _Fixed:
    """A 'model' returning a fixed probability per row (column ``p``)."""

    classes_ = np.array([0, 1])

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        p = x["age"].to_numpy(dtype=float)
        return np.column_stack([1 - p, p])


def _labelled(n: int, seed: int, prevalence_factor: float) -> pd.DataFrame:
    from stroke_dagster.core.schema import FEATURES

    y, p = _draw(n, seed=seed, a=np.log(prevalence_factor))
    df = pd.DataFrame({f: 0 for f in FEATURES}, index=range(n))
    df["age"] = p
    df["id"] = [f"p{i}" for i in range(n)]
    df["stroke"] = y
    return df


def test_method_follows_event_counts() -> None:
    cfg = rc.RecalibrationConfig(min_events=20, slope_min_events=100)
    assert rc.choose_method(19, cfg) is None
    assert rc.choose_method(20, cfg) == rc.INTERCEPT
    assert rc.choose_method(100, cfg) == rc.INTERCEPT_SLOPE


def test_split_by_id_is_stable_and_disjoint() -> None:
    df = _labelled(2_000, 0, 1.0)
    fit, judge = rc.split_fit_judge(df, 0.4)
    assert set(fit.id).isdisjoint(judge.id) and len(fit) + len(judge) == 2_000
    assert 0.35 < len(judge) / 2_000 < 0.45
    fit2, _ = rc.split_fit_judge(df.sample(frac=1, random_state=1), 0.4)
    assert set(fit2.id) == set(fit.id)


def test_recalibration_fixes_prevalence_shift_and_keeps_ranking() -> None:
    df = _labelled(20_000, 1, prevalence_factor=1 / 3)
    fit = rc.recalibrate(_Fixed(), df)
    assert fit.method == rc.INTERCEPT_SLOPE
    assert fit.intercept == pytest.approx(np.log(1 / 3), abs=0.25)
    assert fit.verdict.promote, fit.verdict.reason
    cand, champ = fit.verdict.candidate, fit.verdict.champion
    assert cand["roc_auc"] == pytest.approx(champ["roc_auc"], abs=1e-12)
    assert cand["oe_ratio"] == pytest.approx(1.0, abs=0.15)
    assert set(fit.fit_ids).isdisjoint(rc.split_fit_judge(df, 0.4)[1].id)


def test_too_few_events_refuses() -> None:
    df = _labelled(300, 2, 1.0)
    with pytest.raises(rc.NotEnoughEvents):
        rc.recalibrate(_Fixed(), df)


def test_verdict_refuses_worse_and_equal_candidates() -> None:
    y, p = _draw(10_000, seed=4)
    worse = cal.expit(cal.logit(p) + 1.0)
    v = rc.calibration_verdict(y, p, worse)
    assert not v.promote and "worse calibrated" in v.reason
    assert not rc.calibration_verdict(y, p, p).promote
    assert rc.calibration_verdict(y, worse, p).promote
    shuffled = np.random.default_rng(0).permutation(p)
    v = rc.calibration_verdict(y, p, shuffled)
    assert not v.promote and "ROC AUC" in v.reason


def test_compose_stays_one_wrapper() -> None:
    base = _Fixed()
    once = rc.compose(base, -1.0, 0.8)
    twice = rc.compose(once, 0.5, 1.5)
    assert twice.base is base
    x = pd.DataFrame({"age": [0.01, 0.2, 0.7]})
    expected = cal.expit(0.5 + 1.5 * (-1.0 + 0.8 * cal.logit(x["age"].to_numpy())))
    np.testing.assert_allclose(twice.predict_proba(x)[:, 1], expected, rtol=1e-12)


def _gate_evidence(y: np.ndarray, candidate: np.ndarray, champion: np.ndarray):  # noqa: ANN202
    from stroke_dagster.core.settings import GateSettings
    from stroke_dagster.model import gate

    return gate.Evidence(y, candidate, champion, GateSettings(), "2", "1", "test")


def test_gate_learns_calibration() -> None:
    from stroke_dagster.model import gate

    y, p = _draw(20_000, seed=8)
    over = cal.expit(cal.logit(p) + 1.1)  # same ranking, threefold over-prediction
    promoted = gate.judge(_gate_evidence(y, p, over), gate.RECALIBRATION_CRITERIA)
    assert promoted.promoted and "clearly better calibrated" in promoted.reason
    assert promoted.metrics()["log_loss_difference_ci_high"] < 0
    refused = gate.judge(_gate_evidence(y, over, p), gate.DEFAULT_CRITERIA)
    assert not refused.promoted and "clearly worse calibrated" in refused.reason
    same = gate.judge(_gate_evidence(y, p, p), gate.RECALIBRATION_CRITERIA)
    assert not same.promoted and "not clearly better" in same.reason
    assert gate.judge(_gate_evidence(y, p, p), gate.DEFAULT_CRITERIA).promoted
