"""Service settings: the ``api`` section of :class:`stroke_dagster.core.settings.Settings`.

``ApiConfig`` is that section under the name the service uses (``STROKE_API_KEY``,
``STROKE_API_MAX_BODY``, ``STROKE_API_RELOAD_SECONDS``, ``STROKE_TELEMETRY``,
``STROKE_TELEMETRY_FEATURES``, ``STROKE_TELEMETRY_FLUSH_SECONDS``).
"""

from __future__ import annotations

from stroke_dagster.core.settings import ApiSettings

ApiConfig = ApiSettings

__all__ = ["ApiConfig"]
