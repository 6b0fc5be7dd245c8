"""Shared fixtures: an isolated STROKE_HOME per test, synthetic patients, one trained champion."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_CSV = os.environ.get("STROKE_RAW_CSV", "")
# The daily partitions start at the go-live day, read when the definitions load: tests use days
# from January 2026 on.
os.environ.setdefault("STROKE_GO_LIVE", "2026-01-01")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REAL_CSV and Path(REAL_CSV).is_file():
        return
    skip = pytest.mark.skip(reason="set STROKE_RAW_CSV to the Kaggle file to run real-data tests")
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_leftover_dagster_state_storage() -> Iterator[None]:
    """Start every test without a Dagster definitions-state storage in the context.

    Entering a ``DagsterInstance`` publishes its state storage in a context variable that loading
    the Definitions reads; instances entered and left out of order by earlier tests can leave a
    dead one behind. Each test starts clean instead.
    """
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(autouse=True)
def _no_leftover_mlflow_run() -> Iterator[None]:
    """End any MLflow run a test left active (e.g. a failed Dagster run's), so that the next
    test does not log into a run of another test's store."""
    yield
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run()


def _isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("STROKE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(exist_ok=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("STROKE_API_KEY", raising=False)
    monkeypatch.delenv("STROKE_ALERT_WEBHOOK", raising=False)
    return home


@pytest.fixture
def stroke_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty STROKE_HOME (and DAGSTER_HOME inside it) for one test."""
    return _isolate(monkeypatch, tmp_path / "home")


@pytest.fixture
def real_csv() -> Path:
    return Path(REAL_CSV)


@pytest.fixture(scope="session")
def synthetic_train_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 labelled synthetic patients in the raw Kaggle layout (bmi ``N/A`` when missing)."""
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    path = tmp_path_factory.mktemp("synthetic") / "patients.csv"
    write_patients(simulate_patients(1500, seed=7), path)
    return path


@pytest.fixture(scope="session")
def _champion_home(
    tmp_path_factory: pytest.TempPathFactory, synthetic_train_csv: Path
) -> Iterator[Path]:
    """A STROKE_HOME holding one small registered champion (trained once per test session)."""
    home = tmp_path_factory.mktemp("champion") / "home"
    patch = pytest.MonkeyPatch()
    _isolate(patch, home)
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.defs.training_command import run_training

    run_training(synthetic_train_csv, settings=load_settings(), n_trials=2, seed=0)
    patch.undo()
    yield home


@pytest.fixture
def champion_home(_champion_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the trained STROKE_HOME for one test (its warehouse starts empty)."""
    home = tmp_path / "home"
    shutil.copytree(_champion_home, home, ignore=shutil.ignore_patterns("warehouse*"))
    return _isolate(monkeypatch, home)
