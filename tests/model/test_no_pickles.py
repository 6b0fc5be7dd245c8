"""No pickle in shared storage: step outputs and fitted drift detectors are stored as data.

Whoever can write to the bucket (the upstream system writes cohorts there) must not be able to run
code in the steps: the IO manager stores each output as a zip of JSON, Parquet, ``.npy`` and skops
(allow-listed types only), and a drift detector is one Parquet file with a JSON layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _s3
import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stroke_dagster.core.schema import FEATURES
from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.io_manager import (
    ObjectStoreIOManager,
    StoredOutputError,
    UnsupportedOutputError,
    dumps,
    loads,
)
from stroke_dagster.monitoring.drift import DriftConfig, TabularDriftDetector
from stroke_dagster.monitoring.drift.store import (
    METADATA_KEY,
    detector_for_model,
    detector_path,
    load_detector,
    save_detector,
)
from stroke_dagster.simulate.generator import simulate_patients, write_patients

moto_s3 = _s3.moto_s3
s3_bucket = _s3.s3_bucket
DAY = "2026-01-05"
STEP_OUTPUTS = (
    "raw_patients",
    "labelled_cohorts",
    "clean_patients",
    "patient_split",
    "tuned_model",
    "model_evaluation",
)
PART_SUFFIXES = {".parquet", ".npy", ".bin", ".skops"}


class Planted:
    """A pickle that touches ``sentinel`` when it is unpickled (what an attacker would plant)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.sentinel,))


def planted_pickle(sentinel: Path) -> bytes:
    """A live payload: unpickling a copy of it aimed elsewhere does create that file."""
    control = sentinel.with_name(f"{sentinel.name}.control")
    pickle.loads(pickle.dumps(Planted(control)))  # noqa: S301 - proves the payload works
    assert control.is_file()
    return pickle.dumps(Planted(sentinel))


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call to pickle's loaders fails the test (the readers' libraries imported first, so
    that none keeps a reference to the stand-in)."""
    import alibi_detect.cd  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import skops.io  # noqa: F401

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


# ------------------------------------------------------------------ the objects of the steps
@pytest.fixture(scope="module")
def step_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What each step really returns, made by the functions the assets call (small and quick)."""
    from stroke_dagster.core.features import split_train_holdout
    from stroke_dagster.io.labels import labelled_cohorts
    from stroke_dagster.io.validation import validate_patients
    from stroke_dagster.model import training
    from stroke_dagster.model.training_data import combine_labelled, load_raw_training_data

    home = tmp_path_factory.mktemp("outputs") / "home"
    csv = home / "raw.csv"
    home.mkdir()
    write_patients(simulate_patients(1200, seed=7), csv)
    settings = load_settings({"STROKE_HOME": str(home), "STROKE_RAW_CSV": str(csv)})
    settings.ensure_dirs()
    cohort = simulate_patients(200, seed=8)
    write_patients(cohort.drop(columns="stroke"), settings.incoming_dir / f"{DAY}.csv")
    cohort[["id", "stroke"]].to_csv(settings.labels_dir / f"{DAY}.csv", index=False)

    raw = load_raw_training_data(settings)
    assert not raw.synthetic  # read from the file, as text
    labelled = labelled_cohorts(settings)
    assert len(labelled) == 200
    clean = combine_labelled(
        [validate_patients(f, require_label=True).valid for f in (raw.frame, labelled)]
    )
    train, holdout = split_train_holdout(clean, 0.2)
    space = training.SearchSpace(n_estimators=(20, 40, 20))
    tuning = training.tune(
        train, n_trials=2, cv_folds=2, search_space=space, log_trials=False, n_jobs=1
    )
    pipeline = training.fit_final(train, tuning.best_params)
    return {
        "raw_patients": raw.frame,
        "labelled_cohorts": labelled,
        "clean_patients": clean,
        "patient_split": {"train": train, "holdout": holdout},
        "tuned_model": {"pipeline": pipeline, "tuning": tuning},
        "model_evaluation": training.evaluate(pipeline, holdout, tuning.thresholds),
        "_probe": holdout[list(FEATURES)],
    }


