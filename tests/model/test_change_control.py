"""Change control per version (a real MLflow store): why it exists, what changed, the criteria
recorded before the gate with its results, the decision, the rollback; and the CHAI card."""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from stroke_dagster.cli import main
from stroke_dagster.core.features import split_train_holdout
from stroke_dagster.core.settings import MODEL_NAME, load_settings
from stroke_dagster.io.readers import read_patient_file
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model import change_control, registry
from stroke_dagster.model.card import change_control_lines
from stroke_dagster.model.version_docs import model_card_text, version_record
from stroke_dagster.simulate.generator import simulate_patients, write_patients

DEFAULT = ["auc_floor", "auc_vs_champion", "calibration_vs_champion"]
DEFAULT += ["calibration_in_the_large_vs_champion"]
# Margins wide enough that any sane retrain is promoted (the rollback then has a target).
LENIENT = {
    "STROKE_GATE_AUC_FLOOR": "0.5",
    "STROKE_GATE_TOLERANCE": "1.0",
    "STROKE_GATE_LOG_LOSS_MARGIN": "10",
    "STROKE_GATE_OE_MARGIN": "100",
    "STROKE_GATE_MIN_EVENTS": "2",
}


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    registry.clear_cache()


def _record(version: str) -> dict:
    record = change_control.read_record(version, load_settings())
    assert record is not None, f"v{version} has no change_control.json"
    return record


def _description(version: str) -> str:
    return registry.client(load_settings()).get_model_version(MODEL_NAME, version).description


def _write_day(home: Path, day: str, n: int, seed: int, keep_positive: float = 1.0) -> None:
    """A labelled cohort day: incoming/<day>.csv and labels/<day>.csv."""
    df = simulate_patients(n, seed=seed, id_start=seed * 100_000)
    rng = np.random.default_rng(seed + 1000)
    df = df[(df["stroke"] == 0) | (rng.random(len(df)) < keep_positive)]
    (home / "incoming").mkdir(exist_ok=True)
    (home / "labels").mkdir(exist_ok=True)
    write_patients(df.drop(columns="stroke"), home / "incoming" / f"{day}.csv")
    df[["id", "stroke"]].to_csv(home / "labels" / f"{day}.csv", index=False)


def test_first_training(champion_home: Path, synthetic_train_csv: Path) -> None:
    record = _record("1")
    why = record["why"]
    assert why["kind"] == change_control.FIRST_TRAINING and why["launched_by"] == "stroke train"
    assert why["dagster_run_id"]

    # The data: exactly the rows the split gave, hashed by content; the source file's hash.
    valid = validate_patients(read_patient_file(synthetic_train_csv), require_label=True).valid
    train, holdout = split_train_holdout(valid, 0.2)
    data = record["what_changed"]["data"]
    assert data["training"]["sha256"] == change_control.frame_sha256(train)
    assert data["training"]["rows"] == len(train) and data["holdout"]["rows"] == len(holdout)
    assert data["training"]["events"] == int(train["stroke"].sum()) > 0
    assert data["training"]["days"] == [] and data["files"] == []
    assert data["source"]["path"] == str(synthetic_train_csv)
    assert len(data["source"]["sha256"]) == 64
    code = record["what_changed"]["code"]
    assert code["package"] == "stroke-dagster" and code["package_version"]
    assert code["code_version"].startswith(code["package_version"])
    assert set(record["what_changed"]["hyperparameters"]["forest"]) >= {"n_estimators"}
    assert record["what_changed"]["against_previous_champion"]["previous_champion"] is None

    # Criteria recorded before the gate (the alias moved after), each with its result.
    acceptance = record["acceptance"]
    assert acceptance["recorded_before_evaluation"]
    criteria = acceptance["criteria"]
    gate = load_settings().gate
    margins = {c["name"]: c["margin"] for c in criteria["criteria"]}
    assert margins == {
        "auc_floor": gate.auc_floor,
        "auc_vs_champion": -gate.tolerance,
        "calibration_vs_champion": 1 + gate.log_loss_margin,
        "calibration_in_the_large_vs_champion": pytest.approx(math.log(gate.oe_margin)),
    }
    tags = registry.client(load_settings()).get_model_version(MODEL_NAME, "1").tags
    recorded = dt.datetime.fromisoformat(criteria["recorded_at"]).replace(microsecond=0)
    assert recorded <= dt.datetime.fromisoformat(tags["champion_since"])
    assert tags[change_control.REASON_TAG] == change_control.FIRST_TRAINING
    results = {r["criterion"]: r for r in acceptance["results"]}
    assert list(results) == DEFAULT
    assert results["auc_floor"]["outcome"] == "pass"
    assert results["auc_floor"]["bound"] > results["auc_floor"]["margin"] == gate.auc_floor
    assert "no other champion" in results["auc_vs_champion"]["reason"]

    assert record["decision"]["outcome"] == "promote" and record["decision"]["alias"] == "champion"
    assert record["rollback"]["command"] is None and "first champion" in record["rollback"]["note"]

    # The Markdown card, the version's description and the CHAI card.
    card = model_card_text("1", settings=load_settings())
    assert "## 13. Change control" in card and "first training" in card
    rate = data["training"]["events"] / data["training"]["rows"]
    assert f"stroke rate {rate:.1%}" in card  # of the rows it trained on
    assert "| auc_floor | ROC AUC > margin | 0.7000 |" in card
    assert "## 13. Change control" in _description("1")
    chai = version_record("1", "chai", settings=load_settings())
    assert chai["BasicInfo"]["ModelName"] == MODEL_NAME
    assert chai["ReleaseInfo"]["ReleaseVersion"] == "1"
    assert chai["ReleaseInfo"]["ReleaseStage"].startswith("deployed")
    assert chai["TrustIngredients"]["AISystemFacts"]["FoundationModels"].startswith("not appl")
    assert data["training"]["sha256"] in json.dumps(chai)
    assert {"BasicInfo/DeveloperContact", "ReleaseInfo/RegulatoryApproval"} <= set(
        chai["UnknownFields"]
    )
    fairness = chai["KeyMetrics"]["FairnessEquity"]["Results"]["MetricResult"]
    labels = {r["Label"] for r in fairness}
    assert "all=all" in labels and any(label.startswith("gender=") for label in labels)
    usefulness = chai["KeyMetrics"]["UsefulnessUsabilityEfficacy"]["Results"]["MetricResult"]
    auc = json.loads(next(r["ValueJson"] for r in usefulness if r["Label"] == "roc_auc"))
    assert 0.5 < auc <= 1.0


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from stroke_dagster.definitions import defs as load_defs

    with dg.instance_for_test():
        definitions = load_defs()
        definitions.resolve_all_job_defs()
        return definitions


