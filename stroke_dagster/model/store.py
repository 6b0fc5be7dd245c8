"""The one model loader: ``StrokeRF`` versions resolved through MLflow's client, cached locally.

**Resolution.** An alias (``champion``) or a version number (``3``) is resolved with
``mlflow.MlflowClient`` -- never SQL on MLflow's tables, so every store (sqlite, PostgreSQL,
``mlflow server`` over HTTP) takes the same path -- into a :class:`Resolution`: version, run id
and the version's risk thresholds (its ``risk_thresholds`` tag). Resolutions are kept with a time
stamp under ``<cache>/resolutions/<registry>/``:

- a version number is asked once per registry: a version and its run id never change;
- an alias resolution is reused while it is younger than ``max_age`` seconds. The command line
  and the API pass ``model_cache.alias_ttl_seconds`` (``STROKE_MODEL_ALIAS_TTL``, default 60;
  the API's ``POST /admin/reload`` asks afresh); the Dagster assets and the gate pass 0 and always
  ask the registry. :func:`stroke_dagster.model.registry.set_alias` writes through: on the machine
  that
  moves an alias the new target replaces the cached resolution at once; a move made elsewhere
  (another machine, MLflow's UI) is seen after at most the TTL.

**Cache entries.** ``<cache>/entries/v<version>-<run id>-sklearn<scikit-learn version>/`` holds

- ``model/``: the MLflow model directory as downloaded (skops format; any other format refused);
- ``engine/``: the compiled forest (:mod:`stroke_dagster.model.engine`), when the pipeline compiles
and
  reproduces the pipeline's ``predict_proba`` within ``PARITY_TOLERANCE`` on the probe patients;
- ``meta.json``: thresholds, sizes, the parity found and the probe outputs the engine must give.

An entry is filled in a temporary directory and renamed into place, so readers see a whole entry
or none; two processes filling the same entry both succeed and one copy is kept. Entries are never
changed afterwards. Each load touches its entry, and entries beyond ``model_cache.max_bytes``
(``STROKE_MODEL_CACHE_MAX_BYTES``, default 2 GiB) are removed least recently used first, never the
one being loaded. No pickle is written or read.

**Loading.** Every load checks the stored engine against the stored probe outputs (numpy only)
and falls back to the scikit-learn pipeline, logging why, when that check fails or no engine was
compiled. The pipeline is read lazily with skops and the platform's own allow-list of types
(:data:`TRUSTED_TYPES`; types the model file itself declares trusted are not trusted for it):
with a checked engine, scoring imports neither scikit-learn nor MLflow's model flavours.

The store takes the platform's :class:`~stroke_dagster.core.settings.Settings` and never reads the
environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from stroke_dagster.core.errors import InputError, RegistryUnavailableError
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.settings import MODEL_NAME, Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
THRESHOLDS_TAG = "risk_thresholds"
NO_CHAMPION = "no champion model registered: run `stroke train` first"
REFERENCE_ARTIFACT = "reference/train.parquet"
HOLDOUT_ARTIFACT = "reference/holdout_predictions.parquet"
# Which patients (by id) the version trained on and was held out on: the gate's fairness evidence.
SPLIT_IDS_ARTIFACT = "reference/split_ids.parquet"
# What skops reports as untrusted in this platform's pipelines (it only allows sklearn types it
# knows by default), and the platform's own recalibration wrapper. Loading refuses any other type.
SKOPS_TRUSTED_TYPES: list[str] = ["numpy.dtype", "sklearn.tree._tree.Tree"]
RECALIBRATION_TYPE = "stroke_dagster.clinical.recalibration.RecalibratedModel"
TRUSTED_TYPES: tuple[str, ...] = (*SKOPS_TRUSTED_TYPES, RECALIBRATION_TYPE)

FORMAT = 1  # meta.json layout
MODEL_DIR = "model"
ENGINE_DIR = "engine"
META = "meta.json"
_ENTRIES = "entries"
_RESOLUTIONS = "resolutions"
_STALE_FILL_SECONDS = 3600.0  # a temporary fill directory this old belongs to a dead process
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


@dataclass(frozen=True)
class Resolution:
    """What the registry says about one version: its run and risk thresholds (JSON text)."""

    version: str
    run_id: str
    thresholds: str | None
    resolved_at: float


def installed_sklearn_version() -> str:
    """The installed scikit-learn's version (package metadata: scikit-learn is not imported)."""
    from importlib.metadata import version

    return version("scikit-learn")