def assert_same(loaded: Any, original: Any, probe: pd.DataFrame, where: str = "value") -> None:
    """``loaded`` equals ``original``: same types, frames, arrays, fields and predictions."""
    assert type(loaded) is type(original), where
    if isinstance(original, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, original, check_exact=True)
    elif isinstance(original, np.ndarray):
        assert loaded.dtype == original.dtype, where
        np.testing.assert_array_equal(loaded, original)
    elif isinstance(original, dict):
        assert list(loaded) == list(original), where
        for key, value in original.items():
            assert_same(loaded[key], value, probe, f"{where}[{key!r}]")
    elif dataclasses.is_dataclass(original):
        for field in dataclasses.fields(original):
            name = field.name
            assert_same(getattr(loaded, name), getattr(original, name), probe, f"{where}.{name}")
    elif hasattr(original, "predict_proba"):  # the pipeline: same parameters, same predictions
        assert loaded is not original
        assert str(loaded.get_params()) == str(original.get_params())
        np.testing.assert_array_equal(loaded.predict_proba(probe), original.predict_proba(probe))
    elif isinstance(original, float) and np.isnan(original):
        assert np.isnan(loaded), where
    else:
        assert loaded == original, where


@contextlib.contextmanager
def _contexts(name: str) -> Iterator[tuple[dg.OutputContext, dg.InputContext]]:
    """The contexts of storing asset ``name`` and of loading it as the input ``name``."""
    with (
        dg.build_output_context(asset_key=dg.AssetKey(name), name="result") as output,
        dg.build_input_context(
            name=name, asset_key=dg.AssetKey(name), upstream_output=output
        ) as input_,
    ):
        yield output, input_


