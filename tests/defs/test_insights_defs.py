"""The insight assets as Dagster runs them: real materializations against a trained champion."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs import insights
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.model import registry
from stroke_dagster.scoring import batch as scoring
from stroke_dagster.simulate.generator import simulate_patients
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-05-04"


def test_daily_insight_assets(champion_home: Path) -> None:
    df = simulate_patients(500, seed=22)
    (champion_home / "incoming").mkdir(exist_ok=True)
    df.drop(columns=["stroke"]).to_csv(champion_home / "incoming" / f"{DAY}.csv", index=False)
    cohort = scoring.current_cohort(load_settings(), DAY)
    scoring.score_file(
        cohort.path,
        registry.load_model("champion", settings=load_settings()),
        cohort_date=DAY,
        settings=load_settings(),
    )
    with dg.instance_for_test() as instance:
        (champion_home / "labels").mkdir(exist_ok=True)
        df[["id", "stroke"]].to_csv(champion_home / "labels" / f"{DAY}.csv", index=False)
        result = dg.materialize(
            [
                insights.high_risk_explanations,
                insights.label_free_estimates,
                insights.daily_calibration,
            ],
            instance=instance,
            partition_key=DAY,
            resources={"stroke": StrokeSettings()},
            run_config={"ops": {"high_risk_explanations": {"config": {"method": "path"}}}},
        )
    assert result.success
    explained = result.asset_materializations_for_node("high_risk_explanations")[0].metadata
    n_high = len(
        warehouse.query_df(
            "SELECT * FROM scores WHERE risk_tier = 'high'", settings=load_settings()
        )
    )
    assert explained["patients_explained"].value == n_high
    assert explained["max_additivity_error"].value < 1e-6
    estimate = result.asset_materializations_for_node("label_free_estimates")[0].metadata
    assert 0.5 < estimate["expected_roc_auc"].value < 1
    calibration = result.asset_materializations_for_node("daily_calibration")[0].metadata
    assert calibration["n_labelled"].value == 500
    assert calibration["reliability_diagram"].value.startswith("![Reliability](data:image/png")
    stored = warehouse.query_df("SELECT * FROM label_free_estimates", settings=load_settings())
    assert len(stored) == 1 and str(stored["cohort_date"].iloc[0])[:10] == DAY
