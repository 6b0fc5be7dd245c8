"""Service settings read from the environment (``STROKE_API_*``, ``STROKE_TELEMETRY*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from stroke_dagster.errors import InputError

DEFAULT_MAX_BODY = 1024 * 1024  # 1 MiB
DEFAULT_RELOAD_SECONDS = 30.0
DEFAULT_FLUSH_SECONDS = 5.0


def _number(name: str, default: float, *, minimum: float = 0.0) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{name} must be a number, got {text!r}") from None
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum:g}, got {text!r}")
    return value


def _flag(name: str, default: bool) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    return text not in {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ApiConfig:
    """How the service behaves; :meth:`from_env` reads it from the environment.

    - ``api_key`` (``STROKE_API_KEY``): when set, every endpoint except the health probes and
      the docs needs ``Authorization: Bearer <key>``.
    - ``max_body`` (``STROKE_API_MAX_BODY``, bytes, default 1 MiB): larger bodies get 413.
    - ``reload_seconds`` (``STROKE_API_RELOAD_SECONDS``, default 30; 0 disables the loop): how
      often the ``champion`` alias is re-resolved.
    - ``telemetry`` (``STROKE_TELEMETRY``, default on): per-request rows to Parquet segments.
    - ``telemetry_features`` (``STROKE_TELEMETRY_FEATURES``, default off, for privacy): also keep
      the patients' feature rows, so drift can be checked on live traffic.
    - ``flush_seconds`` (``STROKE_TELEMETRY_FLUSH_SECONDS``, default 5): telemetry flush period.
    """

    api_key: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    reload_seconds: float = DEFAULT_RELOAD_SECONDS
    telemetry: bool = True
    telemetry_features: bool = False
    flush_seconds: float = DEFAULT_FLUSH_SECONDS

    @classmethod
    def from_env(cls) -> ApiConfig:
        return cls(
            api_key=os.environ.get("STROKE_API_KEY") or None,
            max_body=int(_number("STROKE_API_MAX_BODY", DEFAULT_MAX_BODY, minimum=1)),
            reload_seconds=_number("STROKE_API_RELOAD_SECONDS", DEFAULT_RELOAD_SECONDS),
            telemetry=_flag("STROKE_TELEMETRY", True),
            telemetry_features=_flag("STROKE_TELEMETRY_FEATURES", False),
            flush_seconds=_number(
                "STROKE_TELEMETRY_FLUSH_SECONDS", DEFAULT_FLUSH_SECONDS, minimum=0.05
            ),
        )
