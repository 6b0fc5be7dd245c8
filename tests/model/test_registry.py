"""MLflow store and registry (a real sqlite store): the gate, model loading, ``stroke train``."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.features import split_train_holdout
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.schema import FEATURES, TARGET
from stroke_dagster.core.settings import MODEL_NAME, GateSettings, load_settings
from stroke_dagster.defs.training_command import run_training
from stroke_dagster.io.readers import read_patient_file
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model import gate, registry, training

FAST = (20, 40, 20)  # forest sizes searched: small, quick trials


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    registry.clear_cache()


@pytest.fixture(scope="module")
def split(synthetic_train_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same train/holdout split ``run_training(csv)`` makes (fixed per patient id)."""
    valid = validate_patients(read_patient_file(synthetic_train_csv), require_label=True).valid
    return split_train_holdout(valid, holdout_fraction=0.2)


def _register(
    pipeline: Pipeline, split, thresholds: RiskThresholds | None = None
) -> tuple[str, training.Evaluation]:
    train, holdout = split
    evaluation = training.evaluate(pipeline, holdout, thresholds or RiskThresholds(0.05, 0.2))
    return registry.register_model(
        pipeline, train, holdout, evaluation, settings=load_settings()
    ), evaluation


def test_configure_mlflow_keeps_everything_under_stroke_home(
    stroke_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    experiment_id = registry.configure_mlflow(settings=load_settings())
    assert mlflow.get_tracking_uri() == f"sqlite:///{stroke_home / 'mlflow.db'}"
    assert (stroke_home / "mlflow.db").is_file()
    location = mlflow.get_experiment(experiment_id).artifact_location
    assert location == (stroke_home / "mlartifacts").as_uri()
    assert not (tmp_path / "mlruns").exists()
    # An empty registry has no champion.
    assert registry.resolve_alias("champion", settings=load_settings()) is None
    with pytest.raises(InputError, match="no champion model registered"):
        registry.load_model(settings=load_settings())


def test_mlflow_tracking_uri_overrides_the_default(
    stroke_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    registry.configure_mlflow(settings=load_settings())
    assert mlflow.get_tracking_uri() == uri
    assert (tmp_path / "elsewhere.db").is_file()
    assert not (stroke_home / "mlflow.db").exists()


def test_champion_loads_as_a_whole_pipeline(champion_home: Path, split) -> None:
    registry.configure_mlflow(settings=load_settings())
    pipeline = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@champion")
    assert isinstance(pipeline, Pipeline)
    raw = split[1][list(FEATURES)].head(50)
    proba = pipeline.predict_proba(raw)[:, 1]
    assert ((proba >= 0) & (proba <= 1)).all() and len(np.unique(proba)) > 5
    # The pyfunc flavour serves probabilities too, never a 0/1 label.
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    assert np.allclose(np.asarray(pyfunc.predict(raw))[:, 1], proba)


def test_serving_model_carries_thresholds_and_reference_data(champion_home: Path, split) -> None:
    version = registry.resolve_alias("champion", settings=load_settings())
    model = registry.load_model(settings=load_settings())
    assert model.version == version == "1"
    assert registry.load_model("1", settings=load_settings()) is model  # cached per version
    client = mlflow.MlflowClient()
    tags = client.get_model_version(MODEL_NAME, version).tags
    assert RiskThresholds.from_json(tags["risk_thresholds"]) == model.thresholds
    assert model.thresholds.elevated <= model.thresholds.high
    reference = model.reference_frame()
    assert list(reference.columns) == [*FEATURES, TARGET]
    assert len(reference) == len(split[0])
    holdout = model.holdout_predictions()
    assert list(holdout.columns) == ["id", "stroke_probability", "risk_tier", TARGET]
    assert holdout["id"].tolist() == split[1]["id"].tolist()
    scored = model.predict_proba(split[1])
    assert np.allclose(scored, holdout["stroke_probability"])
    run = client.get_run(model.run_id)
    assert run.data.tags["risk_thresholds"] == tags["risk_thresholds"]
    assert {"cv_roc_auc", "cv_brier", "holdout_roc_auc", "holdout_brier"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(model.run_id, "plots")}
    assert artifacts == {"plots/roc.png", "plots/calibration.png"}


def test_each_trial_is_a_nested_run(champion_home: Path) -> None:
    model = registry.load_model(settings=load_settings())
    children = mlflow.search_runs(
        experiment_names=[registry.EXPERIMENT_NAME],
        filter_string=f"tags.mlflow.parentRunId = '{model.run_id}'",
    )
    assert len(children) == 2  # n_trials=2 in the fixture
    assert children["metrics.cv_roc_auc"].between(0.5, 1.0).all()
    assert children["metrics.cv_brier"].notna().all()
    assert set(children["params.class_weight"]) <= {"None", "balanced", "balanced_subsample"}


def test_gate_keeps_the_champion_when_a_worse_model_comes(champion_home: Path, split) -> None:
    train, holdout = split
    # A model trained on shuffled labels: no better than chance on the same holdout.
    shuffled = train.assign(**{TARGET: np.random.default_rng(0).permutation(train[TARGET])})
    worse = training.fit_final(shuffled, {"n_estimators": 20})
    version, _ = _register(worse, split)
    verdict = gate.gate_version(
        version, worse, holdout, load_settings().replace(gate=GateSettings(auc_floor=0.0))
    )
    assert verdict.alias == "challenger" and not verdict.promoted
    assert verdict.champion_version == "1"
    figures = verdict.metrics()
    assert figures["champion_auc"] > figures["candidate_auc"] + 0.01
    assert figures["auc_difference_ci_high"] < 0  # clearly worse
    # Same hash holdout: every holdout patient is unseen by the champion.
    assert verdict.n_unseen == len(holdout)
    assert verdict.rule == gate.CANDIDATE_MINUS_CHAMPION_TRAIN
    assert registry.resolve_alias("champion", settings=load_settings()) == "1"
    assert registry.resolve_alias("challenger", settings=load_settings()) == version
    run = mlflow.MlflowClient().get_run(
        registry.load_model(version, settings=load_settings()).run_id
    )
    assert run.data.tags["gate_decision"] == "challenger"
    assert run.data.metrics["gate_champion_auc"] == pytest.approx(figures["champion_auc"])


def test_gate_moves_the_champion_to_an_equal_or_better_model(champion_home: Path, split) -> None:
    champion = registry.load_model(settings=load_settings())
    version, _ = _register(champion.pipeline, split, champion.thresholds)
    settings = load_settings().replace(
        gate=GateSettings(auc_floor=0.5, tolerance=0.0, min_events=5)
    )
    verdict = gate.gate_version(version, champion.pipeline, split[1], settings)
    assert verdict.alias == "champion"
    figures = verdict.metrics()
    assert figures["auc_difference"] == pytest.approx(0.0)
    assert figures["candidate_auc"] == pytest.approx(figures["champion_auc"])
    assert registry.resolve_alias("champion", settings=load_settings()) == version == "2"
    assert registry.load_model(settings=load_settings()).version == "2"
    tags = mlflow.MlflowClient().get_model_version(MODEL_NAME, version).tags
    assert tags["gate_decision"] == "champion" and "neither trained on" in tags["gate_reason"]


def test_gate_floor_blocks_even_the_first_model(stroke_home: Path, split) -> None:
    pipeline = training.fit_final(split[0], {"n_estimators": 20})
    version, _ = _register(pipeline, split)
    verdict = gate.gate_version(
        version, pipeline, split[1], load_settings().replace(gate=GateSettings(auc_floor=0.99))
    )
    assert verdict.alias == "challenger" and "floor 0.9900" in verdict.reason
    assert registry.resolve_alias("champion", settings=load_settings()) is None


def test_version_stores_the_ids_of_its_split(stroke_home: Path, split) -> None:
    pipeline = training.fit_final(split[0], {"n_estimators": 20})
    version, _ = _register(pipeline, split)
    ids = registry.load_model(version, settings=load_settings()).split_ids()
    assert ids is not None
    assert set(ids.loc[ids["split"] == "train", "id"]) == set(split[0]["id"].astype(str))
    assert set(ids.loc[ids["split"] == "holdout", "id"]) == set(split[1]["id"].astype(str))


def test_run_training_summary(stroke_home: Path, synthetic_train_csv: Path) -> None:
    raw = read_patient_file(synthetic_train_csv)
    raw.loc[0, "age"] = "300"  # out of range: quarantined, not trained on
    summary = run_training(raw, settings=load_settings(), n_trials=2, seed=0, n_estimators=FAST)
    assert summary["rows_in"] == len(raw) and summary["rows_quarantined"] == 1
    assert summary["alias"] == "champion" and summary["version"] == "1"
    assert summary["holdout_roc_auc"] > 0.7
    assert summary["holdout_brier"] < 0.25 * 0.75  # better than the no-skill Brier at 25%
    assert 0 <= summary["thresholds"]["elevated"] <= summary["thresholds"]["high"] <= 1
    assert summary["best_params"]["n_estimators"] <= 40


def test_cli_train_runs_the_training_job_in_the_dagster_instance(
    stroke_home: Path, synthetic_train_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dagster as dg

    from stroke_dagster.cli import main

    code = main(["train", "--data", str(synthetic_train_csv), "--trials", "1", "--seed", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model_name"] == MODEL_NAME and summary["alias"] == "champion"
    assert {"version", "cv_roc_auc", "holdout_roc_auc", "holdout_brier"} <= set(summary)
    assert registry.resolve_alias("champion", settings=load_settings()) == summary["version"]
    # The run is training_job's, recorded under DAGSTER_HOME: the UI shows the materialization.
    with dg.DagsterInstance.from_config(str(stroke_home / "dagster")) as instance:
        (run,) = instance.get_runs()
        assert run.job_name == "training_job" and run.run_id == summary["dagster_run_id"]
        event = instance.get_latest_materialization_event(dg.AssetKey("registered_model"))
        metadata = event.asset_materialization.metadata
        assert metadata["version"].value == summary["version"]
        assert metadata["alias"].value == "champion"
        # registered_model's pool admits one registration at a time.
        assert instance.event_log_storage.get_concurrency_info("model_registry").slot_count == 1


def test_cli_train_malformed_setting_exits_2(
    stroke_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stroke_dagster.cli import main

    monkeypatch.setenv("STROKE_GATE_TOLERANCE", "a bit")
    assert main(["train", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("stroke train: error: STROKE_GATE_TOLERANCE must be a number >= 0, got 'a bit'")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("id,gender,age\n1,Male,40\n", "missing required column"),
    ],
)
def test_cli_train_bad_input_exits_2(
    stroke_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    message: str,
) -> None:
    from stroke_dagster.cli import main

    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    assert main(["train", "--data", str(path), "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (stroke_home / "mlflow.db").exists()  # rejected before anything was tracked


@pytest.mark.real_data
@pytest.mark.slow
def test_real_data_training_beats_the_floor(stroke_home: Path, real_csv: Path) -> None:
    summary = run_training(real_csv, settings=load_settings(), n_trials=3, seed=0)
    assert summary["rows_in"] == 5110
    assert summary["holdout_roc_auc"] > 0.80
    assert summary["holdout_brier"] < 0.0463  # below the no-skill Brier of a 4.9 % prevalence