@pytest.mark.slow  # a full training_job / recalibration run
def test_drift_retraining(
    defs: dg.Definitions,
    champion_home: Path,
    synthetic_train_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in LENIENT.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("STROKE_RAW_CSV", str(synthetic_train_csv))
    _write_day(champion_home, "2026-01-10", 200, seed=21)
    drifted = "2026-01-08,2026-01-09,2026-01-10"
    tags = {
        "stroke/trigger": "drift",
        "stroke/champion": "1",
        "stroke/retrain_window": "2026-01-04..2026-01-10",
        "stroke/latest_day": "2026-01-10",
        "stroke/drifted_days": drifted,
        "stroke/retrain_reason": "3 of the last 7 checked day(s) drifted",
    }
    run_config = {"ops": {"tuned_model": {"config": {"n_trials": 2, "cv_folds": 3}}}}
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("training_job").execute_in_process(
            run_config=run_config, instance=instance, tags=tags, raise_on_error=False
        )
    assert result.success
    meta = result.asset_materializations_for_node("registered_model")[0].metadata
    assert meta["change_reason"].value == change_control.DRIFT_RETRAINING
    version = meta["version"].value
    assert version == "2" and meta["alias"].value == "champion"

    record = _record(version)
    why = record["why"]
    assert why["kind"] == change_control.DRIFT_RETRAINING
    assert why["drifted_days"] == drifted.split(",") and why["champion_at_trigger"] == "1"
    assert why["dagster_run_id"] == result.run_id and why["policy"].startswith("3 of")
    changed = record["what_changed"]
    diff = changed["against_previous_champion"]
    assert diff["previous_champion"] == "1" and diff["training_data_identical"] is False
    assert diff["training_days_added"] == ["2026-01-10"] and diff["training_days_removed"] == []
    assert diff["training_rows"]["change"] == changed["data"]["training"]["rows"] - int(
        _record("1")["what_changed"]["data"]["training"]["rows"]
    )
    assert diff["training_rows"]["change"] > 0
    assert diff["hyperparameters"]["tuning"]["cv_folds"] == {"previous": "4", "new": "3"}
    roles = {(f["day"], f["role"]) for f in changed["data"]["files"]}
    assert roles == {("2026-01-10", "cohort"), ("2026-01-10", "labels")}
    assert all(len(f["sha256"]) == 64 for f in changed["data"]["files"])

    # Results against the champion, each with its estimate, bound and margin as recorded.
    results = {r["criterion"]: r for r in record["acceptance"]["results"]}
    auc = results["auc_vs_champion"]
    assert auc["outcome"] == "pass" and auc["margin"] == -1.0 == auc["margin_as_recorded"]
    assert auc["bound"] >= auc["margin"] and auc["bound"] <= auc["estimate"]
    assert results["calibration_vs_champion"]["margin"] == 11.0
    assert all(r["margin_as_recorded_before"] for r in results.values())
    assert record["decision"] == {**record["decision"], "outcome": "promote", "compared_with": "1"}

    # The rollback command names the previous champion, and works.
    rollback = record["rollback"]
    assert rollback["needed"] and rollback["to_version"] == "1"
    assert rollback["command"].startswith("stroke rollback --to 1 ")
    argv = shlex.split(rollback["command"].replace("<why", "withdrawn: why"))
    assert argv[0] == "stroke"
    stroke = str(Path(sys.executable).with_name("stroke"))
    subprocess.run([stroke, *argv[1:]], check=True, timeout=300)
    assert registry.resolve_alias(settings=load_settings()) == "1"
    tags = registry.client(load_settings()).get_model_version("StrokeRF", version).tags
    assert tags["rolled_back"].startswith("to v1: withdrawn")

    card = model_card_text(version, settings=load_settings())
    assert "Drifted days: 2026-01-08, 2026-01-09, 2026-01-10" in card
    assert "Against the previous champion v1" in card and "days added 2026-01-10" in card
    assert "stroke rollback --to 1 " in _description(version)


@pytest.mark.slow  # a full training_job / recalibration run
def test_recalibration(
    champion_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_GATE_MIN_EVENTS", "10")  # small site days, quick test
    _write_day(champion_home, "2026-01-05", 2500, 1, keep_positive=0.25)
    _write_day(champion_home, "2026-01-06", 2500, 2, keep_positive=0.25)
    code = main(["recalibrate", "--min-events", "10", "--slope-min-events", "500"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    version = summary["version"]
    assert summary["alias"] == "champion", summary["reason"]

    record = _record(version)
    why = record["why"]
    assert why["kind"] == change_control.RECALIBRATION
    assert why["site_days"] == ["2026-01-05", "2026-01-06"] and why["recalibrated_from"] == "1"
    assert why["launched_by"] == "stroke recalibrate"
    data = record["what_changed"]["data"]
    fit = data["recalibration_fit"]
    assert (fit["rows"], fit["events"]) == (summary["n_fit"], summary["n_fit_events"])
    assert fit["days"] == ["2026-01-05", "2026-01-06"] and len(fit["sha256"]) == 64
    first = _record("1")["what_changed"]["data"]["training"]
    assert data["training"] == {**first, "inherited_from": "1"}
    hyper = record["what_changed"]["hyperparameters"]
    assert hyper["recalibration"]["method"] == "intercept"
    diff = record["what_changed"]["against_previous_champion"]
    assert diff["training_data_identical"] is True and diff["hyperparameters"]["forest"] == {}
    assert set(diff["hyperparameters"]["recalibration"]) >= {"method", "intercept"}

    assert record["acceptance"]["criteria"]["min_events"] == 10
    results = {r["criterion"]: r for r in record["acceptance"]["results"]}
    assert list(results) == [*DEFAULT, "calibration_gain"]
    assert results["calibration_gain"]["outcome"] == "pass"
    assert results["calibration_gain"]["bound"] < results["calibration_gain"]["margin"] == 0.0
    assert record["rollback"]["command"].startswith("stroke rollback --to 1 ")

    card = model_card_text(version, settings=load_settings())
    assert "Site days recalibrated on: 2026-01-05, 2026-01-06" in card
    assert "| calibration_gain |" in card and "(inherited from v1)" in card
    assert "## 13. Change control" in _description(version)
    chai = version_record(version, "chai", settings=load_settings())
    assert "recalibration" in chai["TrustIngredients"]["AISystemFacts"]["ModelType"]
    assert main(["model-card", "--version", version, "--format", "change-control"]) == 0
    assert json.loads(capsys.readouterr().out)["why"]["kind"] == change_control.RECALIBRATION


def test_why_from_tags_without_a_drift_trigger() -> None:
    assert change_control.why_from_tags({}, run_id="r", previous_champion="3")["kind"] == (
        change_control.TRAINING
    )
    manual = change_control.why_from_tags(
        {"stroke/launched_by": "stroke train"}, run_id="r", previous_champion="3"
    )
    assert manual["kind"] == change_control.MANUAL_TRAINING


def test_code_version_of_a_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROKE_CODE_VERSION", "build-42")
    code = change_control.code_version(load_settings())
    assert code["code_version"] == "build-42" and code["git_commit"] is None
    assert code["package_version"]


def test_a_version_not_gated_has_nothing_to_roll_back() -> None:
    """The new forest of a retrain that was recalibrated: recorded, but the recalibration was
    the version gated."""
    record = change_control.build_record(
        version="4",
        why={"kind": change_control.DRIFT_RETRAINING},
        data={"training": {"rows": 10, "sha256": "a"}},
        hyper={},
        code={},
        previous=None,
        criteria=None,
        verdict=None,
        note="recalibrated as v5, which was gated in its place",
    )
    assert record["decision"]["outcome"] == "not gated"
    assert record["decision"]["reason"].startswith("recalibrated as v5")
    assert not record["acceptance"]["recorded_before_evaluation"]
    assert record["rollback"]["needed"] is False and record["rollback"]["command"] is None
    assert "No change-control record" not in "\n".join(change_control_lines(record))
    assert "not gated" in "\n".join(change_control_lines(record))


def test_rollback_refuses_an_unknown_or_current_version_with_one_line(
    champion_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stroke_dagster.cli import main

    assert main(["rollback", "--to", "9", "--reason", "bad release"]) == 2
    assert "no version or alias '9'" in capsys.readouterr().err
    assert main(["rollback", "--to", "1", "--reason", "bad release"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "stroke rollback: error: v1 is already the champion"
    assert main(["rollback", "--to", "1", "--reason", "  "]) == 2
    assert registry.resolve_alias(settings=load_settings()) == "1"
