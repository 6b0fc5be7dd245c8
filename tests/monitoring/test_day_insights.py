"""Per-day explanations of the high tier, label-free estimates and calibration, in the warehouse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stroke_dagster.core.settings import load_settings
from stroke_dagster.model import registry
from stroke_dagster.monitoring import day_insights
from stroke_dagster.scoring import batch as scoring
from stroke_dagster.simulate.generator import simulate_patients
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-04-02"


def _score_day(home: Path, n: int = 600, seed: int = 5) -> pd.DataFrame:
    df = simulate_patients(n, seed=seed)
    (home / "incoming").mkdir(exist_ok=True)
    (home / "labels").mkdir(exist_ok=True)
    df.drop(columns=["stroke"]).to_csv(home / "incoming" / f"{DAY}.csv", index=False)
    settings = load_settings()
    cohort = scoring.current_cohort(settings, DAY)
    scoring.score_file(
        cohort.path,
        registry.load_model("champion", settings=load_settings()),
        cohort_date=DAY,
        settings=load_settings(),
    )
    return df


def test_high_tier_explanations_add_up_and_answer_the_query(champion_home: Path) -> None:
    _score_day(champion_home)
    settings = load_settings()
    out = day_insights.explain_high_tier(settings, DAY, method="path")
    high = warehouse.query_df(
        "SELECT * FROM scores WHERE risk_tier = 'high'", settings=load_settings()
    )
    assert out["patients_explained"] == len(high) > 0
    assert out["max_additivity_error"] < 1e-6
    stored = warehouse.query_df(
        "SELECT patient_id, any_value(base_value) + sum(contribution) AS total,"
        " any_value(stroke_probability) AS p, count(*) AS n FROM patient_explanations"
        " GROUP BY patient_id",
        settings=load_settings(),
    )
    assert len(stored) == len(high) and (stored["n"] == 10).all()
    np.testing.assert_allclose(stored["total"], stored["p"], atol=1e-6)
    # Re-running replaces the day.
    day_insights.explain_high_tier(settings, DAY, method="path")
    assert len(
        warehouse.query_df("SELECT * FROM patient_explanations", settings=load_settings())
    ) == 10 * len(high)

    sql = (Path(__file__).parents[2] / "sql/queries/why_high_risk.sql").read_text()
    pid = str(high["patient_id"].iloc[0])
    why = warehouse.query_df(sql, {"patient_id": pid, "top": 3}, settings=load_settings())
    assert list(why["rank"]) == [1, 2, 3]
    assert set(why["direction"]) <= {"raises risk", "lowers risk"}
    sizes = why["contribution"].abs().to_numpy()
    assert (np.diff(sizes) <= 1e-12).all()


def test_label_free_and_calibration_of_a_day(champion_home: Path) -> None:
    df = _score_day(champion_home, n=800, seed=6)
    est = day_insights.label_free_day(DAY, load_settings())
    assert len(est) == 1 and 0.5 < est["expected_roc_auc"].iloc[0] < 1.0
    scores = warehouse.query_df("SELECT stroke_probability FROM scores", settings=load_settings())
    assert est["expected_observed_rate"].iloc[0] == pytest.approx(scores.stroke_probability.mean())
    assert day_insights.calibration_day(DAY, load_settings()) is None  # no labels yet
    df[["id", "stroke"]].to_csv(champion_home / "labels" / f"{DAY}.csv", index=False)
    cal = day_insights.calibration_day(DAY, load_settings())
    row = cal.iloc[0]
    assert row["n_labelled"] == 800 and row["model_version"] == registry.resolve_alias(
        settings=load_settings()
    )
    assert row["oe_ratio"] == pytest.approx(df["stroke"].sum() / scores.stroke_probability.sum())
    stored = warehouse.query_df("SELECT * FROM performance_calibration", settings=load_settings())
    assert len(stored) == 1 and stored["brier"].iloc[0] == pytest.approx(row["brier"])
    sql = (Path(__file__).parents[2] / "sql/queries/label_free_vs_realized.sql").read_text()
    from stroke_dagster.monitoring.performance import day_performance, write_performance

    write_performance(DAY, day_performance(DAY, settings=load_settings()), settings=load_settings())
    joined = warehouse.query_df(sql, settings=load_settings())
    assert joined["realized_roc_auc"].notna().all() and len(joined) == 1
