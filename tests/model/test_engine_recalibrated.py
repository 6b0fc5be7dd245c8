"""The engine for every version: a site-recalibrated model compiles to the forest's engine plus
its logistic map, matches its ``predict_proba`` on the numpy and the Arrow (production) paths,
is what scores it, and a failing engine hands its batch to scikit-learn, counted and logged once."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stroke_dagster.clinical.recalibration import RecalibratedModel, compose
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.schema import FEATURES
from stroke_dagster.core.settings import load_settings
from stroke_dagster.model import engine as engine_module
from stroke_dagster.model.engine import (
    FORMAT_MAPPED,
    PARITY_TOLERANCE,
    ForestEngine,
    LogisticMap,
    arrow_probe_columns,
    parity,
    parity_report,
    probe_columns,
    probe_frame,
)
from stroke_dagster.model.training import build_pipeline
from stroke_dagster.scoring import batch as scoring
from stroke_dagster.simulate.generator import simulate_patients, write_patients

MAPS = {
    "intercept only": (-0.9, 1.0),
    "intercept and slope": (0.4, 0.7),
    "steep": (-1.2, 2.5),
}


@pytest.fixture(scope="module")
def forest() -> Any:
    """A deep forest: many patients get exactly 0 (pure leaves), where the map's clip matters."""
    patients = simulate_patients(800, seed=31)
    pipeline = build_pipeline(
        {"n_estimators": 15, "max_depth": 12, "min_samples_leaf": 1, "n_jobs": 1}
    )
    return pipeline.fit(patients[list(FEATURES)], patients["stroke"])


@pytest.fixture(scope="module")
def recalibrated(forest: Any) -> RecalibratedModel:
    return compose(forest, *MAPS["intercept and slope"])


@dataclass
class EngineModel:
    """A model as the loader returns it: pipeline, compiled engine, name, version, thresholds."""

    pipeline: Any
    engine: Any
    name: str = "StrokeRF"
    version: str = "7"
    thresholds: RiskThresholds = RiskThresholds(elevated=0.05, high=0.15)


def _fresh(n: int = 400, seed: int = 32) -> pd.DataFrame:
    df = simulate_patients(n, seed=seed, with_label=False)[list(FEATURES)].copy()
    df.loc[df.index % 11 == 3, "work_type"] = "Astronaut"  # unknown category: all zeros
    df.loc[df.index % 13 == 4, "bmi"] = np.nan
    return df


def _production_batches(path: Path, batch_rows: int) -> list[Any]:
    """The typed Arrow tables ``score_file`` scores for an all-valid file (no pandas)."""
    import pyarrow as pa

    batches = [valid for valid, _ in scoring._iter_for_scoring(path, batch_rows)]
    assert batches and all(isinstance(b, pa.Table) for b in batches)
    return batches


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_the_map_is_the_recalibrated_models_including_the_clip() -> None:
    p = np.array([0.0, 1e-9, 1e-6, 0.013, 0.3, 0.5, 0.97, 1 - 1e-9, 1.0])
    for intercept, slope in MAPS.values():
        wrapper = RecalibratedModel(base=None, intercept=intercept, slope=slope)
        expected = wrapper.transform_probability(p)
        got = LogisticMap(intercept, slope, 1e-6).apply(p)
        assert _gap(got, expected) <= 1e-15
        # p = 0 and p = 1 are clipped before the logit: neither 0 nor 1 comes out
        assert 0.0 < got[0] == got[1] == got[2] and got[-1] == got[-2] < 1.0
    with pytest.raises(ValueError):
        LogisticMap(float("nan"), 1.0, 1e-6)