def _archive(data: bytes) -> tuple[dict[str, Any], list[str]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return json.loads(archive.read("manifest.json")), archive.namelist()


@pytest.fixture(params=["local", "s3"])
def storage_env(request: pytest.FixtureRequest, stroke_home: Path) -> str:
    """The IO manager's storage: ``STROKE_HOME`` on the disk, or a bucket of the moto server."""
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    return request.param


@pytest.mark.parametrize("name", STEP_OUTPUTS)
def test_step_outputs_round_trip_as_data(
    name: str, storage_env: str, step_outputs: dict[str, Any], no_unpickling: None
) -> None:
    value = step_outputs[name]
    manager = ObjectStoreIOManager()
    files = load_settings().files
    assert files.is_local == (storage_env == "local")
    stored = files.path("dagster", "io", name, "__all__.zip")
    with _contexts(name) as (output, input_):
        manager.handle_output(output, value)
        assert output.get_logged_metadata()["stored_at"].value == str(stored)
        manifest, members = _archive(files.read_bytes(stored))
        assert manifest["format"] == 1 and "manifest.json" in members
        assert {Path(m).suffix for m in members if m != "manifest.json"} <= PART_SUFFIXES
        assert not files.glob(files.path("dagster", "io", name, "*.pkl"))
        loaded = manager.load_input(input_)
    assert_same(loaded, value, step_outputs["_probe"])


def test_the_manifest_says_how_each_part_is_stored(step_outputs: dict[str, Any]) -> None:
    manifest, members = _archive(dumps(step_outputs["tuned_model"], "tuned_model"))
    value = manifest["value"]["dict"]
    assert value["pipeline"] == {"estimator": "000-tuned_model.pipeline.skops"}
    tuning = value["tuning"]
    assert tuning["dataclass"] == "stroke_dagster.model.training.tuning.TuningResult"
    assert tuning["fields"]["trials"] == {"frame": "001-tuned_model.tuning.trials.parquet"}
    assert tuning["fields"]["best_params"]["dict"]["criterion"] == "entropy"
    assert sorted(members) == sorted(
        [
            "manifest.json",
            "000-tuned_model.pipeline.skops",
            "001-tuned_model.tuning.trials.parquet",
            "002-tuned_model.tuning.oof_predictions.npy",
            "003-tuned_model.tuning.oof_labels.npy",
        ]
    )
    scalars = {"n": np.int64(3), "x": np.float64(0.5), "flag": np.bool_(True), "none": None}
    back = loads(dumps({**scalars, "pair": (1, "a"), "items": [1.5, float("nan")]}))
    assert back["pair"] == (1, "a") and back["items"][0] == 1.5 and np.isnan(back["items"][1])
    assert [type(back[k]) for k in scalars] == [int, float, bool, type(None)]


@dataclasses.dataclass
class NotAllowed:
    value: int


def _double(x: Any) -> Any:
    return 2 * x


def _unsupported() -> dict[str, tuple[Any, str]]:
    from sklearn.preprocessing import FunctionTransformer

    return {
        "set": ({"ids": {1, 2}}, r"\['ids'\]: cannot store a builtins\.set without a pickle"),
        "object array": (np.array([object()]), "cannot store this array"),
        "mixed column": (pd.DataFrame({"x": [1, "a"]}), "cannot store this frame"),
        "int key": ({1: "a"}, "dict key 1 is not a string"),
        "dataclass": (NotAllowed(1), r"dataclass .*NotAllowed is not in DATACLASSES"),
        "untrusted estimator": (
            {"model": FunctionTransformer(_double)},
            r"\['model'\]: holds types outside the platform's skops allow-list: .*_double",
        ),
    }


@pytest.mark.parametrize("case", list(_unsupported()))
def test_an_output_it_cannot_store_is_refused_when_stored(case: str, stroke_home: Path) -> None:
    value, message = _unsupported()[case]
    with _contexts("odd") as (output, _), pytest.raises(UnsupportedOutputError, match=message):
        ObjectStoreIOManager().handle_output(output, value)
    files = load_settings().files
    assert not files.exists(files.path("dagster", "io", "odd", "__all__.zip"))  # nothing written


def _tampered(manifest: dict[str, Any], members: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in (members or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_tampered_output_fails_to_load_and_runs_nothing(
    stroke_home: Path, step_outputs: dict[str, Any]
) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    sentinel = stroke_home / "owned"
    files = load_settings().files
    manager = ObjectStoreIOManager()
    stored = files.path("dagster", "io", "patient_split", "__all__.zip")
    old = files.path("dagster", "io", "patient_split", "__all__.pkl")
    attacks = {
        "a pickle in place of the archive": planted_pickle(sentinel),
        "a class outside the list": _tampered(
            {
                "format": 1,
                "value": {"dataclass": "subprocess.Popen", "fields": {"args": ["touch", "x"]}},
            }
        ),
        "an estimator of an untrusted type": _tampered(
            {"format": 1, "value": {"estimator": "0.skops"}},
            {"0.skops": skops.io.dumps(FunctionTransformer(_double))},
        ),
        "a pickled array": _tampered(
            {"format": 1, "value": {"array": "0.npy"}},
            {"0.npy": _npy_object_array(Planted(sentinel))},
        ),
        "a member that is not there": _tampered({"format": 1, "value": {"frame": "../x"}}),
    }
    with _contexts("patient_split") as (output, input_):
        manager.handle_output(output, step_outputs["patient_split"])
        for attack, data in attacks.items():
            files.write_bytes(stored, data)
            with pytest.raises(dg.Failure, match="cannot be read") as failure:
                manager.load_input(input_)
            assert "patient_split" in str(failure.value.description), attack
            assert not sentinel.exists(), attack

        # The pickle of an earlier release at the old name is never read: the input is missing.
        files.delete(stored)
        files.write_bytes(old, planted_pickle(sentinel))
        with pytest.raises(dg.Failure, match="is missing"):
            manager.load_input(input_)
    assert not sentinel.exists()


def _npy_object_array(payload: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([payload], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def test_stored_output_errors_name_the_problem() -> None:
    with pytest.raises(StoredOutputError, match="not a stored output"):
        loads(b"plain text")
    with pytest.raises(StoredOutputError, match="not a stored output of this format"):
        loads(_tampered({"format": 99, "value": 1}))
    with pytest.raises(StoredOutputError, match="stored fields differ"):
        loads(
            _tampered(
                {
                    "format": 1,
                    "value": {
                        "dataclass": "stroke_dagster.core.risk.RiskThresholds",
                        "fields": {"elevated": 0.1},
                    },
                }
            )
        )


def test_assets_hand_over_through_the_io_manager(stroke_home: Path) -> None:
    """A real materialization: the downstream step reads what the upstream one stored."""

    @dg.asset
    def split() -> dict:
        frame = pd.DataFrame({"x": [1, 2, 3]})
        return {"train": frame.iloc[:2], "holdout": frame.iloc[2:]}

    @dg.asset
    def total(split: dict) -> int:
        return int(split["train"]["x"].sum() + split["holdout"]["x"].sum())

    result = dg.materialize([split, total], resources={"io_manager": ObjectStoreIOManager()})
    assert result.success and result.output_for_node("total") == 6
    files = load_settings().files
    assert loads(files.read_bytes(files.path("dagster", "io", "total", "__all__.zip"))) == 6
    stored = loads(files.read_bytes(files.path("dagster", "io", "split", "__all__.zip")))
    assert stored["holdout"].index.tolist() == [2]  # the index survives


# ------------------------------------------------------------------------- drift detectors
@pytest.fixture(scope="module")
def reference() -> tuple[pd.DataFrame, pd.DataFrame]:
    patients = simulate_patients(2000, seed=1)
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame(
        {
            "stroke_probability": rng.beta(1, 15, 400),
            "risk_tier": rng.choice(["low", "elevated", "high"], 400, p=[0.7, 0.2, 0.1]),
        }
    )
    return patients, predictions


@pytest.mark.parametrize("backend", ["scipy", "alibi"])
def test_a_stored_detector_is_the_fitted_one(
    backend: str, reference: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path, no_unpickling: None
) -> None:
    patients, predictions = reference
    config = DriftConfig(backend=backend)
    fitted = TabularDriftDetector(config).fit(patients, predictions, reference_version="4")
    path = save_detector(fitted, tmp_path / f"drift_{backend}.parquet")

    table = pq.read_table(path)
    assert table.column_names == ["group", "column", "value"]
    layout = json.loads(table.schema.metadata[METADATA_KEY])
    assert layout["signature"]["backend"] == backend and layout["reference_version"] == "4"
    assert [g["source"] for g in layout["groups"]] == ["features", "features", "predictions"]

    loaded = load_detector(path, DriftConfig(backend=backend, alpha=0.01))
    assert loaded is not None and loaded.config.alpha == 0.01
    cohort = simulate_patients(500, seed=5, with_label=False)
    cohort["age"] = cohort["age"] + 10
    check = {"predictions": predictions.iloc[:200], "config": config}
    assert loaded.check(cohort, **check) == fitted.check(cohort, **check)
    assert fitted.check(cohort, **check).is_drift  # a comparison that could tell them apart


def _rewrite(path: Path, change_layout: Any = None, change_values: Any = None) -> None:
    table = pq.read_table(path)
    layout = json.loads(table.schema.metadata[METADATA_KEY])
    values = table.to_pandas()
    if change_layout:
        change_layout(layout)
    if change_values:
        values = change_values(values)
    table = pa.Table.from_pandas(values, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(layout)}), path)


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    target[key] = value


TAMPERING = {
    "garbage": lambda p: p.write_bytes(b"not a detector"),
    "no layout": lambda p: pq.write_table(pq.read_table(p).replace_schema_metadata(None), p),
    "other settings": lambda p: _rewrite(p, lambda m: _set(m["signature"], "psi_bins", 3)),
    "unknown column source": lambda p: _rewrite(
        p, lambda m: _set(m["groups"][0]["columns"][0], "source", "__import__")
    ),
    "lookup out of range": lambda p: _rewrite(
        p,
        lambda m: [
            _set(c, "lookup", [99] * len(c["lookup"]))
            for c in m["groups"][0]["columns"]
            if c["lookup"]
        ],
    ),
    "values dropped": lambda p: _rewrite(p, change_values=lambda v: v.iloc[:-10]),
    "values added": lambda p: _rewrite(
        p, change_values=lambda v: pd.concat([v, v.assign(group=7)], ignore_index=True)
    ),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_a_tampered_detector_file_is_not_loaded(
    tampering: str, reference: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    config = DriftConfig(backend="scipy")
    detector = TabularDriftDetector(config).fit(*reference)
    path = save_detector(detector, tmp_path / "drift_scipy.parquet")
    assert load_detector(path, config) is not None
    TAMPERING[tampering](path)
    assert load_detector(path, config) is None  # so detector_for_model refits it


def test_a_planted_pickle_is_never_loaded_and_the_detector_is_refitted(
    champion_home: Path,
) -> None:
    settings = load_settings()
    config = DriftConfig(backend="scipy")
    sentinel = champion_home / "owned"
    old = champion_home / "models/1/drift_scipy.pkl"  # the name of earlier releases
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(planted_pickle(sentinel))

    first = detector_for_model(config=config, settings=settings)
    assert first.fitted_now and not sentinel.exists()
    assert first.path == detector_path("1", "scipy", settings)
    assert first.path == champion_home / "models/1/drift_scipy.parquet"
    assert not detector_for_model(config=config, settings=settings).fitted_now

    # A pickle at the new name, or a tampered file, is refitted and replaced, never unpickled.
    first.path.write_bytes(planted_pickle(sentinel))
    again = detector_for_model(config=config, settings=settings)
    assert again.fitted_now and not sentinel.exists()
    assert load_detector(again.path, config) is not None  # replaced by a good file
    TAMPERING["lookup out of range"](again.path)
    assert detector_for_model(config=config, settings=settings).fitted_now
    assert old.read_bytes() == planted_pickle(sentinel)  # left alone, never read
    assert not sentinel.exists()
