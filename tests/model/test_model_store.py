"""The model loader on a real sqlite MLflow store: cache entries, eviction, alias resolution."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import MODEL_NAME, Settings, load_settings
from stroke_dagster.model import registry
from stroke_dagster.model import store as model_store
from stroke_dagster.model.store import META, ModelStore


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    model_store.clear_cache()


@pytest.fixture
def settings(champion_home: Path) -> Settings:
    return load_settings()


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    from stroke_dagster.simulate.generator import simulate_patients

    df = simulate_patients(60, seed=3, with_label=False)
    df.loc[df.index[:6], "bmi"] = np.nan
    return df


def _client(settings: Settings) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


def _second_version(settings: Settings) -> str:
    """Version 2: the same model files and run as version 1 (a registry operation only)."""
    # MLflow resolves a ``models:/`` source through its global tracking URI, whatever the
    # client's: point it at this home, as the platform does before registering.
    registry._set_uris(settings)
    client = _client(settings)
    v1 = client.get_model_version(MODEL_NAME, "1")
    return str(client.create_model_version(MODEL_NAME, v1.source, v1.run_id, tags=v1.tags).version)


def test_settings_section_and_its_variables(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "STROKE_HOME": str(tmp_path),
            "STROKE_MODEL_CACHE_MAX_BYTES": "1000",
            "STROKE_MODEL_ALIAS_TTL": "5",
        }
    )
    assert settings.model_cache_dir == tmp_path.resolve() / "models" / "cache"
    assert settings.model_cache.max_bytes == 1000 and settings.model_cache.alias_ttl_seconds == 5
    moved = load_settings({"STROKE_MODEL_CACHE_DIR": str(tmp_path / "elsewhere")})
    assert moved.model_cache_dir == (tmp_path / "elsewhere").resolve()
    with pytest.raises(InputError, match="STROKE_MODEL_ALIAS_TTL must be a number of seconds"):
        load_settings({"STROKE_MODEL_ALIAS_TTL": "soon"})


def test_entry_holds_the_model_and_is_keyed_by_the_sklearn_version(
    settings: Settings, patients: pd.DataFrame
) -> None:
    from importlib.metadata import version

    model = ModelStore(settings).load("champion")
    assert model.version == "1" and model.run_id in model.path.name
    assert model.path.name.endswith(f"-sklearn{version('scikit-learn')}")
    meta = json.loads((model.path / META).read_text())
    assert meta["thresholds"] == json.dumps(json.loads(meta["thresholds"]))  # the tag's text
    assert meta["sizes"]["model_bytes"] > 0 and (model.path / "model" / "MLmodel").is_file()
    assert not list(settings.model_cache_dir.rglob("*.pkl"))  # no pickle anywhere
    expected = model.predict_proba(patients)

    other = ModelStore(settings, sklearn_version="0.0.other").load("champion")
    assert other.path != model.path and other.path.name.endswith("-sklearn0.0.other")
    assert sorted(p.name for p in ModelStore(settings).entries()) == sorted(
        [model.path.name, other.path.name]
    )
    np.testing.assert_array_equal(other.predict_proba(patients), expected)


_WARM_LOAD = """
import sys
from stroke_dagster.model import store as model_store
from stroke_dagster.core.settings import load_settings
for reference in ("1", "champion"):
    model = model_store.load_model(reference, settings=load_settings(), max_age=3600)
    assert model.version == "1"