@pytest.mark.parametrize("name", list(MAPS))
def test_a_recalibrated_model_compiles_and_matches_its_predict_proba_on_every_path(
    name: str,
    forest: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = compose(forest, *MAPS[name])
    engine = ForestEngine.compile(model)
    assert engine is not None
    assert engine.maps == (LogisticMap(*MAPS[name], 1e-6),)
    report = parity_report(engine, model)
    assert set(report) == {"numpy", "arrow", "pandas", "records", "record"}
    assert max(report.values()) <= PARITY_TOLERANCE, report
    assert parity(engine, model) <= PARITY_TOLERANCE
    assert engine.self_check() <= PARITY_TOLERANCE
    assert engine.self_check(arrow=True) <= PARITY_TOLERANCE

    fresh = _fresh()
    expected = model.predict_proba(fresh)[:, 1]
    forest_only = forest.predict_proba(fresh)[:, 1]
    assert (forest_only == 0.0).sum() > 20  # the clip is exercised
    assert _gap(expected, forest_only) > 1e-3  # the map is not the identity
    # numpy columns (the numpy walk), a DataFrame, records batch and single
    numpy_columns = {c: fresh[c].to_numpy() for c in FEATURES}
    assert _gap(engine.predict_columns(numpy_columns), expected) <= PARITY_TOLERANCE
    assert _gap(engine.predict_frame(fresh), expected) <= PARITY_TOLERANCE
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in fresh.to_dict(orient="records")
    ]
    assert _gap(engine.predict_records(records), expected) <= PARITY_TOLERANCE
    single = np.concatenate([engine.predict_records([r]) for r in records[:20]])
    assert _gap(single, expected[:20]) <= PARITY_TOLERANCE

    # the Arrow tables production batches are, through the numpy walk and the numba kernel
    df = simulate_patients(500, seed=40, with_label=False)
    path = write_patients(df, tmp_path / "cohort.csv")
    for kernel_min_rows, batch_rows in ((10**9, 120), (100, 250)):
        monkeypatch.setattr(engine_module, "KERNEL_MIN_ROWS", kernel_min_rows)
        for table in _production_batches(path, batch_rows):
            got = engine.predict_columns({c: table[c] for c in FEATURES})
            want = model.predict_proba(scoring._table_frame(table)[list(FEATURES)])[:, 1]
            assert _gap(got, want) <= PARITY_TOLERANCE


def test_a_nested_recalibration_applies_its_maps_innermost_first(forest: Any) -> None:
    inner = RecalibratedModel(base=forest, intercept=-0.5, slope=1.4)
    outer = RecalibratedModel(base=inner, intercept=0.3, slope=0.8)
    engine = ForestEngine.compile(outer)
    assert engine is not None
    assert [(m.intercept, m.slope) for m in engine.maps] == [(-0.5, 1.4), (0.3, 0.8)]
    assert parity(engine, outer) <= PARITY_TOLERANCE
    # a subclass may map differently: not compiled (scikit-learn scores it)
    odd = type("OddRecalibration", (RecalibratedModel,), {})(base=forest, intercept=0.1)
    assert ForestEngine.compile(odd) is None