class ModelStore:
    """Resolves and caches the versions of ``StrokeRF`` of one registry (see the module doc).

    ``sklearn_version`` and ``clock`` default to the installed version and ``time.time``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sklearn_version: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.uri = settings.mlflow_tracking_uri
        self.root = settings.model_cache_dir
        self.max_bytes = settings.model_cache.max_bytes
        self.sklearn_version = sklearn_version or installed_sklearn_version()
        self.clock = clock

    # -- resolution ------------------------------------------------------------------------

    def resolve(self, reference: str = CHAMPION, *, max_age: float = 0.0) -> Resolution:
        """The version an alias or version number names (raises :class:`InputError` if none).

        A version number's resolution is asked of the registry once; an alias's cached
        resolution is used while younger than ``max_age`` seconds (0: always ask).
        """
        ref = _reference(reference)
        path = self._resolution_path(ref)
        cached = _read_resolution(path)
        if cached is not None and (ref.isdigit() or self._young(cached, max_age)):
            return cached
        found = self._ask_registry(ref)
        self._remember(ref, found)
        return found

    def _young(self, cached: Resolution, max_age: float) -> bool:
        return max_age > 0 and 0 <= self.clock() - cached.resolved_at < max_age

    def remember_alias(self, alias: str, version: str) -> Resolution:
        """Record that ``alias`` now names ``version`` (after moving it in the registry)."""
        found = replace(self.resolve(str(version)), resolved_at=self.clock())
        self._remember(_reference(alias), found)
        return found

    def _remember(self, ref: str, found: Resolution) -> None:
        try:
            if not ref.isdigit():
                _write_json(self._resolution_path(ref), asdict(found))
            if found.thresholds is not None:  # a version's record is kept for good: if complete
                _write_json(self._resolution_path(found.version), asdict(found))
        except OSError as exc:  # a read-only cache still loads models; it asks more often
            log.warning("model cache cannot keep the resolution of %r: %s", ref, exc)

    def _resolution_path(self, ref: str) -> Path:
        registry = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        kind = "version" if ref.isdigit() else "alias"
        return self.root / _RESOLUTIONS / registry / f"{kind}-{ref}.json"

    def client(self) -> Any:
        """An MLflow client on this store's registry (MLflow is imported here, on demand)."""
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _ask_registry(self, ref: str) -> Resolution:
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            if ref.isdigit():
                mv = client.get_model_version(MODEL_NAME, ref)
            else:
                mv = client.get_model_version_by_alias(MODEL_NAME, ref)
        except MlflowException as exc:
            if exc.error_code not in _NOT_FOUND:
                reason = str(exc.message).strip().splitlines()[0][:300] if exc.message else ""
                raise RegistryUnavailableError(
                    f"model registry {_redact(self.uri)} unavailable: {_redact(reason)}"
                ) from exc
            if ref == CHAMPION:
                raise InputError(NO_CHAMPION) from None
            raise InputError(f"model {MODEL_NAME} has no version or alias {ref!r}") from None
        tags = mv.tags or {}
        ready = str(getattr(mv, "status", "READY") or "READY") == "READY"
        return Resolution(
            version=str(mv.version),
            run_id=str(tags.get("run_id") or mv.run_id),
            thresholds=tags.get(THRESHOLDS_TAG) if ready else None,
            resolved_at=self.clock(),
        )

    # -- entries ---------------------------------------------------------------------------

    def entry_path(self, resolution: Resolution) -> Path:
        """Where the entry of a resolved version lives (version, run id, sklearn version)."""
        key = f"v{resolution.version}-{resolution.run_id}-sklearn{self.sklearn_version}"
        return self.root / _ENTRIES / re.sub(r"[^\w.-]", "_", key)

    def load(self, reference: str = CHAMPION, *, max_age: float = 0.0) -> StoredModel:
        """Resolve ``reference`` and load its version from the cache (filled when missing)."""
        return self.load_resolved(self.resolve(reference, max_age=max_age))

    def load_resolved(self, resolution: Resolution) -> StoredModel:
        """The resolved version from its cache entry, filled first when missing."""
        if resolution.thresholds is None:
            raise InputError(f"{MODEL_NAME} v{resolution.version} has no {THRESHOLDS_TAG} tag")
        path = self.entry_path(resolution)
        meta = _read_meta(path)
        pipeline = None
        if meta is None:
            path, meta, pipeline = self.fill(resolution)
        touch(path)
        engine, why = check_engine(path, meta)
        if engine is None:
            log.info("%s v%s scores with scikit-learn: %s", MODEL_NAME, resolution.version, why)
        return StoredModel(self, resolution, path, meta, engine, why, pipeline)

    def fill(self, resolution: Resolution) -> tuple[Path, dict[str, Any], Any]:
        """Download, check and compile a version into its entry: ``(path, meta, pipeline)``.

        Built in a temporary directory and renamed into place; when another process got there
        first its entry is kept and this copy is discarded.
        """
        final = self.entry_path(resolution)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".fill-{final.name}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            model_file = self._download(resolution.version, tmp / MODEL_DIR)
            pipeline = read_pipeline(tmp / MODEL_DIR / model_file)
            engine_meta = build_engine(pipeline, tmp / ENGINE_DIR)
            sizes = {
                "model_bytes": _tree_bytes(tmp / MODEL_DIR),
                "engine_bytes": _tree_bytes(tmp / ENGINE_DIR),
            }
            sizes["total_bytes"] = sizes["model_bytes"] + sizes["engine_bytes"]
            meta = {
                "format": FORMAT,
                "model_name": MODEL_NAME,
                "version": resolution.version,
                "run_id": resolution.run_id,
                "sklearn_version": self.sklearn_version,
                "thresholds": resolution.thresholds,
                "model_file": model_file,
                "sizes": sizes,
                "engine": engine_meta,
                "filled_at": self.clock(),
            }
            _write_json(tmp / META, meta)
            try:
                os.rename(tmp, final)
            except OSError:
                winner = _read_meta(final)
                if winner is not None:
                    meta = winner  # filled concurrently: keep the entry already in place
                else:  # a damaged entry: replace it
                    remove_entry(final)
                    os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("cached %s v%s in %s", MODEL_NAME, resolution.version, final)
        self.evict(keep=final)
        return final, meta, pipeline

    def _download(self, version: str, target: Path) -> str:
        """The registered model directory into ``target``; returns the skops file's name."""
        import mlflow
        from mlflow.models import Model

        # The version's storage location, asked of this store's client (a ``models:/`` URI
        # would be resolved against MLflow's process-wide registry URI instead).
        location = self.client().get_model_version_download_uri(MODEL_NAME, version)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=scratch, tracking_uri=self.uri
            )
            os.replace(local, target)
        flavor = Model.load(str(target)).flavors.get("sklearn") or {}
        if flavor.get("serialization_format") != "skops":
            raise InputError(
                f"{MODEL_NAME} v{version} is not stored in the skops format "
                f"({flavor.get('serialization_format')!r}): refusing to load it"
            )
        return str(flavor["pickled_model"])

    def entries(self) -> list[Path]:
        """The complete entries of the cache (any order)."""
        directory = self.root / _ENTRIES
        if not directory.is_dir():
            return []
        return [p for p in directory.iterdir() if not p.name.startswith(".") and p.is_dir()]

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the cache fits ``max_bytes`` (never
        ``keep``); also clears what dead processes left. Returns the removed entries."""
        directory = self.root / _ENTRIES
        if not directory.is_dir():
            return []
        now = time.time()
        for leftover in directory.glob(".*"):
            with contextlib.suppress(OSError):
                trash = leftover.name.startswith(".trash-")
                if trash or now - leftover.stat().st_mtime > _STALE_FILL_SECONDS:
                    shutil.rmtree(leftover, ignore_errors=True)
        sized: list[tuple[float, int, Path]] = []
        for path in self.entries():
            with contextlib.suppress(OSError):
                sized.append((path.stat().st_mtime, _entry_bytes(path), path))
        total = sum(size for _, size, _ in sized)
        removed: list[Path] = []
        for _, size, path in sorted(sized, key=lambda item: item[0]):
            if total <= self.max_bytes:
                break
            if keep is not None and path == keep:
                continue
            if remove_entry(path):
                removed.append(path)
                log.info("model cache over %d bytes: removed %s", self.max_bytes, path.name)
            total -= size
        return removed


class StoredModel:
    """One registered version loaded from the cache, ready to score raw patient columns.

    ``engine`` is the checked compiled forest or ``None`` (``engine_status`` says why);
    ``pipeline`` is read from the entry on first use.
    """

    def __init__(
        self,
        store: ModelStore,
        resolution: Resolution,
        path: Path,
        meta: dict[str, Any],
        engine: Any,
        engine_status: str,
        pipeline: Any = None,
    ) -> None:
        self.name = MODEL_NAME
        self.version = resolution.version
        self.run_id = resolution.run_id
        self.thresholds = RiskThresholds.from_json(resolution.thresholds or meta["thresholds"])
        self.tracking_uri = store.uri
        self.path = path
        self.meta = meta
        self.engine = engine
        self.engine_status = engine_status
        self._store = store
        self._resolution = resolution
        self._pipeline = pipeline
        self._lock = threading.Lock()
        self._frames: dict[str, Any] = {}

    def __repr__(self) -> str:
        engine = "engine" if self.engine is not None else "sklearn"
        return f"StoredModel({self.name} v{self.version}, run {self.run_id}, {engine})"

    @property
    def pipeline(self) -> Any:
        """The scikit-learn pipeline (read with skops's allow-list on first use)."""
        if self._pipeline is None:
            with self._lock:
                if self._pipeline is None:
                    self._pipeline = self._read_pipeline()
        return self._pipeline

    def _read_pipeline(self) -> Any:
        model_file = self.path / MODEL_DIR / str(self.meta["model_file"])
        try:
            return read_pipeline(model_file)
        except FileNotFoundError:  # the entry was evicted meanwhile: fill it again
            self.path, self.meta, pipeline = self._store.fill(self._resolution)
            return pipeline

    def predict_proba(self, df: Any) -> Any:
        """Stroke probability for each row of a frame holding the feature columns."""
        if self.engine is not None:
            return self.engine.predict_frame(df)
        from stroke_dagster.core.features import feature_frame

        return self.pipeline.predict_proba(feature_frame(df))[:, 1]

    def _artifact_frame(self, path: str) -> Any:
        import pandas as pd

        if path not in self._frames:
            import mlflow

            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=self.run_id,
                    artifact_path=path,
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                )
                self._frames[path] = pd.read_parquet(local)
        return self._frames[path].copy()

    def reference_frame(self) -> Any:
        """The typed training split this version was fit on (features + stroke)."""
        return self._artifact_frame(REFERENCE_ARTIFACT)

    def split_ids(self) -> Any:
        """``id``/``split`` of the patients it trained and was held out on (None: not stored)."""
        from mlflow.exceptions import MlflowException

        try:
            return self._artifact_frame(SPLIT_IDS_ARTIFACT)
        except (MlflowException, OSError):
            return None

    def holdout_predictions(self) -> Any:
        """Holdout ``id``, ``stroke_probability``, ``risk_tier``, ``stroke`` at training time."""
        return self._artifact_frame(HOLDOUT_ARTIFACT)


