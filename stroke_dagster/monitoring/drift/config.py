"""Drift-check settings: the ``drift`` section of :class:`stroke_dagster.core.settings.Settings`.

``DriftConfig`` is that section under the name the drift code uses; the shells load it once
(``load_settings().drift``) and pass it down.
"""

from __future__ import annotations

from stroke_dagster.core.settings import BACKENDS, CORRECTIONS, NUMERIC_EFFECTS, DriftSettings

DriftConfig = DriftSettings

__all__ = ["BACKENDS", "CORRECTIONS", "NUMERIC_EFFECTS", "DriftConfig"]
