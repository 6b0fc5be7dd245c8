"""The training graph as Dagster runs it: real runs, a real MLflow sqlite store and registry."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from stroke_dagster.core.settings import load_settings
from stroke_dagster.definitions import defs as load_defs
from stroke_dagster.model.registry import configure_mlflow, load_model
from stroke_dagster.simulate.generator import simulate_patients, write_patients

FAST = {"ops": {"tuned_model": {"config": {"n_trials": 2, "cv_folds": 3}}}}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    # Loading reads the current instance's definitions state: give it a live one, and resolve
    # everything while it is there.
    with dg.instance_for_test():
        definitions = load_defs()
        definitions.resolve_asset_graph()
        definitions.resolve_all_job_defs()
        return definitions


def _run(defs: dg.Definitions, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("training_job")
    with dg.instance_for_test() as instance:
        return job.execute_in_process(
            run_config=run_config or FAST, instance=instance, raise_on_error=False
        )


def _client() -> MlflowClient:
    configure_mlflow(settings=load_settings())
    return MlflowClient()


def test_every_asset_is_documented_for_the_ui(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description, f"{name} has no description"
        assert node.group_name and node.group_name != "default", f"{name} has no group"
        if not node.is_materializable:
            continue  # an observable source asset takes no owners or kinds
        assert node.owners, f"{name} has no owners"
        assert any(tag.startswith("dagster/kind/") for tag in node.tags), f"{name} has no kinds"


def test_training_job_registers_a_gated_champion(
    defs: dg.Definitions, stroke_home: Path, synthetic_train_csv: Path, monkeypatch
) -> None:
    monkeypatch.setenv("STROKE_RAW_CSV", str(synthetic_train_csv))
    # With no AUC margin and tiny groups counted, some subgroup trails the population's AUC.
    strict_subgroups = {"registered_model": {"config": {"auc_margin": 0.0, "min_events": 2}}}
    result = _run(defs, {"ops": {**FAST["ops"], **strict_subgroups}})
    assert result.success

    raw_meta = result.asset_materializations_for_node("raw_patients")[0].metadata
    assert raw_meta["synthetic"].value is False and raw_meta["rows"].value == 1500
    clean_meta = result.asset_materializations_for_node("clean_patients")[0].metadata
    assert clean_meta["rows_quarantined"].value == 0
    eval_meta = result.asset_materializations_for_node("model_evaluation")[0].metadata
    assert 0.5 < eval_meta["holdout_roc_auc"].value <= 1.0
    assert "data:image/png;base64," in eval_meta["roc_curve"].value
    reg_meta = result.asset_materializations_for_node("registered_model")[0].metadata
    assert reg_meta["alias"].value == "champion" and reg_meta["version"].value == "1"
    # The version's generated model card and evidence show on the asset that registered it.
    assert "# Model card: StrokeRF version 1" in reg_meta["model_card"].value
    assert reg_meta["reliability_diagram"].value.startswith("![Reliability](data:image/png;")
    groups = {r.data["subgroup"] for r in reg_meta["subgroups"].records}
    assert "gender" in groups and "all" in groups
    assert 0 < reg_meta["holdout_oe_ratio"].value < 5
    (subgroups,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "subgroups"]
    assert not subgroups.passed and subgroups.severity == dg.AssetCheckSeverity.WARN

    client = _client()
    assert client.get_model_version("StrokeRF", "1").description.startswith("# Model card")
    assert str(client.get_model_version_by_alias("StrokeRF", "champion").version) == "1"
    # One Dagster run is one MLflow run; the Optuna trials are nested under it.
    runs = client.search_runs([client.get_experiment_by_name("stroke-risk").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"  # closed by the hook of the last step
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert str(stroke_home) in parents[0].info.artifact_uri  # artifacts under STROKE_HOME

    # The registered pipeline takes raw patient columns and returns probabilities.
    cohort = simulate_patients(50, seed=11, with_label=False)
    probabilities = load_model("champion", settings=load_settings()).predict_proba(cohort)
    assert probabilities.shape == (50,) and ((probabilities >= 0) & (probabilities <= 1)).all()

    # A second model that fails the gate (floor above any AUC) becomes challenger only.
    result = _run(defs, {**FAST, "resources": {"stroke": {"config": {"auc_floor": 0.999}}}})
    assert result.success
    reg_meta = result.asset_materializations_for_node("registered_model")[0].metadata
    assert reg_meta["alias"].value == "challenger" and reg_meta["version"].value == "2"
    assert str(client.get_model_version_by_alias("StrokeRF", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("StrokeRF", "challenger").version) == "2"
    # The gate compared both on the patients neither trained on, and says so in a WARN check.
    assert reg_meta["gate_n_unseen"].value > 0
    assert 0.5 < reg_meta["gate_champion_auc"].value <= 1.0
    assert reg_meta["gate_auc_difference_ci_low"].value <= reg_meta["gate_auc_difference"].value
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "gate_verdict"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "floor 0.9990" in check.description


def test_registered_model_is_in_the_registry_pool(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("training_job")
    node = job.graph.node_named("registered_model")
    assert node.definition.pool == "model_registry"


def test_missing_raw_file_falls_back_to_synthetic_loudly(
    defs: dg.Definitions, stroke_home: Path, monkeypatch
) -> None:
    monkeypatch.setenv("STROKE_RAW_CSV", str(stroke_home / "absent.csv"))
    job = defs.resolve_job_def("training_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("raw_patients")],
        )
        meta = result.asset_materializations_for_node("raw_patients")[0].metadata
        assert meta["synthetic"].value is True and meta["rows"].value == 5110
        logs = instance.all_logs(result.run_id)
        assert any("SYNTHETIC DATA" in (e.user_message or "") for e in logs)


def test_too_many_quarantined_rows_block_training(
    defs: dg.Definitions, stroke_home: Path, tmp_path: Path, monkeypatch
) -> None:
    patients = simulate_patients(600, seed=5)
    patients.loc[:59, "age"] = 150  # 10% out of range: above the 5% limit
    path = write_patients(patients, tmp_path / "dirty.csv")
    monkeypatch.setenv("STROKE_RAW_CSV", str(path))
    result = _run(defs)
    assert not result.success
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("quarantine_share_within_limit", False)]
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "clean_patients" in materialized and "tuned_model" not in materialized

    from stroke_dagster.warehouse import store as warehouse

    rows = warehouse.query_df(
        "select reason, count(*) as n from quarantine group by reason", settings=load_settings()
    )
    assert rows.set_index("reason")["n"].to_dict() == {"age out of range [0, 120]": 60}


@pytest.mark.slow
def test_dagster_cli_runs_the_training_job(
    stroke_home: Path, synthetic_train_csv: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.json"
    config.write_text(json.dumps(FAST))
    env = {**os.environ, "STROKE_RAW_CSV": str(synthetic_train_csv)}
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [
            str(bin_dir / "dagster"),
            "job",
            "execute",
            "-m",
            "stroke_dagster.definitions",
            "-j",
            "training_job",
            "-c",
            str(config),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(_client().get_model_version_by_alias("StrokeRF", "champion").version) == "1"


def test_labelled_cohorts_join_the_training_rows(
    defs: dg.Definitions, stroke_home: Path, synthetic_train_csv: Path, monkeypatch
) -> None:
    monkeypatch.setenv("STROKE_RAW_CSV", str(synthetic_train_csv))
    cohort = simulate_patients(200, seed=21, id_start=1)  # ids collide with the raw file's
    (stroke_home / "incoming").mkdir()
    (stroke_home / "labels").mkdir()
    write_patients(cohort.drop(columns="stroke"), stroke_home / "incoming" / "2026-03-01.csv")
    cohort[["id", "stroke"]].head(150).to_csv(
        stroke_home / "labels" / "2026-03-01.csv", index=False
    )
    selection = [dg.AssetKey(k) for k in ("raw_patients", "labelled_cohorts", "clean_patients")]
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("training_job").execute_in_process(
            instance=instance, asset_selection=selection
        )
    meta = result.asset_materializations_for_node("labelled_cohorts")[0].metadata
    assert meta["rows"].value == 150 and meta["latest_day"].value == "2026-03-01"
    clean_meta = result.asset_materializations_for_node("clean_patients")[0].metadata
    assert clean_meta["rows_valid"].value == 1500 + 150
    assert clean_meta["rows_quarantined"].value == 0


def test_malformed_setting_fails_the_run_with_one_line(
    defs: dg.Definitions, stroke_home: Path, monkeypatch
) -> None:
    monkeypatch.setenv("STROKE_RETRAIN_WINDOW_DAYS", "seven")
    job = defs.resolve_job_def("training_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("raw_patients")],
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description == "STROKE_RETRAIN_WINDOW_DAYS must be an integer >= 1, got 'seven'"
