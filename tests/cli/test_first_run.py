"""The first run of a newcomer (``make run`` = ``stroke train``): where the raw file is looked for,
what happens without it, and what the run says about the data it learnt from."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from stroke_dagster.core.settings import MODEL_NAME, load_settings

RAW_NAME = "healthcare-dataset-stroke-data.csv"


def _version_tags(version: str) -> dict[str, str]:
    from stroke_dagster.model import registry

    return registry.client(load_settings()).get_model_version(MODEL_NAME, version).tags


def test_default_raw_file_is_under_stroke_home_from_any_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stroke_dagster.defs.resources import StrokeSettings

    home = tmp_path / "home"
    monkeypatch.setenv("STROKE_HOME", str(home))
    monkeypatch.delenv("STROKE_RAW_CSV", raising=False)
    seen = set()
    for name in ("a", "b"):
        cwd = tmp_path / name
        # a decoy where the old cwd-relative default (data/raw/...) pointed
        (cwd / "data" / "raw").mkdir(parents=True)
        (cwd / "data" / "raw" / RAW_NAME).write_text("id,stroke\n")
        monkeypatch.chdir(cwd)
        seen.add(load_settings().raw_csv)
        seen.add(StrokeSettings().load().raw_csv)  # what a Dagster run reads
    assert seen == {home / "raw" / RAW_NAME}

    # Without STROKE_HOME (make run sets it to ./data): the checkout's data/raw, as before.
    monkeypatch.delenv("STROKE_HOME")
    monkeypatch.chdir(tmp_path / "a")
    assert load_settings().raw_csv == tmp_path / "a" / "data" / "raw" / RAW_NAME
    # A relative STROKE_RAW_CSV is taken from the cwd once, when the settings are read.
    monkeypatch.setenv("STROKE_RAW_CSV", "patients.csv")
    assert load_settings().raw_csv == tmp_path / "a" / "patients.csv"


@pytest.mark.parametrize("value", ["0", "false"])
def test_missing_raw_file_without_synthetic_exits_2_with_one_line(
    stroke_home: Path, tmp_path: Path, value: str
) -> None:
    env = {**os.environ, "STROKE_ALLOW_SYNTHETIC": value}
    env.pop("STROKE_RAW_CSV", None)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("stroke")), "train", "--trials", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    expected = (
        f"stroke train: error: no training data: {stroke_home / 'raw' / RAW_NAME} does not exist "
        "and STROKE_ALLOW_SYNTHETIC is off (put the labelled Kaggle file there, or set "
        "STROKE_RAW_CSV to it)"
    )
    assert done.stderr.strip() == expected and done.stdout == ""
    assert not (stroke_home / "mlflow.db").exists()  # refused before anything was tracked


def test_raw_patients_refuses_synthetic_in_a_dagster_run(
    stroke_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the UI or the daemon launch fail with the same line, and are not retried."""
    from stroke_dagster.definitions import defs as load_defs

    monkeypatch.setenv("STROKE_ALLOW_SYNTHETIC", "off")
    monkeypatch.delenv("STROKE_RAW_CSV", raising=False)
    with dg.instance_for_test() as instance:
        result = (
            load_defs()
            .resolve_job_def("training_job")
            .execute_in_process(
                instance=instance,
                asset_selection=[dg.AssetKey("raw_patients")],
                raise_on_error=False,
            )
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("no training data: ") and "\n" not in description
    assert str(stroke_home / "raw" / RAW_NAME) in description


@pytest.mark.slow
def test_synthetic_training_when_allowed_is_tagged_and_said(
    stroke_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stroke_dagster.defs.training_command import describe, run_training

    monkeypatch.setenv("STROKE_ALLOW_SYNTHETIC", "1")
    monkeypatch.delenv("STROKE_RAW_CSV", raising=False)
    settings = load_settings()
    summary = run_training(
        settings=settings, n_trials=1, cv_folds=2, n_estimators=(20, 40, 20), seed=0
    )
    assert summary["synthetic"] is True and summary["training_data"] == "synthetic"
    tags = _version_tags(summary["version"])
    assert tags["training_data"] == "synthetic" and "training_data_sha256" not in tags
    assert tags["training_data_path"] == str(stroke_home / "raw" / RAW_NAME)

    text = "\n".join(describe(summary, settings))
    assert "SYNTHETIC patients" in text and str(stroke_home / "raw" / RAW_NAME) in text
    assert f"STROKE_HOME={stroke_home}" in text and settings.mlflow_tracking_uri in text
    assert f"DAGSTER_HOME={stroke_home / 'dagster'}" in text
    assert "make ui" in text and "stroke score" in text
    assert f"{stroke_home / 'incoming'}/<YYYY-MM-DD>.csv" in text
    outcome = "became champion" if summary["alias"] == "champion" else "stayed challenger"
    assert f"Gate: v{summary['version']} {outcome}: {summary['gate_reason']}" in text


@pytest.mark.slow
def test_make_run_summary_names_real_data_then_synthetic(
    stroke_home: Path,
    synthetic_train_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``stroke train`` from another cwd trains on STROKE_HOME/raw, tagged with the file's sha256;
    once the file is gone (synthetic allowed) the next version says synthetic. The human summary
    comes first, the JSON summary stays the last stdout line."""
    from stroke_dagster.cli import main

    raw = stroke_home / "raw" / RAW_NAME
    raw.parent.mkdir()
    shutil.copy(synthetic_train_csv, raw)
    monkeypatch.delenv("STROKE_RAW_CSV", raising=False)
    monkeypatch.setenv("STROKE_ALLOW_SYNTHETIC", "1")
    monkeypatch.chdir(tmp_path)

    assert main(["train", "--trials", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    first = json.loads(lines[-1])
    assert first["training_data"] == "real" and first["alias"] == "champion"
    text = "\n".join(lines[:-1])
    assert f"Training data: the real file {raw}" in text and "SYNTHETIC" not in text
    assert f"Champion: v{first['version']}, holdout ROC AUC" in text
    tags = _version_tags(first["version"])
    assert tags["training_data"] == "real" and tags["training_data_path"] == str(raw)
    assert tags["training_data_sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()

    raw.unlink()
    assert main(["train", "--trials", "1", "--auc-floor", "0.999"]) == 0  # fails the gate
    lines = capsys.readouterr().out.strip().splitlines()
    second = json.loads(lines[-1])
    text = "\n".join(lines[:-1])
    assert second["alias"] == "challenger" and second["training_data"] == "synthetic"
    assert f"Gate: v{second['version']} stayed challenger: " in text
    assert second["champion_version"] == first["version"]
    assert second["champion_holdout_roc_auc"] == pytest.approx(first["holdout_roc_auc"], abs=1e-4)
    auc = second["champion_holdout_roc_auc"]
    assert f"Champion: v{first['version']}, holdout ROC AUC {auc:.3f}." in text
    assert "SYNTHETIC patients" in text
    assert _version_tags(second["version"])["training_data"] == "synthetic"
