"""The one settings object: defaults, nested sections, environment names, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import (
    ENV_VARS,
    DriftSettings,
    Settings,
    SettingsError,
    load_settings,
)


def test_defaults_without_any_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.home == (tmp_path / "data").resolve()
    assert settings.mlflow_tracking_uri == f"sqlite:///{settings.home / 'mlflow.db'}"
    assert settings.dagster_home == settings.home / "dagster"
    assert (settings.gate.auc_floor, settings.gate.tolerance) == (0.70, 0.02)
    assert (settings.retrain.drifted_days, settings.retrain.window_days) == (3, 7)
    assert settings.retrain.cooldown_hours == 72.0
    assert settings.drift == DriftSettings()
    assert (settings.scoring.rescore_days, settings.scoring.cohort_due_hour) == (1, 6)
    assert settings.api.api_key is None and settings.api.telemetry is True
    assert settings.alerts.webhook is None
    assert settings.warehouse.telemetry_retention_days == 90


def test_documented_variables_reach_their_sections(tmp_path: Path) -> None:
    environ = {
        "STROKE_HOME": str(tmp_path / "h"),
        "STROKE_GATE_AUC_FLOOR": "0.6",
        "STROKE_DRIFT_ALPHA": "0.01",
        "STROKE_DRIFT_BACKEND": " SciPy ",
        "STROKE_DRIFT_MISSING_FLOOR": "0.05",
        "STROKE_DRIFT_LOCATION_TEST": "off",
        "STROKE_RETRAIN_COOLDOWN_HOURS": "1.5",
        "STROKE_API_KEY": "",  # empty is unset
        "STROKE_TELEMETRY_FEATURES": "1",
        "STROKE_TELEMETRY_RETENTION_DAYS": "30",
        "STROKE_ALERT_WEBHOOK": "http://hook.example/x",
        "STROKE_RESCORE_DAYS": "3",
    }
    settings = load_settings(environ)
    assert settings.home == tmp_path / "h"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}"
    assert settings.gate.auc_floor == 0.6
    assert (settings.drift.alpha, settings.drift.backend) == (0.01, "scipy")
    assert settings.drift.missing_rate_floor == 0.05
    assert settings.drift.location_test is False
    assert settings.retrain.cooldown_hours == 1.5
    assert settings.api.api_key is None and settings.api.telemetry_features is True
    assert settings.warehouse.telemetry_retention_days == 30
    assert settings.alerts.webhook == "http://hook.example/x"
    assert settings.scoring.rescore_days == 3


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "STROKE_RETRAIN_WINDOW_DAYS",
            "seven",
            "STROKE_RETRAIN_WINDOW_DAYS must be an integer >= 1, got 'seven'",
        ),
        ("STROKE_RETRAIN_DRIFTED_DAYS", "0", "STROKE_RETRAIN_DRIFTED_DAYS must be an integer >= 1"),
        ("STROKE_DRIFT_ALPHA", "1.5", "STROKE_DRIFT_ALPHA must be a number strictly between 0"),
        ("STROKE_DRIFT_BACKEND", "evidently", "STROKE_DRIFT_BACKEND must be one of alibi, scipy"),
        ("STROKE_GATE_TOLERANCE", "abc", "STROKE_GATE_TOLERANCE must be a number >= 0"),
        ("STROKE_TELEMETRY", "maybe", "STROKE_TELEMETRY must be a boolean"),
        ("STROKE_API_MAX_BODY", "lots", "STROKE_API_MAX_BODY must be an integer number of bytes"),
        ("STROKE_COHORT_DUE_HOUR", "24", "STROKE_COHORT_DUE_HOUR must be an integer hour"),
    ],
)
def test_a_malformed_variable_gives_one_line_naming_it(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    message = str(caught.value)
    assert message.startswith(expected)
    assert f"got {value!r}" in message
    assert "\n" not in message
    assert isinstance(caught.value, InputError)


def test_every_variable_maps_to_a_field() -> None:
    defaults = Settings().model_dump()
    for name, (path, _) in ENV_VARS.items():
        target = defaults
        for part in path:
            assert part in target, name
            target = target[part]


def test_explicit_values_ignore_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_GATE_AUC_FLOOR", "not a number")
    monkeypatch.setenv("STROKE_HOME", str(tmp_path / "env"))
    settings = Settings(home=tmp_path / "explicit", retrain={"window_days": 5})
    assert settings.home == tmp_path / "explicit"
    assert settings.gate.auc_floor == 0.70
    assert settings.retrain.window_days == 5
    assert settings.incoming_file("2026-01-01") is None
    (settings.incoming_dir).mkdir(parents=True)
    (settings.incoming_dir / "2026-01-01.csv").write_text("id\n")
    assert settings.incoming_file("2026-01-01") == settings.incoming_dir / "2026-01-01.csv"
    with pytest.raises(SettingsError, match="^STROKE_RETRAIN_WINDOW_DAYS must be"):
        Settings.from_values(home=tmp_path, retrain={"window_days": -1})


def test_settings_are_immutable(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(pydantic.ValidationError):
        settings.home = tmp_path / "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        settings.gate.auc_floor = 0.1  # type: ignore[misc]
    changed = settings.replace(gate={"auc_floor": 0.8})
    assert (changed.gate.auc_floor, settings.gate.auc_floor) == (0.8, 0.70)


def test_drift_section_with_backend() -> None:
    drift = DriftSettings(alpha=0.01)
    assert drift.with_backend("scipy").backend == "scipy"
    assert drift.with_backend("scipy").alpha == 0.01
    assert drift.with_backend(None) is drift
    with pytest.raises(ValueError, match="backend"):
        drift.with_backend("evidently")


def test_a_plain_storage_path_is_local_and_a_bucket_is_remote() -> None:
    from stroke_dagster.core.settings import StorageSettings

    assert not StorageSettings(url="/srv/stroke").remote  # a directory, not an object store
    assert not StorageSettings(url="file:///srv/stroke").remote
    assert StorageSettings(url="s3://bucket/prefix").remote
    assert not StorageSettings().remote
