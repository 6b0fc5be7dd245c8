"""Fitted detectors kept per model version: ``models/<version>/drift_<backend>.parquet`` of the file
storage (``STROKE_HOME`` by default, ``storage.url`` on object storage).

A detector is fitted once from the version's reference data (its training split) and holdout
predictions, both MLflow artifacts of the version's run, then loaded by every later check.

The file is data, never a pickle (the bucket also receives the upstream system's cohorts: whoever
can write there must not be able to run code in the steps). It is one Parquet file, published
atomically: the rows are the detector's encoded reference values (``group``, ``column``,
``value``) and the key-value metadata ``stroke.drift_detector`` is a JSON of the fit signature and
the column layout
(:meth:`~stroke_dagster.monitoring.drift.detector.TabularDriftDetector.to_state`). Loading
fits the engine's tests again from those values (cheap: the engines only keep the reference
matrix). A file that does not load, describes an impossible layout or was fitted with other
settings is refitted and replaced; the ``drift_<backend>.pkl`` of earlier releases is never read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import Settings
from stroke_dagster.core.storage import Storage, StoragePath, storage_for
from stroke_dagster.monitoring.drift.config import DriftConfig
from stroke_dagster.monitoring.drift.detector import STATE_COLUMNS, TabularDriftDetector

if TYPE_CHECKING:
    from stroke_dagster.model.store import StoredModel

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 1: the pickles of earlier releases (ignored)
SUFFIX = ".parquet"
METADATA_KEY = b"stroke.drift_detector"


def detector_path(version: str, backend: str, settings: Settings) -> StoragePath:
    return settings.files.path("models", str(version), f"drift_{backend}{SUFFIX}")


def _fit_signature(config: DriftConfig) -> dict[str, Any]:
    """The settings a fitted detector depends on (the others apply at check time)."""
    return {
        "format": FORMAT_VERSION,
        "backend": config.backend,
        "psi_bins": config.psi_bins,
        "rare_category_share": config.rare_category_share,
    }


def save_detector(
    detector: TabularDriftDetector, path: PurePath, storage: Storage | None = None
) -> StoragePath:
    """Write the fitted detector atomically (a reader never sees half a file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    storage = storage_for(path, storage)
    layout, values = detector.to_state()
    meta = {"signature": _fit_signature(detector.config), **layout}
    table = pa.Table.from_pandas(values, preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    with storage.staged_file(SUFFIX, near=path.parent) as tmp:
        pq.write_table(table, tmp)
        storage.publish(tmp, path, fsync=False)
    return path


def load_detector(
    path: PurePath, config: DriftConfig, storage: Storage | None = None
) -> TabularDriftDetector | None:
    """The stored detector with ``config`` applied, or ``None`` if absent, stale or unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    storage = storage_for(path, storage)
    try:
        data = storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        table = pq.read_table(pa.BufferReader(data), columns=list(STATE_COLUMNS))
        meta = json.loads((table.schema.metadata or {})[METADATA_KEY])
        if not isinstance(meta, dict) or meta.get("signature") != _fit_signature(config):
            return None
        values = table.replace_schema_metadata(None).to_pandas()
        return TabularDriftDetector.from_state(meta, values, config)
    except Exception as exc:  # damaged, tampered or of another layout: refit instead of failing
        log.warning("cannot load drift detector %s (%s): refitting", path, exc)
        return None


@dataclass
class LoadedDetector:
    """A fitted detector together with the model version it belongs to."""

    detector: TabularDriftDetector
    version: str
    path: StoragePath
    fitted_now: bool


def fit_for_model(model: StoredModel, config: DriftConfig, settings: Settings) -> LoadedDetector:
    """Fit a detector on ``model``'s reference data and holdout predictions, and store it."""
    detector = TabularDriftDetector(config).fit(
        model.reference_frame(),
        model.holdout_predictions(),
        reference_version=str(model.version),
    )
    path = detector_path(model.version, config.backend, settings)
    save_detector(detector, path, settings.files)
    log.info("fitted drift detector for %s v%s -> %s", model.name, model.version, path)
    return LoadedDetector(detector, str(model.version), path, fitted_now=True)


def detector_for_model(
    version: str | None = None,
    config: DriftConfig | None = None,
    *,
    settings: Settings,
) -> LoadedDetector:
    """The stored detector of model ``version`` (default: the champion), fitted on first use.

    Only the alias is resolved when the detector is already stored: the model itself is loaded
    just to fit a missing detector.
    """
    from stroke_dagster.model import registry

    config = config or settings.drift
    if version is None:
        version = registry.resolve_alias("champion", settings=settings)
        if version is None:
            raise InputError(registry.NO_CHAMPION)
    path = detector_path(version, config.backend, settings)
    detector = load_detector(path, config, settings.files)
    if detector is not None:
        return LoadedDetector(detector, str(version), path, fitted_now=False)
    model = registry.load_model(str(version), settings=settings)
    return fit_for_model(model, config, settings)
