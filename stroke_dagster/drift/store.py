"""Fitted detectors kept per model version: ``models/<version>/drift_<backend>.pkl`` of the file
storage (``STROKE_HOME`` by default, ``storage.url`` on object storage).

A detector is fitted once from the version's reference data (its training split) and holdout
predictions, both MLflow artifacts of the version's run, then loaded by every later check. The file
is a pickle written atomically by this platform for itself (never load one from elsewhere); a file
that no longer loads or was fitted with other settings is refitted and replaced.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from stroke_dagster.drift.config import DriftConfig
from stroke_dagster.drift.detector import TabularDriftDetector
from stroke_dagster.errors import InputError
from stroke_dagster.settings import Settings
from stroke_dagster.storage import Storage, StoragePath, storage_for

if TYPE_CHECKING:
    from stroke_dagster.registry import ServingModel

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def detector_path(version: str, backend: str, settings: Settings) -> StoragePath:
    return settings.files.path("models", str(version), f"drift_{backend}.pkl")


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
    storage = storage_for(path, storage)
    payload = {"signature": _fit_signature(detector.config), "detector": detector}
    with storage.staged_file(".tmp", near=path.parent) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
        storage.publish(tmp, path, fsync=False)
    return path


def load_detector(
    path: PurePath, config: DriftConfig, storage: Storage | None = None
) -> TabularDriftDetector | None:
    """The stored detector with ``config`` applied, or ``None`` if absent, stale or unreadable."""
    storage = storage_for(path, storage)
    try:
        data = storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        payload = pickle.loads(data)  # noqa: S301 - a file this platform wrote for itself
    except Exception as exc:  # a pickle from other library versions: refit instead of failing
        log.warning("cannot load drift detector %s (%s): refitting", path, exc)
        return None
    if not isinstance(payload, dict) or payload.get("signature") != _fit_signature(config):
        return None
    detector: TabularDriftDetector = payload["detector"]
    detector.config = config
    return detector


@dataclass
class LoadedDetector:
    """A fitted detector together with the model version it belongs to."""

    detector: TabularDriftDetector
    version: str
    path: StoragePath
    fitted_now: bool


def fit_for_model(model: ServingModel, config: DriftConfig, settings: Settings) -> LoadedDetector:
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
    from stroke_dagster import registry

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