# -- loading with an in-process cache -----------------------------------------------------------

_LOADED: dict[tuple[str, str], StoredModel] = {}
_LOADED_LOCK = threading.Lock()


def load_model(
    reference: str = CHAMPION, *, settings: Settings, max_age: float = 0.0
) -> StoredModel:
    """A version (``"3"``) or alias (``"champion"``) of ``StrokeRF``, kept per process too.

    ``max_age``: how old a cached alias resolution may be (0: ask the registry). Raises
    :class:`InputError` when the alias or version does not exist.
    """
    store = ModelStore(settings)
    resolution = store.resolve(reference, max_age=max_age)
    key = (store.uri, str(store.entry_path(resolution)))
    with _LOADED_LOCK:
        loaded = _LOADED.get(key)
    if loaded is not None and loaded.path.is_dir():
        touch(loaded.path)
        return loaded
    model = store.load_resolved(resolution)
    with _LOADED_LOCK:
        return _LOADED.setdefault(key, model)


def clear_cache() -> None:
    """Forget the models loaded in this process (the cache directory is kept)."""
    with _LOADED_LOCK:
        _LOADED.clear()


# -- pieces -------------------------------------------------------------------------------------


def read_pipeline(path: Path) -> Any:
    """The estimator in a skops file, refusing any type outside :data:`TRUSTED_TYPES`."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.load(path, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as exc:
        raise InputError(f"refusing to load {path.name}: {exc}") from None


def build_engine(pipeline: Any, directory: Path) -> dict[str, Any]:
    """Compile ``pipeline`` into ``directory`` when it compiles and matches it exactly.

    Returns the entry's ``engine`` record: ``compiled``, ``reason``, ``parity`` and the
    pipeline's outputs on the probe patients, which the engine must reproduce on every load.
    """
    from stroke_dagster.model import engine as forest

    try:
        compiled = forest.ForestEngine.compile(pipeline)
    except Exception as exc:  # an unforeseen pipeline detail: the pipeline itself always works
        log.warning("compiling %s failed: %s", MODEL_NAME, exc, exc_info=True)
        return {"compiled": False, "reason": f"compiling failed ({type(exc).__name__}: {exc})"}
    if compiled is None:
        return {"compiled": False, "reason": "the pipeline's shape does not compile"}
    gap = float(forest.parity(compiled, pipeline))
    if not gap <= forest.PARITY_TOLERANCE:
        reason = f"compiled forest differs from the pipeline by {gap:.3g}"
        log.warning("%s: scikit-learn is used", reason)
        return {"compiled": False, "reason": reason, "parity": gap}
    compiled.save(directory)
    assert compiled.probe_expected is not None  # compile() always records them
    return {
        "compiled": True,
        "reason": None,
        "parity": gap,
        "probe_outputs": [float(value) for value in compiled.probe_expected],
    }


def check_engine(path: Path, meta: dict[str, Any]) -> tuple[Any, str]:
    """The entry's engine, loaded and checked against the probe outputs in ``meta.json``
    (numpy only), or ``(None, why not)``."""
    record = meta.get("engine") or {}
    if not record.get("compiled"):
        return None, str(record.get("reason") or "no compiled engine")
    from stroke_dagster.model import engine as forest

    try:
        compiled = forest.ForestEngine.load(path / ENGINE_DIR)
        gap = compiled.max_difference(forest.probe_columns(), record["probe_outputs"])
    except Exception as exc:  # a damaged entry: the pipeline always works
        why = f"stored engine unusable ({type(exc).__name__}: {str(exc)[:200]})"
        log.warning("%s v%s: %s", MODEL_NAME, meta.get("version"), why)
        return None, why
    if not gap <= forest.PARITY_TOLERANCE:
        why = f"stored engine differs from the stored probe outputs by {gap:.3g}"
        log.warning("%s v%s: %s", MODEL_NAME, meta.get("version"), why)
        return None, why
    return compiled, "checked"


def touch(path: Path) -> None:
    """Mark an entry as just used (its modification time orders the eviction)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def remove_entry(path: Path) -> bool:
    """Take an entry out of the cache at once (rename), then delete it."""
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, trash)
    except OSError:
        return False  # removed by another process
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _reference(reference: str) -> str:
    ref = str(reference).strip()
    if ref.isdigit():
        return str(int(ref))
    if not _NAME.match(ref):
        raise InputError(f"model {MODEL_NAME} has no version or alias {ref!r}")
    return ref


def _read_resolution(path: Path) -> Resolution | None:
    try:
        return Resolution(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _read_meta(path: Path) -> dict[str, Any] | None:
    """An entry's meta.json, or ``None`` when the entry is absent or not of this format."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _entry_bytes(path: Path) -> int:
    meta = _read_meta(path)
    if meta is not None:
        with contextlib.suppress(KeyError, TypeError):
            return int(meta["sizes"]["total_bytes"])
    return _tree_bytes(path)


def _redact(uri: str) -> str:
    """``uri`` without a password (``postgresql://user:secret@host`` -> ``user:***@host``)."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", uri)
