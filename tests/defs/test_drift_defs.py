"""The Dagster layer of drift monitoring: the drift and performance assets and their checks.

Their automation and the retraining sensor are tested in test_automation.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from _webhook import Webhook

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs import drift as drift_defs
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.simulate.generator import simulate_patients, write_patients
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-03-01"


# ------------------------------------------------------------------------- drift asset
def _score_day(day: str, cohort: pd.DataFrame) -> None:
    from stroke_dagster.core.risk import assign_tiers
    from stroke_dagster.io.validation import validate_patients
    from stroke_dagster.model.registry import load_model

    model = load_model("champion", settings=load_settings())
    valid = validate_patients(cohort).valid
    probability = model.predict_proba(valid)
    scores = pd.DataFrame(
        {
            "patient_id": valid["id"],
            "stroke_probability": probability,
            "risk_tier": assign_tiers(probability, model.thresholds),
            "model_name": model.name,
            "model_version": model.version,
            "scored_at": dt.datetime.now(dt.UTC),
        }
    )
    warehouse.replace_partition("score_history", day, scores, settings=load_settings())


def test_drift_asset_writes_tables_logs_mlflow_and_alerts_once(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    settings.ensure_dirs()
    cohort = simulate_patients(500, seed=36, with_label=False)
    cohort["age"] = (cohort["age"] + 15).clip(upper=120)  # an older population arrives
    write_patients(cohort, settings.incoming_dir / f"{DAY}.csv")
    _score_day(DAY, cohort)
    monkeypatch.setenv("STROKE_DRIFT_BACKEND", "scipy")
    with Webhook() as hook, dg.instance_for_test() as instance:
        resources = {"stroke": StrokeSettings(alert_webhook=hook.url)}
        result = dg.materialize(
            [drift_defs.drift_metrics], partition_key=DAY, resources=resources, instance=instance
        )
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        (check,) = result.get_asset_check_evaluations()
        payload = json.loads(hook.requests[0]["body"])["text"]
        # Rematerializing the day (a backfill) against the same model version does not alert.
        again = dg.materialize(
            [drift_defs.drift_metrics], partition_key=DAY, resources=resources, instance=instance
        )
        assert again.success and len(hook.requests) == 1
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "age" in (check.description or "")
    assert metadata["is_drift"] is True and "age" in metadata["drifted_features"]
    assert metadata["alert_sent"] is True and metadata["prediction_drift_rows"] == 500
    assert metadata["reference_model_version"] == "1" and metadata["detector_fitted_now"]
    tests = {r.data["feature"]: r.data for r in metadata["tests"].records}
    assert tests["age"]["test"] == "ks+mwu" and tests["age"]["drift"] is True
    assert DAY in payload and "age" in payload and result.run_id in payload
    metrics = warehouse.query_df(
        "SELECT * FROM drift_metrics ORDER BY feature", settings=load_settings()
    )
    assert len(metrics) == 13  # 10 inputs + bmi missing rate + probability + risk tier
    assert {"stroke_probability", "risk_tier"} <= set(metrics["feature"])
    assert metrics.set_index("feature").loc["age", "is_drift"]
    summary = warehouse.query_df("SELECT * FROM drift_summary", settings=load_settings())
    assert summary["run_id"][0] == again.run_id and summary["is_drift"][0]  # replaced, one row
    assert (champion_home / "models/1/drift_scipy.parquet").is_file()

    import mlflow

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("stroke-monitoring")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["dagster_run_id"] for r in runs} == {result.run_id, again.run_id}
    (run,) = [r for r in runs if r.data.tags["dagster_run_id"] == result.run_id]
    assert run.data.tags["cohort_date"] == DAY
    assert run.data.metrics["is_drift"] == 1.0 and run.data.metrics["p_value.age"] < 1e-6


def test_drift_asset_fails_clearly_without_cohort_file(champion_home: Path) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [drift_defs.drift_metrics],
            partition_key=DAY,
            resources={"stroke": StrokeSettings()},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert f"no cohort file for {DAY}" in failure.message


def test_performance_asset_records_labelled_days_and_checks_calibration(stroke_home: Path) -> None:
    settings = load_settings()
    settings.ensure_dirs()
    scores = pd.DataFrame(
        {
            "patient_id": ["1", "2", "3", "4"],
            "stroke_probability": [0.9, 0.2, 0.6, 0.1],
            "risk_tier": ["high", "elevated", "high", "low"],
            "model_name": "StrokeRF",
            "model_version": "2",
            "scored_at": dt.datetime.now(dt.UTC),
        }
    )
    warehouse.replace_partition("score_history", DAY, scores, settings=load_settings())

    def run(**kwargs: object) -> dg.ExecuteInProcessResult:
        with dg.instance_for_test() as instance:
            return dg.materialize(
                [drift_defs.performance_metrics],
                partition_key=DAY,
                resources={"stroke": StrokeSettings()},
                instance=instance,
                **kwargs,
            )

    # Started by hand without labels: a clear failure (the automation waits for the labels).
    missing = run(raise_on_error=False)
    assert not missing.success
    failure = missing.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert f"no labels file for {DAY}" in failure.description
    (settings.labels_dir / f"{DAY}.csv").write_text("id,stroke\n1,1\n2,0\n3,0\n4,0\n")
    result = run()
    (event,) = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    (check,) = result.get_asset_check_evaluations()
    # 1 of 4 observed against a mean prediction of 45%: within 3 standard errors at n = 4.
    assert check.passed and check.metadata["observed_rate"].value == pytest.approx(0.25)
    assert check.metadata["mean_predicted"].value == pytest.approx(0.45)
    assert metadata["labelled"] and metadata["n_labelled"] == 4 and metadata["n_positive"] == 1
    assert metadata["roc_auc"] == pytest.approx(1.0)
    assert metadata["brier"] == pytest.approx((0.1**2 + 0.2**2 + 0.6**2 + 0.1**2) / 4)
    stored = warehouse.query_df(
        "SELECT model_version, roc_auc FROM performance_metrics", settings=load_settings()
    )
    assert stored.to_dict("records") == [{"model_version": "2", "roc_auc": 1.0}]