def test_a_saved_recalibrated_engine_keeps_its_map(
    tmp_path: Path, recalibrated: RecalibratedModel
) -> None:
    engine = ForestEngine.compile(recalibrated)
    assert engine is not None
    engine.save(tmp_path / "engine")
    meta = json.loads((tmp_path / "engine" / "engine.json").read_text())
    assert meta["format"] == FORMAT_MAPPED
    assert meta["maps"] == [{"kind": "logistic", "intercept": 0.4, "slope": 0.7, "clip": 1e-6}]
    loaded = ForestEngine.load(tmp_path / "engine")
    assert loaded.maps == engine.maps
    assert loaded.self_check(arrow=True) <= PARITY_TOLERANCE
    fresh = _fresh(300)
    assert np.array_equal(loaded.predict_frame(fresh), engine.predict_frame(fresh))
    # stored probe outputs of the bare forest (an engine that lost its map) are caught
    forest_outputs = recalibrated.base.predict_proba(probe_frame())[:, 1]
    assert loaded.max_difference(probe_columns(), forest_outputs) > 1e-3
    # a format that does not say "mapped" with maps in it is refused
    meta["format"] = "stroke-forest-engine/1"
    (tmp_path / "engine" / "engine.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="disagree"):
        ForestEngine.load(tmp_path / "engine")


def test_the_model_cache_and_the_api_get_the_engine_for_a_recalibrated_version(
    tmp_path: Path, recalibrated: RecalibratedModel
) -> None:
    from stroke_dagster.api.scorer import Scorer, probe_records
    from stroke_dagster.model.store import ENGINE_DIR, build_engine, check_engine

    record = build_engine(recalibrated, tmp_path / ENGINE_DIR)  # what filling the cache does
    assert record["compiled"] is True and record["parity"] <= PARITY_TOLERANCE
    engine, status = check_engine(tmp_path, {"engine": record, "version": "7"})  # each load
    assert status == "checked" and engine is not None and len(engine.maps) == 1

    scorer = Scorer(recalibrated)  # the API compiles a version the cache did not
    assert scorer.fast and len(scorer.engine.maps) == 1
    records = probe_records()[:50]
    want = recalibrated.predict_proba(probe_frame()[:50])[:, 1]
    assert _gap(scorer.predict(records), want) <= PARITY_TOLERANCE


def test_score_file_scores_a_recalibrated_version_with_the_engine(
    stroke_home: Path,
    tmp_path: Path,
    recalibrated: RecalibratedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = type("Bare", (), {"name": "StrokeRF", "version": "11"})()
    bare.pipeline, bare.thresholds = recalibrated, RiskThresholds(elevated=0.05, high=0.15)
    model = scoring._with_engine(bare)  # what a large file gets for a model without an engine
    assert model is not bare and len(model.engine.maps) == 1

    df = simulate_patients(500, seed=41, with_label=False)
    path = write_patients(df, tmp_path / "cohort.csv")
    expected = recalibrated.predict_proba(df[list(FEATURES)])[:, 1]

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("scikit-learn was asked to score")

    # scikit-learn cannot score: every probability comes from the engine
    monkeypatch.setattr(RecalibratedModel, "predict_proba", refuse)
    summary = scoring.score_file(
        path,
        model,
        output_csv=tmp_path / "scores.csv",
        cohort_date="2026-02-02",
        batch_rows=120,
        settings=load_settings(),
    )
    assert summary.rows_scored == 500 and summary.engine_fallback_batches == 0
    written = pd.read_csv(tmp_path / "scores.csv", dtype={"id": str}, float_precision="round_trip")
    assert _gap(written["stroke_probability"].to_numpy(), expected) <= PARITY_TOLERANCE


def test_an_engine_differing_on_the_arrow_path_only_is_not_used(
    forest: Any,
    recalibrated: RecalibratedModel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_codes = engine_module._codes

    def arrow_broken(column: Any, block: Any, j: int) -> np.ndarray:
        codes = real_codes(column, block, j)
        return np.full_like(codes, -1) if engine_module._is_arrow(column) else codes

    monkeypatch.setattr(engine_module, "_codes", arrow_broken)
    monkeypatch.setattr(scoring, "_ENGINE_LOGGED", set())
    engine = ForestEngine.compile(recalibrated)
    assert engine is not None
    report = parity_report(engine, recalibrated)
    assert report["numpy"] <= PARITY_TOLERANCE < report["arrow"]  # a numpy-only check passes
    assert parity(engine, recalibrated) > PARITY_TOLERANCE
    assert engine.max_difference(probe_columns(), engine.probe_expected) <= PARITY_TOLERANCE
    arrow = arrow_probe_columns(probe_columns())
    assert engine.max_difference(arrow, engine.probe_expected) > PARITY_TOLERANCE

    bare = type("Bare", (), {"name": "StrokeRF", "version": "12"})()
    bare.pipeline, bare.thresholds = recalibrated, RiskThresholds(elevated=0.05, high=0.15)
    with caplog.at_level(logging.WARNING, logger="stroke_dagster.scoring.batch"):
        assert scoring._with_engine(bare) is bare
        assert scoring._with_engine(bare) is bare
    logged = [r for r in caplog.records if "differs from predict_proba" in r.getMessage()]
    assert len(logged) == 1 and "arrow" in logged[0].getMessage()


def test_a_failing_engine_hands_its_batches_to_scikit_learn(
    stroke_home: Path,
    tmp_path: Path,
    recalibrated: RecalibratedModel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = ForestEngine.compile(recalibrated)
    model = EngineModel(recalibrated, engine, version="13")
    monkeypatch.setattr(scoring, "_ENGINE_LOGGED", set())
    real_columns = engine.predict_columns
    calls = {"columns": 0, "frame": 0}

    def flaky_columns(columns: Any) -> np.ndarray:
        calls["columns"] += 1
        if calls["columns"] == 2:
            raise RuntimeError("kernel exploded")
        if calls["columns"] == 4:
            return np.full(len(next(iter(columns.values()))), np.nan)  # a wrong result
        return real_columns(columns)

    def broken_frame(df: Any) -> np.ndarray:
        calls["frame"] += 1
        raise MemoryError("no room")

    monkeypatch.setattr(engine, "predict_columns", flaky_columns)
    monkeypatch.setattr(engine, "predict_frame", broken_frame)

    df = simulate_patients(500, seed=42, with_label=False)
    clean = write_patients(df, tmp_path / "clean.csv")
    expected = recalibrated.predict_proba(df[list(FEATURES)])[:, 1]
    settings = load_settings()
    with caplog.at_level(logging.WARNING, logger="stroke_dagster.scoring.batch"):
        summary = scoring.score_file(
            clean, model, output_csv=tmp_path / "a.csv", batch_rows=100, settings=settings
        )
        # the same model again in this process, now a file with a bad row: the batch holding
        # it comes as a DataFrame (the engine's frame path), which fails as well
        bad = df.astype({"age": object})
        bad.loc[3, "age"] = "250"
        dirty = tmp_path / "dirty.csv"
        bad.to_csv(dirty, index=False, na_rep="N/A")
        again = scoring.score_file(
            dirty, model, output_csv=tmp_path / "b.csv", batch_rows=100, settings=settings
        )
    assert calls["columns"] == 5 + 4 and calls["frame"] == 1
    assert summary.rows_scored == 500 and summary.engine_fallback_batches == 2
    assert summary.to_dict()["engine_fallback_batches"] == 2
    assert again.rows_scored == 499 and again.engine_fallback_batches == 1
    written = pd.read_csv(tmp_path / "a.csv", dtype={"id": str}, float_precision="round_trip")
    assert _gap(written["stroke_probability"].to_numpy(), expected) <= PARITY_TOLERANCE
    # the failed batches were scored by scikit-learn itself: bit for bit
    sklearn_rows = np.r_[100:200, 300:400]
    assert np.array_equal(
        written["stroke_probability"].to_numpy()[sklearn_rows], expected[sklearn_rows]
    )
    written = pd.read_csv(tmp_path / "b.csv", dtype={"id": str}, float_precision="round_trip")
    assert _gap(written["stroke_probability"].to_numpy(), np.delete(expected, 3)) <= 1e-12
    logged = [r for r in caplog.records if "failed on a batch" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "RuntimeError: kernel exploded" in logged[0].getMessage()


def test_cohort_scores_reports_the_fallback_batches(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from stroke_dagster.defs.resources import StrokeSettings
    from stroke_dagster.defs.scoring import cohort_scores, daily_cohort

    day = "2026-01-09"
    df = simulate_patients(150, seed=3, with_label=False)
    (champion_home / "incoming").mkdir(parents=True, exist_ok=True)
    write_patients(df, champion_home / "incoming" / f"{day}.csv")

    real_columns = ForestEngine.predict_columns

    def arrow_down(self: ForestEngine, columns: Any) -> np.ndarray:
        if engine_module._is_arrow(next(iter(columns.values()))):  # batches, not the load check
            raise RuntimeError("engine down")
        return real_columns(self, columns)

    def frame_down(self: ForestEngine, df: Any) -> np.ndarray:
        raise RuntimeError("engine down")

    monkeypatch.setattr(ForestEngine, "predict_columns", arrow_down)
    monkeypatch.setattr(ForestEngine, "predict_frame", frame_down)
    result = dg.materialize(
        [daily_cohort, cohort_scores],
        partition_key=day,
        resources={"stroke": StrokeSettings()},
    )
    assert result.success
    meta = result.asset_materializations_for_node("cohort_scores")[0].metadata
    assert meta["rows_scored"].value == 150
    assert meta["engine_fallback_batches"].value == 1
