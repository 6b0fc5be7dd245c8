"""The core follows the settings it is given, never the environment.

The environment points at home B (``STROKE_HOME`` and ``MLFLOW_TRACKING_URI``) while the settings
passed to training, and the ``StrokeSettings`` resource of a daily Dagster run, point at home A:
the MLflow store, the registered model, its drift detector, the cohort files and the warehouse all
land in A, and nothing is written to B.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from stroke_dagster.core.settings import Settings
from stroke_dagster.defs import drift as drift_defs
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import cohort_scores, daily_cohort
from stroke_dagster.defs.training_command import run_training
from stroke_dagster.model import registry
from stroke_dagster.simulate.generator import simulate_patients, write_patients
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-04-01"
FAST = (20, 40, 20)  # forest sizes searched: small, quick trials


def test_core_writes_to_the_passed_home_not_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    home_a, home_b = tmp_path / "a", tmp_path / "b"
    home_b.mkdir()
    monkeypatch.setenv("STROKE_HOME", str(home_b))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home_b / 'mlflow.db'}")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("STROKE_DRIFT_BACKEND", "scipy")
    # Explicit values, no environment; any forest of these few patients may become champion.
    settings = Settings(home=home_a, gate={"auc_floor": 0.0})

    train_csv = write_patients(simulate_patients(600, seed=5), tmp_path / "train.csv")
    summary = run_training(train_csv, settings=settings, n_trials=2, seed=0, n_estimators=FAST)
    assert summary["alias"] == "champion"

    write_patients(
        simulate_patients(300, seed=6, with_label=False), home_a / "incoming" / f"{DAY}.csv"
    )
    stroke = StrokeSettings(
        stroke_home=str(home_a), mlflow_tracking_uri=settings.mlflow_tracking_uri
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [daily_cohort, cohort_scores, drift_defs.drift_metrics],
            partition_key=DAY,
            resources={"stroke": stroke},
            instance=instance,
        )
    assert result.success

    assert mlflow.get_tracking_uri() == settings.mlflow_tracking_uri
    assert registry.resolve_alias(settings=settings) == summary["version"]
    scored = warehouse.query_df("SELECT count(*) AS n FROM scores", settings=settings)
    assert scored["n"].item() == 300
    drift = warehouse.query_df("SELECT count(*) AS n FROM drift_summary", settings=settings)
    assert drift["n"].item() == 1
    client = registry.client(settings)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {r.info.run_name for r in client.search_runs(experiments)}
    assert {"training_job", f"drift-{DAY}"} <= runs
    assert (home_a / "mlflow.db").is_file() and any((home_a / "mlartifacts").iterdir())
    assert (home_a / "models" / summary["version"] / "drift_scipy.parquet").is_file()
    assert (home_a / "cohorts" / f"{DAY}.parquet").is_file()
    assert warehouse.exists(settings)
    assert sorted(home_b.rglob("*")) == []