heavy = sorted(m for m in ("mlflow", "sqlalchemy") if m in sys.modules)
print(heavy or "none")
"""


def test_a_cached_version_or_recent_alias_needs_no_registry(settings: Settings) -> None:
    import subprocess
    import sys

    ModelStore(settings).load("champion")  # resolves the alias and fills the entry
    done = subprocess.run(
        [sys.executable, "-c", _WARM_LOAD], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "none", done.stderr  # MLflow never imported, let alone asked


def test_size_bound_evicts_the_least_recently_used_entries(settings: Settings) -> None:
    first = ModelStore(settings, sklearn_version="1").load("1")
    size = first.meta["sizes"]["total_bytes"]
    bounded = settings.replace(model_cache={"max_bytes": int(size * 2.5)})
    second = ModelStore(bounded, sklearn_version="2").load("1")
    ModelStore(bounded, sklearn_version="1").load("1")  # used again: now the most recent
    third = ModelStore(bounded, sklearn_version="3").load("1")
    names = {p.name for p in ModelStore(bounded).entries()}
    assert names == {first.path.name, third.path.name}  # the least recently used one went
    assert not second.path.exists()
    # The entry in use stays even when it alone is over the bound; every other one goes.
    again = ModelStore(bounded, sklearn_version="1").load("1")  # from its entry: no pipeline yet
    tiny = settings.replace(model_cache={"max_bytes": 1})
    ModelStore(tiny).evict(keep=again.path)
    assert [p.name for p in ModelStore(tiny).entries()] == [again.path.name]
    # The pipeline of an entry removed after loading is fetched again on first use.
    assert model_store.remove_entry(again.path) and not again.path.exists()
    assert again.pipeline is not None and again.path.is_dir()


def test_concurrent_fills_leave_one_valid_entry(settings: Settings, patients: pd.DataFrame) -> None:
    store = ModelStore(settings)
    resolution = store.resolve("champion")
    barrier = threading.Barrier(2)
    results: list[tuple[Path, dict]] = []
    errors: list[BaseException] = []

    def fill() -> None:
        try:
            barrier.wait()
            path, meta, _ = ModelStore(settings).fill(resolution)
            results.append((path, meta))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fill) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (entry,) = store.entries()
    assert {path for path, _ in results} == {entry}
    entries_dir = entry.parent
    assert [p.name for p in entries_dir.iterdir()] == [entry.name]  # no temporary left behind
    # A fill that loses the race keeps the entry in place, untouched.
    kept = json.loads((entry / META).read_text())
    _, meta, _ = store.fill(resolution)
    assert meta == kept and json.loads((entry / META).read_text()) == kept
    assert [p.name for p in entries_dir.iterdir()] == [entry.name]
    assert len(store.load("champion").predict_proba(patients)) == len(patients)


def test_alias_moves_are_seen_on_set_alias_at_once_and_otherwise_after_the_ttl(
    settings: Settings,
) -> None:
    import time

    now = [time.time()]  # this store's clock; registry.set_alias writes with the real one
    store = ModelStore(settings, clock=lambda: now[0])
    ttl = 60.0
    assert store.resolve("champion", max_age=ttl).version == "1"
    version = _second_version(settings)
    registry.set_alias(version, "champion", "a better model", settings=settings)
    # registry.set_alias wrote through: the cached resolution names the new target at once.
    assert store.resolve("champion", max_age=ttl).version == version
    assert model_store.load_model("champion", settings=settings, max_age=ttl).version == version
    # Moved behind the cache's back: seen once the cached resolution is older than the TTL.
    _client(settings).set_registered_model_alias(MODEL_NAME, "champion", "1")
    now[0] += ttl / 2
    assert store.resolve("champion", max_age=ttl).version == version
    assert store.resolve("champion", max_age=0).version == "1"  # the assets' and gate's view
    registry.set_alias(version, "champion", "back again", settings=settings)
    _client(settings).set_registered_model_alias(MODEL_NAME, "champion", "1")
    now[0] += ttl + 1
    assert store.resolve("champion", max_age=ttl).version == "1"
    assert registry.resolve_alias("champion", settings=settings) == "1"


def test_unknown_reference_is_a_one_line_input_error(settings: Settings) -> None:
    with pytest.raises(InputError, match="has no version or alias 'nope'"):
        ModelStore(settings).load("nope")
    with pytest.raises(InputError, match="has no version or alias '7'"):
        ModelStore(settings).load("7")


def test_type_outside_the_allow_list_is_refused_even_when_the_model_declares_it(
    settings: Settings,
) -> None:
    """MLflow trusts the types a model's own MLmodel lists; the loader trusts only its list."""
    from stroke_dagster.clinical.recalibration import RECALIBRATION_TYPE
    from stroke_dagster.core.risk import RiskThresholds

    assert RECALIBRATION_TYPE in model_store.TRUSTED_TYPES
    pipeline = ModelStore(settings).load("1").pipeline
    pipeline.note_ = RiskThresholds(0.1, 0.2)  # any class skops does not know
    untrusted = "stroke_dagster.core.risk.RiskThresholds"
    registry.configure_mlflow(settings)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            skops_trusted_types=[*model_store.SKOPS_TRUSTED_TYPES, untrusted],
            pip_requirements=[],
            registered_model_name=MODEL_NAME,
        )
    version = str(info.registered_model_version)
    thresholds = RiskThresholds(0.1, 0.2).to_json()
    _client(settings).set_model_version_tag(MODEL_NAME, version, "risk_thresholds", thresholds)
    with pytest.raises(InputError, match=f"refusing to load.*{untrusted}"):
        ModelStore(settings).load(version)
    # nothing of it kept, not even half-filled
    kept = [p.name for p in (settings.model_cache_dir / "entries").iterdir()]
    assert kept == [p.name for p in ModelStore(settings).entries()]
    assert all(name.startswith("v1-") for name in kept)


def _engine_or_skip() -> None:
    pytest.importorskip("stroke_dagster.model.engine")


@pytest.mark.parametrize("damage", ["engine file", "stored outputs"])
def test_damaged_engine_falls_back_to_sklearn_with_the_same_probabilities(
    settings: Settings, patients: pd.DataFrame, damage: str
) -> None:
    _engine_or_skip()
    model = ModelStore(settings).load("champion")
    assert model.engine is not None, model.engine_status
    expected = model.pipeline.predict_proba(patients[list(model_store_features())])[:, 1]
    np.testing.assert_allclose(model.predict_proba(patients), expected, rtol=0, atol=1e-12)
    if damage == "engine file":
        target = max((p for p in (model.path / "engine").rglob("*") if p.is_file()), key=_size)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        meta = json.loads((model.path / META).read_text())
        meta["engine"]["probe_outputs"][0] += 1e-9
        (model.path / META).write_text(json.dumps(meta))
    fallback = ModelStore(settings).load("champion")
    assert fallback.engine is None and "stored" in fallback.engine_status
    # (a multi-threaded forest may add its trees in another order: last-bit differences)
    np.testing.assert_allclose(fallback.predict_proba(patients), expected, rtol=0, atol=1e-12)


def _size(path: Path) -> int:
    return path.stat().st_size


def model_store_features() -> tuple[str, ...]:
    from stroke_dagster.core.schema import FEATURES

    return FEATURES


def test_unreachable_registry_is_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stroke_dagster.cli import main
    from stroke_dagster.core.errors import RegistryUnavailableError
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own client setting
    uri = "http://stroke:s3cret@127.0.0.1:9"  # nothing listens on port 9
    store = ModelStore(Settings(home=tmp_path / "home", mlflow_tracking_uri=uri))
    with pytest.raises(RegistryUnavailableError) as caught:
        store.resolve("champion", max_age=0)
    assert "s3cret" not in str(caught.value) and "stroke:***@" in str(caught.value)

    patients = write_patients(simulate_patients(5, seed=3), tmp_path / "p.csv")
    monkeypatch.setenv("STROKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code = main(["score", "--input", str(patients), "--output", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("stroke score: error: model registry") and "\n" not in err
    assert "s3cret" not in err and not (tmp_path / "out.csv").exists()
