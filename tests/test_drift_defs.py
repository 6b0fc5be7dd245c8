"""The Dagster layer of drift monitoring: asset runs, schedule, labels and retraining sensors."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from test_alerts import Webhook

from stroke_dagster import warehouse
from stroke_dagster.defs import drift as drift_defs
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.settings import get_settings
from stroke_dagster.simulate import simulate_patients, write_patients

DAY = "2026-03-01"


def _summary(day: str, is_drift: bool, version: str = "1") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "is_drift": is_drift,
                "feature_drift": is_drift,
                "missingness_drift": False,
                "prediction_drift": False,
                "n_tests": 11,
                "n_drifted": int(is_drift),
                "share_drifted": is_drift / 11,
                "drifted_features": "age" if is_drift else "",
                "n_cohort": 500,
                "backend": "scipy",
                "correction": "bonferroni",
                "alpha": 0.05,
                "reference_model_version": version,
                "run_id": None,
                "computed_at": dt.datetime.now(dt.UTC),
            }
        ]
    )


def _write_days(flags: list[bool], version: str = "1", start: str = "2026-03-01") -> None:
    first = dt.date.fromisoformat(start)
    for offset, flag in enumerate(flags):
        day = (first + dt.timedelta(days=offset)).isoformat()
        warehouse.replace_partition("drift_summary", day, _summary(day, flag, version))


def _tick(instance: dg.DagsterInstance, cursor: str | None = None):  # noqa: ANN202
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return drift_defs.retraining_sensor.evaluate_tick(context)


# --------------------------------------------------------------------- retraining sensor
def test_retraining_sensor_skips_without_enough_drift(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_RETRAIN_DRIFTED_DAYS", "3")
    monkeypatch.setenv("STROKE_RETRAIN_WINDOW_DAYS", "5")
    # 3 drifted days, but the oldest falls out of the 5-day window; drift against an older
    # champion (v0) does not count either
    _write_days([True, False, True, False, False, True, False])
    _write_days([True] * 5, version="0", start="2026-04-01")
    with dg.instance_for_test() as instance:
        data = _tick(instance)
    assert not data.run_requests
    assert "2 of the last 5 checked day(s) drifted against champion v1" in data.skip_message
    assert "not enough drift" in data.skip_message


def test_retraining_sensor_requests_training_then_cools_down(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_RETRAIN_DRIFTED_DAYS", "3")
    monkeypatch.setenv("STROKE_RETRAIN_WINDOW_DAYS", "5")
    monkeypatch.setenv("STROKE_RETRAIN_COOLDOWN_HOURS", "24")
    _write_days([False, False, True, False, True, True, False])
    with dg.instance_for_test() as instance:
        first = _tick(instance)
        assert len(first.run_requests) == 1
        request = first.run_requests[0]
        assert drift_defs.retraining_sensor.job_name == "training_job"
        assert request.tags["stroke/trigger"] == "drift"
        assert request.tags["stroke/drifted_days"] == "2026-03-03,2026-03-05,2026-03-06"
        assert request.run_key == "retrain-v1-2026-03-06"
        state = json.loads(first.cursor)
        assert state["champion"] == "1"
        second = _tick(instance, cursor=first.cursor)
        assert not second.run_requests and "cooldown of 24 h not over" in second.skip_message
        # once the cooldown is over the sensor may request again
        state["last_request_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)).isoformat()
        third = _tick(instance, cursor=json.dumps(state))
        assert len(third.run_requests) == 1


def test_retraining_sensor_respects_a_recent_training_run(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_RETRAIN_DRIFTED_DAYS", "2")
    monkeypatch.setenv("STROKE_RETRAIN_WINDOW_DAYS", "3")
    _write_days([True, True, True])

    @dg.op
    def noop() -> None:
        pass

    @dg.job(name="training_job")
    def stand_in_training_job() -> None:  # a real run of that name (e.g. started by hand)
        noop()

    with dg.instance_for_test() as instance:
        run = stand_in_training_job.execute_in_process(instance=instance)
        data = _tick(instance)
    assert not data.run_requests
    assert f"training_job run {run.run_id} started within the cooldown" in data.skip_message


# ------------------------------------------------------------------------- drift asset
def _score_day(day: str, cohort: pd.DataFrame) -> None:
    from stroke_dagster.registry import load_model
    from stroke_dagster.risk import assign_tiers
    from stroke_dagster.validation import validate_patients

    model = load_model("champion")
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
    warehouse.replace_partition("scores", day, scores)


def test_drift_asset_writes_tables_logs_mlflow_and_alerts(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    cohort = simulate_patients(500, seed=36, with_label=False)
    cohort["age"] = (cohort["age"] + 15).clip(upper=120)  # an older population arrives
    write_patients(cohort, settings.incoming_dir / f"{DAY}.csv")
    _score_day(DAY, cohort)
    monkeypatch.setenv("STROKE_DRIFT_BACKEND", "scipy")
    with Webhook() as hook, dg.instance_for_test() as instance:
        monkeypatch.setenv("STROKE_ALERT_WEBHOOK", hook.url)
        result = dg.materialize(
            [drift_defs.drift_metrics],
            partition_key=DAY,
            resources={"stroke": StrokeSettings()},
            instance=instance,
        )
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        payload = json.loads(hook.requests[0]["body"])["text"]
    assert metadata["is_drift"] is True and "age" in metadata["drifted_features"]
    assert metadata["alert_sent"] is True and metadata["prediction_drift_rows"] == 500
    assert metadata["reference_model_version"] == "1" and metadata["detector_fitted_now"]
    assert "| age | ks+mwu |" in metadata["tests"]
    assert DAY in payload and "age" in payload and result.run_id in payload
    metrics = warehouse.query_df("SELECT * FROM drift_metrics ORDER BY feature")
    assert len(metrics) == 13  # 10 inputs + bmi missing rate + probability + risk tier
    assert {"stroke_probability", "risk_tier"} <= set(metrics["feature"])
    assert metrics.set_index("feature").loc["age", "is_drift"]
    summary = warehouse.query_df("SELECT * FROM drift_summary")
    assert summary["run_id"][0] == result.run_id and summary["is_drift"][0]
    assert (champion_home / "models/1/drift_scipy.pkl").is_file()

    import mlflow

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("stroke-monitoring")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["cohort_date"] == DAY and run.data.tags["dagster_run_id"] == result.run_id
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


# --------------------------------------------------------------- schedule and labels sensor
def test_daily_drift_check_runs_at_midnight_for_the_previous_day() -> None:
    defs = dg.Definitions(
        assets=[drift_defs.drift_metrics],
        jobs=[drift_defs.drift_job],
        schedules=[drift_defs.daily_drift_check],
        resources={"stroke": StrokeSettings()},
    )
    schedule = defs.get_schedule_def("daily_drift_check")
    assert schedule.cron_schedule == "0 0 * * *" and schedule.execution_timezone == "UTC"
    when = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        data = schedule.evaluate_tick(context)
    (request,) = data.run_requests
    assert request.partition_key == "2026-03-01"


def test_labels_sensor_requests_each_new_label_file_once(stroke_home: Path) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    defs = dg.Definitions(
        assets=[drift_defs.performance_metrics],
        jobs=[drift_defs.performance_job],
        sensors=[drift_defs.labels_sensor],
        resources={"stroke": StrokeSettings()},
    )

    def tick(instance: dg.DagsterInstance, cursor: str | None = None):  # noqa: ANN202
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        return drift_defs.labels_sensor.evaluate_tick(context)

    with dg.instance_for_test() as instance:
        empty = tick(instance)
        assert not empty.run_requests and "no new or changed label files" in empty.skip_message
        (settings.labels_dir / f"{DAY}.csv").write_text("id,stroke\n1,0\n")
        first = tick(instance)
        assert [r.partition_key for r in first.run_requests] == [DAY]
        assert not tick(instance, cursor=first.cursor).run_requests
        (settings.labels_dir / f"{DAY}.csv").write_text("id,stroke\n1,1\n2,0\n")  # corrected
        os.utime(settings.labels_dir / f"{DAY}.csv", ns=(1, 2))
        assert [r.partition_key for r in tick(instance, cursor=first.cursor).run_requests] == [DAY]


def test_performance_asset_records_labelled_days_only(stroke_home: Path) -> None:
    settings = get_settings()
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
    warehouse.replace_partition("scores", DAY, scores)

    def run() -> dict:
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [drift_defs.performance_metrics],
                partition_key=DAY,
                resources={"stroke": StrokeSettings()},
                instance=instance,
            )
        (event,) = result.get_asset_materialization_events()
        return {k: v.value for k, v in event.materialization.metadata.items()}

    assert run() == {"labelled": False, "rows_written": 0}
    (settings.labels_dir / f"{DAY}.csv").write_text("id,stroke\n1,1\n2,0\n3,0\n4,0\n")
    metadata = run()
    assert metadata["labelled"] and metadata["n_labelled"] == 4 and metadata["n_positive"] == 1
    assert metadata["roc_auc"] == pytest.approx(1.0)
    assert metadata["brier"] == pytest.approx((0.1**2 + 0.2**2 + 0.6**2 + 0.1**2) / 4)
    stored = warehouse.query_df("SELECT model_version, roc_auc FROM performance_metrics")
    assert stored.to_dict("records") == [{"model_version": "2", "roc_auc": 1.0}]
