"""The online scoring API: ``create_app()`` builds the FastAPI application.

Endpoints (``/docs`` has the OpenAPI page with examples):

- ``GET /health`` liveness; ``GET /ready`` 200 with the served model once one is loaded, else 503.
- ``POST /predict`` one patient; ``POST /predict/batch`` a JSON list of patients.
- ``POST /admin/reload`` re-resolves the ``champion`` alias now (it is also re-resolved every
  ``STROKE_API_RELOAD_SECONDS``); a moved alias is swapped in without a restart.
- KServe v2 (Open Inference Protocol) under ``/v2`` (see :mod:`stroke_dagster.api.kserve`).

With ``STROKE_API_KEY`` set, everything except the health probes (``/health``, ``/ready``,
``/v2/health/*``, ``/v2``) and the docs needs ``Authorization: Bearer <key>``: orchestrators
and load balancers probe without credentials, and the probes reveal no patient data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from stroke_dagster.api.config import ApiConfig
from stroke_dagster.api.errors import validation_error_handler
from stroke_dagster.api.holder import ModelHolder
from stroke_dagster.api.kserve import build_router
from stroke_dagster.api.middleware import ApiKeyMiddleware, BodyLimitMiddleware, TelemetryMiddleware
from stroke_dagster.api.models import (
    EXAMPLE_PATIENT,
    EXAMPLE_PATIENT_NO_BMI,
    BatchPrediction,
    ModelStatus,
    Patient,
    Prediction,
)
from stroke_dagster.api.predict import score_request
from stroke_dagster.api.telemetry import TelemetryWriter
from stroke_dagster.settings import Settings, get_settings

PROBE_PATHS = frozenset({"/health", "/ready", "/v2", "/v2/health/live", "/v2/health/ready"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def is_open_path(path: str) -> bool:
    """Paths that never need the API key: health probes and the API docs."""
    return path in PROBE_PATHS or path in DOC_PATHS


# Enforcement is ApiKeyMiddleware's (before the body is read); this only documents the scheme.
_DOCS_BEARER = HTTPBearer(auto_error=False, description="STROKE_API_KEY, when the service has one.")


def create_app(
    settings: Settings | None = None,
    *,
    config: ApiConfig | None = None,
    holder: ModelHolder | None = None,
) -> FastAPI:
    """The service. ``settings`` and ``config`` default to the environment.

    ``settings.home`` is where telemetry is written; the registry is found the way every other
    command finds it (``STROKE_HOME`` / ``MLFLOW_TRACKING_URI``). ``holder`` replaces the default
    champion holder (e.g. another alias).
    """
    settings = settings or get_settings()
    config = config or settings.api
    holder = holder or ModelHolder(reload_seconds=config.reload_seconds)
    writer = TelemetryWriter(
        settings.home,
        enabled=config.telemetry,
        store_features=config.telemetry_features,
        flush_seconds=config.flush_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        writer.start()
        holder.start()  # loads in the background: no champion yet means "not ready", not down
        try:
            yield
        finally:
            holder.stop()
            await run_in_threadpool(writer.close)  # nothing buffered is lost on shutdown

    app = FastAPI(
        title="Stroke risk scoring API",
        version="1",
        description=(
            "Stroke probability and risk tier for patients in the raw schema, from the "
            "registered `champion` of the StrokeRF model. Bad input gets 422 naming the field "
            "(values are never echoed back)."
        ),
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.telemetry = writer
    app.state.config = config
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    # Added innermost first: telemetry wraps the key check, which wraps the body limit.
    app.add_middleware(BodyLimitMiddleware, max_body=config.max_body)
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, is_open=is_open_path)
    app.add_middleware(
        TelemetryMiddleware, writer=writer, skip=lambda p: is_open_path(p) or p == "/favicon.ico"
    )

    keep = config.telemetry_features
    auth = [] if config.api_key is None else [Depends(_DOCS_BEARER)]

    @app.get("/health", tags=["health"], summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["health"],
        summary="Readiness: 200 with the served model, 503 before one is loaded",
        response_model=ModelStatus,
        responses={503: {"model": ModelStatus}},
    )
    def ready() -> JSONResponse:
        status = holder.status()
        return JSONResponse(status, status_code=200 if status["ready"] else 503)

    @app.post(
        "/predict",
        tags=["scoring"],
        summary="Score one patient",
        response_model=Prediction,
        dependencies=auth,
    )
    async def predict(
        request: Request,
        patient: Annotated[
            Patient,  # type: ignore[valid-type]
            Body(
                openapi_examples={
                    "patient": {"value": EXAMPLE_PATIENT},
                    "bmi unknown": {"value": EXAMPLE_PATIENT_NO_BMI},
                }
            ),
        ],
    ) -> dict[str, Any]:
        record = patient.model_dump()
        scored = await score_request(request, [record], keep_features=keep)
        return {
            "id": record["id"],
            "stroke_probability": float(scored.probabilities[0]),
            "risk_tier": str(scored.tiers[0]),
            "model_name": scored.model.name,
            "model_version": scored.model.version,
        }

    @app.post(
        "/predict/batch",
        tags=["scoring"],
        summary="Score a list of patients (answers in request order)",
        response_model=BatchPrediction,
        dependencies=auth,
    )
    async def predict_batch(
        request: Request,
        patients: Annotated[
            list[Patient],  # type: ignore[valid-type]
            Body(
                openapi_examples={
                    "two patients": {"value": [EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI]}
                }
            ),
        ],
    ) -> dict[str, Any]:
        records = [p.model_dump() for p in patients]
        scored = await score_request(request, records, keep_features=keep)
        name, version = scored.model.name, scored.model.version
        return {
            "model_name": name,
            "model_version": version,
            "predictions": [
                {
                    "id": record["id"],
                    "stroke_probability": float(p),
                    "risk_tier": str(t),
                    "model_name": name,
                    "model_version": version,
                }
                for record, p, t in zip(records, scored.probabilities, scored.tiers, strict=True)
            ],
        }

    @app.post(
        "/admin/reload",
        tags=["admin"],
        summary="Re-resolve the champion alias now",
        response_model=ModelStatus,
        dependencies=auth,
    )
    async def reload() -> dict[str, Any]:
        changed = await run_in_threadpool(holder.refresh)
        return {**holder.status(), "changed": changed}

    app.include_router(build_router(keep, auth))
    return app
