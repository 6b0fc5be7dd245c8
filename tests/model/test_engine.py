"""The scoring engine reproduces the pipeline's probabilities, survives a save/load, refuses what
it cannot reproduce, and batch scoring with it writes the pipeline's probabilities."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from stroke_dagster.core.features import ONE_HOT_FEATURES, SCALED_FEATURES
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.schema import FEATURES
from stroke_dagster.core.settings import load_settings
from stroke_dagster.model import engine as engine_module
from stroke_dagster.model.engine import (
    PARITY_TOLERANCE,
    ForestEngine,
    parity,
    probe_columns,
    probe_frame,
)
from stroke_dagster.model.training import build_pipeline
from stroke_dagster.simulate.generator import simulate_patients, write_patients


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    return simulate_patients(800, seed=31)


def _fresh(n: int = 400, seed: int = 32) -> pd.DataFrame:
    df = simulate_patients(n, seed=seed, with_label=False)[list(FEATURES)].copy()
    df.loc[df.index % 11 == 3, "work_type"] = "Astronaut"  # unknown category: all zeros
    df.loc[df.index % 13 == 4, "bmi"] = np.nan
    return df


def _custom(numeric: Any, forest: Any) -> Pipeline:
    pre = ColumnTransformer(
        [
            ("num", numeric, list(SCALED_FEATURES)),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ONE_HOT_FEATURES),
        ]
    )
    return Pipeline([("pre", pre), ("model", forest)])


def _variants() -> dict[str, Pipeline]:
    imputer = SimpleImputer(strategy="median")
    return {
        "builder (missing flags)": build_pipeline({"n_estimators": 25, "n_jobs": 1}),
        "builder deep": build_pipeline(
            {"n_estimators": 15, "max_depth": 12, "min_samples_leaf": 1, "n_jobs": 1}
        ),
        "no flags": _custom(
            Pipeline([("impute", imputer), ("scale", StandardScaler())]),
            RandomForestClassifier(n_estimators=20, max_depth=6, random_state=1),
        ),
        "mean imputer, no scaler": _custom(
            SimpleImputer(strategy="mean", add_indicator=True),
            RandomForestClassifier(n_estimators=20, max_depth=5, random_state=2),
        ),
        "extra trees": _custom(
            Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler(with_mean=False))]),
            ExtraTreesClassifier(n_estimators=20, max_depth=7, random_state=3),
        ),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_engine_reproduces_the_pipeline(name: str, patients: pd.DataFrame) -> None:
    pipeline = _variants()[name].fit(patients[list(FEATURES)], patients["stroke"])
    engine = ForestEngine.compile(pipeline)
    assert engine is not None
    assert parity(engine, pipeline) <= PARITY_TOLERANCE
    assert engine.self_check() == 0.0

    fresh = _fresh()
    expected = pipeline.predict_proba(fresh)[:, 1]
    # small batches: the numpy walk; the compiled kernel on the same rows (two threads)
    assert np.array_equal(engine.predict_frame(fresh), expected)
    matrix = engine.transform_columns({c: fresh[c].to_numpy() for c in FEATURES})
    assert np.array_equal(engine._walk_kernel(matrix, threads=1), expected)
    assert np.array_equal(engine._walk_kernel(np.tile(matrix, (3, 1)), threads=2)[-400:], expected)
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in fresh.to_dict(orient="records")
    ]
    assert np.array_equal(engine.predict_records(records), expected)
    assert np.array_equal(
        np.concatenate([engine.predict_records([r]) for r in records[:25]]), expected[:25]
    )


def test_arrow_and_pandas_columns_give_the_same_scores(patients: pd.DataFrame) -> None:
    pipeline = build_pipeline({"n_estimators": 10, "n_jobs": 1})
    pipeline.fit(patients[list(FEATURES)], patients["stroke"])
    engine = ForestEngine.compile(pipeline)
    assert engine is not None
    fresh = _fresh(300)
    expected = pipeline.predict_proba(fresh)[:, 1]
    table = pa.Table.from_pandas(fresh, preserve_index=False)
    chunked = {c: pa.chunked_array([table[c][:100], table[c][100:]]) for c in FEATURES}
    arrow_strings = fresh.astype({c: "string[pyarrow]" for c in ONE_HOT_FEATURES})
    dictionary = {c: table[c].combine_chunks() for c in FEATURES}
    for c in ONE_HOT_FEATURES:
        dictionary[c] = dictionary[c].dictionary_encode()
    for columns in (
        {c: table[c] for c in FEATURES},
        chunked,
        dictionary,
        {c: arrow_strings[c] for c in FEATURES},
    ):
        assert np.array_equal(engine.predict_columns(columns), expected)
    assert np.array_equal(engine.predict_frame(arrow_strings), expected)


def test_save_and_load_round_trip(tmp_path: Path, patients: pd.DataFrame) -> None:
    pipeline = build_pipeline({"n_estimators": 12, "n_jobs": 1})
    pipeline.fit(patients[list(FEATURES)], patients["stroke"])
    engine = ForestEngine.compile(pipeline)
    assert engine is not None
    engine.save(tmp_path / "engine")
    assert sorted(p.name for p in (tmp_path / "engine").iterdir()) == ["engine.json", "engine.npz"]
    with np.load(tmp_path / "engine" / "engine.npz", allow_pickle=False) as data:
        assert "probe_expected" in data.files
    loaded = ForestEngine.load(tmp_path / "engine")
    assert loaded.self_check() == 0.0
    fresh = _fresh(300)
    assert np.array_equal(loaded.predict_frame(fresh), engine.predict_frame(fresh))
    # a stored expectation that no longer matches is seen without scikit-learn
    wrong = loaded.probe_expected.copy()
    wrong[7] += 1e-9
    assert loaded.max_difference(probe_columns(), wrong) > PARITY_TOLERANCE


def test_loading_needs_neither_sklearn_nor_numba(tmp_path: Path, patients: pd.DataFrame) -> None:
    pipeline = build_pipeline({"n_estimators": 8, "n_jobs": 1})
    pipeline.fit(patients[list(FEATURES)], patients["stroke"])
    engine = ForestEngine.compile(pipeline)
    assert engine is not None
    engine.save(tmp_path)
    code = (
        "import sys; from stroke_dagster.model.engine import ForestEngine; "
        f"e = ForestEngine.load({str(tmp_path)!r}); assert e.self_check() == 0.0; "
        "bad = [m for m in ('sklearn', 'numba', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unsupported_pipelines_give_none(patients: pd.DataFrame) -> None:
    x, y = patients[list(FEATURES)], patients["stroke"]
    ignore = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    shapes = [
        _custom(SimpleImputer(), DecisionTreeClassifier(max_depth=3)),
        _custom("passthrough", RandomForestClassifier(n_estimators=3)),
        Pipeline(
            [
                (
                    "pre",
                    ColumnTransformer(
                        [
                            ("num", SimpleImputer(), list(SCALED_FEATURES)),
                            ("cat", OneHotEncoder(sparse_output=False), ONE_HOT_FEATURES),
                        ]
                    ),
                ),
                ("model", RandomForestClassifier(n_estimators=3)),
            ]
        ),
        Pipeline(
            [
                (
                    "pre",
                    ColumnTransformer(
                        [("num", SimpleImputer(), ["age", "bmi"]), ("cat", ignore, [])],
                        remainder="passthrough",  # raw columns (and NaN) to the trees
                    ),
                ),
                ("model", RandomForestClassifier(n_estimators=3)),
            ]
        ),
    ]
    for pipeline in shapes:
        numeric_only = pipeline.steps[0][1].remainder == "passthrough"
        fit_x = x[list(SCALED_FEATURES)] if numeric_only else x
        pipeline.fit(fit_x, y)
        assert ForestEngine.compile(pipeline) is None
    assert ForestEngine.compile(object()) is None


def test_probe_frame_covers_the_schema() -> None:
    frame = probe_frame()
    assert list(frame.columns) == list(FEATURES)
    assert frame["bmi"].isna().any() and frame["bmi"].notna().any()
    assert (frame["work_type"] == "unknown-category").any()


@dataclass
class EngineModel:
    """A model as the loader returns it: pipeline, compiled engine, name, version, thresholds."""

    pipeline: Any
    engine: Any
    name: str = "StrokeRF"
    version: str = "3"
    thresholds: RiskThresholds = RiskThresholds(elevated=0.05, high=0.15)


def test_score_file_with_the_engine_writes_the_pipeline_probabilities(
    stroke_home: Path, tmp_path: Path, patients: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stroke_dagster.scoring.batch import score_file

    pipeline = build_pipeline({"n_estimators": 20, "n_jobs": 1})
    pipeline.fit(patients[list(FEATURES)], patients["stroke"])
    engine = ForestEngine.compile(pipeline)
    df = simulate_patients(500, seed=40, with_label=False)
    path = write_patients(df, tmp_path / "cohort.csv")
    monkeypatch.setattr(engine_module, "KERNEL_MIN_ROWS", 100)  # batches of 250: the kernel
    for batch_rows, out in ((250, "kernel.csv"), (60, "numpy.csv")):
        summary = score_file(
            path,
            EngineModel(pipeline, engine),
            output_csv=tmp_path / out,
            cohort_date="2026-02-01",
            batch_rows=batch_rows,
            settings=load_settings(),
        )
        assert summary.rows_scored == 500
        written = pd.read_csv(tmp_path / out, dtype={"id": str}, float_precision="round_trip")
        expected = pipeline.predict_proba(df[list(FEATURES)])[:, 1]
        # the CSV carries the shortest repr of each float64: parsing it back is exact
        assert np.array_equal(written["stroke_probability"].to_numpy(), expected)


def test_all_valid_batches_skip_pandas_with_the_same_rows(tmp_path: Path) -> None:
    from stroke_dagster.io.readers import iter_patient_batches, iter_patient_tables
    from stroke_dagster.io.validation import SeenIds, validate_patients, validate_table
    from stroke_dagster.scoring.batch import _table_frame

    df = simulate_patients(300, seed=41, with_label=False)
    df.loc[df.index % 5 == 0, "gender"] = df["gender"].str.upper()  # any case is accepted
    path = tmp_path / "cohort.csv"
    df.to_csv(path, index=False, na_rep="N/A")
    seen_fast, seen_slow = SeenIds(), SeenIds()
    tables = list(iter_patient_tables(path, batch_rows=100))
    frames = list(iter_patient_batches(path, batch_rows=100, arrow_strings=True))
    for table, frame in zip(tables, frames, strict=True):
        fast = validate_table(table, seen_ids=seen_fast)
        assert fast is not None
        slow = validate_patients(frame, seen_ids=seen_slow).valid
        pd.testing.assert_frame_equal(_table_frame(fast), slow)
    # a later batch repeating an id, a spelling that needs stripping, a bad value: general path
    assert validate_table(tables[0], seen_ids=seen_fast) is None
    for column, value in (("bmi", " 31.5"), ("age", "130"), ("work_type", "N/A"), ("id", "007")):
        text = tables[1].column(column).to_pylist()
        text[4] = value
        changed = tables[1].set_column(
            tables[1].column_names.index(column), column, pa.array(text, pa.string())
        )
        assert validate_table(changed, seen_ids=SeenIds()) is None, column


def test_a_model_without_an_engine_gets_a_checked_one(patients: pd.DataFrame) -> None:
    from stroke_dagster.scoring.batch import _with_engine

    pipeline = build_pipeline({"n_estimators": 10, "n_jobs": 1})
    pipeline.fit(patients[list(FEATURES)], patients["stroke"])
    thresholds = RiskThresholds(elevated=0.05, high=0.15)
    model = _with_engine(EngineModel(pipeline, None, thresholds=thresholds))
    assert model.engine is None  # it has the attribute: left as it is
    bare = type("Bare", (), {"pipeline": pipeline, "name": "StrokeRF", "version": "4"})()
    bare.thresholds = thresholds
    compiled = _with_engine(bare)
    assert compiled.engine is not None and compiled.engine.self_check() == 0.0
    odd = type(
        "Odd", (), {"pipeline": _custom("passthrough", DecisionTreeClassifier()), **vars(bare)}
    )
    assert not hasattr(_with_engine(odd()), "engine")
