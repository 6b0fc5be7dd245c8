"""The served model: the ``champion`` alias, re-resolved periodically and swapped atomically.

Models come from the model cache (:mod:`stroke_dagster.model.store`). The periodic check reuses an
alias resolution younger than ``model_cache.alias_ttl_seconds``; :meth:`ModelHolder.refresh`
called directly (``POST /admin/reload``) asks the registry.

A request reads :attr:`ModelHolder.current` once and scores with that object to the end, so a
swap (one attribute assignment) never affects a request in flight. Loading a new version happens
beside the served one; only a fully loaded, checked model replaces it. A registry that cannot be
reached, or an alias that disappears, leaves the served model in place.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stroke_dagster.api.scorer import Scorer
from stroke_dagster.core.settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"


@dataclass(frozen=True)
class LoadedModel:
    """A registered version ready to score: the registry's StoredModel plus its scorer."""

    model: Any  # stroke_dagster.model.store.StoredModel
    scorer: Scorer
    loaded_at: dt.datetime

    @property
    def name(self) -> str:
        return str(self.model.name)

    @property
    def version(self) -> str:
        return str(self.model.version)

    @property
    def thresholds(self) -> Any:
        return self.model.thresholds


Resolver = Callable[..., "str | None"]  # (alias, *, fresh: bool) -> version or None


def registry_resolver(settings: Settings) -> Resolver:
    """Resolves an alias through the model cache of ``settings`` (``fresh``: ask the registry,
    else reuse a resolution younger than ``model_cache.alias_ttl_seconds``)."""
    ttl = settings.model_cache.alias_ttl_seconds

    def resolve(alias: str, *, fresh: bool = True) -> str | None:
        from stroke_dagster.core.errors import InputError
        from stroke_dagster.model.store import ModelStore

        try:
            return ModelStore(settings).resolve(alias, max_age=0.0 if fresh else ttl).version
        except InputError:
            return None

    return resolve


def registry_loader(settings: Settings) -> Callable[[str], Any]:
    """Loads a version through the model cache of ``settings``."""
    from stroke_dagster.model.store import load_model

    return functools.partial(load_model, settings=settings)


class ModelHolder:
    """Keeps the alias's current version loaded; :meth:`refresh` checks the registry once."""

    def __init__(
        self,
        *,
        alias: str = CHAMPION,
        resolver: Resolver,
        loader: Callable[[str], Any],
        reload_seconds: float = 30.0,
    ) -> None:
        self.alias = alias
        self.resolver = resolver
        self.loader = loader
        self.reload_seconds = reload_seconds
        self.current: LoadedModel | None = None
        self.last_check: dt.datetime | None = None
        self.last_error: str | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self, *, fresh: bool = True) -> bool:
        """Resolve the alias; load and swap in its version if it moved. True when swapped.

        ``fresh=False`` (the periodic check) accepts a recently cached resolution.
        """
        with self._refresh_lock:
            self.last_check = dt.datetime.now(dt.UTC)
            try:
                version = self.resolver(self.alias, fresh=fresh)
                if version is None:
                    self.last_error = f"no model has the '{self.alias}' alias yet"
                    return False
                current = self.current
                if current is not None and current.version == str(version):
                    self.last_error = None
                    return False
                model = self.loader(str(version))
                scorer = Scorer(model.pipeline, engine=getattr(model, "engine", None))
                loaded = LoadedModel(model, scorer, dt.datetime.now(dt.UTC))
            except Exception as exc:  # keep serving what we have
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                log.warning("model refresh failed: %s", self.last_error)
                return False
            self.current = loaded
            self.last_error = None
            log.info(
                "serving %s v%s (compiled path: %s)",
                loaded.name,
                loaded.version,
                loaded.scorer.fast,
            )
            return True

    def start(self) -> None:
        """Load the alias's version now, then re-resolve it every ``reload_seconds`` (0: never).

        Runs in a daemon thread, so the service answers ``/health`` at once and ``/ready`` turns
        200 when the first load completes.
        """
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="model-reload", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        self.refresh(fresh=False)
        if self.reload_seconds <= 0:
            return
        while not self._stop.wait(self.reload_seconds):
            self.refresh(fresh=False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def status(self) -> dict[str, Any]:
        current = self.current
        return {
            "ready": current is not None,
            "model_name": current.name if current else None,
            "model_version": current.version if current else None,
            "loaded_at": current.loaded_at.isoformat() if current else None,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "last_error": self.last_error,
        }
