"""`stroke recalibrate` and `stroke model-card` against a real MLflow store with a champion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stroke_dagster.cli import main
from stroke_dagster.clinical.recalibration import RecalibratedModel
from stroke_dagster.core.features import feature_frame
from stroke_dagster.core.settings import load_settings
from stroke_dagster.model import registry
from stroke_dagster.simulate.generator import simulate_patients


def _write_day(home: Path, day: str, n: int, seed: int, keep_positive: float) -> None:
    """A cohort file and its labels; only ``keep_positive`` of the strokes are kept."""
    df = simulate_patients(n, seed=seed, id_start=seed * 100_000)
    rng = np.random.default_rng(seed + 1000)  # not the simulation's stream
    df = df[(df["stroke"] == 0) | (rng.random(len(df)) < keep_positive)]
    (home / "incoming").mkdir(exist_ok=True)
    (home / "labels").mkdir(exist_ok=True)
    df.drop(columns=["stroke"]).to_csv(home / "incoming" / f"{day}.csv", index=False)
    df[["id", "stroke"]].to_csv(home / "labels" / f"{day}.csv", index=False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_recalibrate_promotes_a_better_calibrated_version(
    champion_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_day(champion_home, "2026-01-05", 3000, 1, keep_positive=0.25)
    _write_day(champion_home, "2026-01-06", 3000, 2, keep_positive=0.25)
    _write_day(champion_home, "2026-01-07", 50, 3, keep_positive=0.25)
    before = registry.resolve_alias(settings=load_settings())
    code, out = _run(
        capsys,
        "recalibrate",
        "--days",
        "2026-01-05,2026-01-06",
        "--min-events",
        "10",
        "--slope-min-events",
        "500",
    )
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["days"] == ["2026-01-05", "2026-01-06"]
    assert summary["method"] == "intercept", summary["reason"]
    assert summary["alias"] == "champion", summary["reason"]
    assert summary["n_events"] > 0 and summary["n_patients"] > 5000
    assert summary["intercept"] < 0 and summary["slope"] == 1.0
    version = summary["version"]
    assert registry.resolve_alias(settings=load_settings()) == version != before

    registry.clear_cache()
    old, new = (
        registry.load_model(before, settings=load_settings()),
        registry.load_model(version, settings=load_settings()),
    )
    assert isinstance(new.pipeline, RecalibratedModel)
    x = feature_frame(simulate_patients(200, seed=9))
    np.testing.assert_allclose(
        new.pipeline.base.predict_proba(x), old.pipeline.predict_proba(x), rtol=0, atol=1e-12
    )
    assert new.predict_proba(x).mean() < old.predict_proba(x).mean()

    # Same patients in the same tiers: thresholds moved with the probabilities.
    def tiers(m):
        return np.searchsorted([m.thresholds.elevated, m.thresholds.high], m.predict_proba(x))

    assert (tiers(old) == tiers(new)).all()
    assert len(new.reference_frame()) == len(old.reference_frame())

    code, out = _run(capsys, "model-card", "--version", version)
    assert code == 0
    assert f"version {version}" in out and "Site recalibration (intercept)" in out
    assert "Calibration" in out and "Subgroups" in out and "5,110 patients" in out
    assert "clearly better" in out

    # Recalibrating the new champion again on the same patients cannot be clearly better.
    code, out = _run(
        capsys,
        "recalibrate",
        "--days",
        "2026-01-05,2026-01-06",
        "--min-events",
        "10",
        "--slope-min-events",
        "500",
    )
    again = json.loads(out.strip().splitlines()[-1])
    assert again["alias"] == "challenger", again["reason"]
    assert "not clearly better" in again["reason"]
    assert registry.resolve_alias(settings=load_settings()) == version


def test_recalibrate_with_too_few_events_registers_nothing(
    champion_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_day(champion_home, "2026-02-01", 200, 4, keep_positive=0.1)
    code, out = _run(capsys, "recalibrate")
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["version"] is None and summary["method"] == "none"
    assert "at least 20" in summary["reason"]


def test_recalibrate_rejects_bad_days(
    champion_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recalibrate", "--days", "2026-13-01"]) == 2
    assert main(["recalibrate", "--days", "2026-03-01"]) == 2
    err = capsys.readouterr().err
    assert "--days" in err and "no labels for 2026-03-01" in err


def test_model_card_of_a_trained_version(
    champion_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(capsys, "model-card")
    assert code == 0 and "# Model card: StrokeRF version" in out
    assert "Decision curve" in out and "Limitations" in out
    assert "Registry decision" in out
