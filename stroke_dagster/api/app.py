"""The online scoring API: ``create_app()`` builds the FastAPI application.

Endpoints (``/docs`` has the OpenAPI page with examples; ``/openapi.json`` lists every status
code each route can answer, with its body):

- ``GET /health`` liveness; ``GET /ready`` 200 with the served model once one is loaded, else 503.
- ``POST /predict`` one patient; ``POST /predict/batch`` a JSON list of patients.
- ``POST /admin/reload`` re-resolves the ``champion`` alias now (it is also re-resolved every
  ``STROKE_API_RELOAD_SECONDS``); a moved alias is swapped in without a restart.
- KServe v2 (Open Inference Protocol) under ``/v2`` (see :mod:`stroke_dagster.api.kserve`).
- ``POST /feedback`` a clinician's action on a flagged patient (accepted or overridden, with a
  reason code), linked to its prediction (see :mod:`stroke_dagster.audit.feedback`).

Every scoring answer carries ``X-Request-Id``; with the audit trail on (``STROKE_AUDIT``, the
default) each scored patient gets a chained ``prediction_audit`` record under that id, appended
by the telemetry writer's flush thread (see :mod:`stroke_dagster.audit.records`).

Errors are ``{"error": "<one line>"}`` (422 adds ``detail``, the problems by field, never the
submitted values): 400 body not JSON, 401 missing key, 404 unknown model, 408 body not received
in time, 413 body too large, 415 not JSON content type, 422 invalid request, 503 no model yet.

The scoring routes read and validate their JSON body themselves (pydantic-core parses and
validates in one pass) and write their answer as JSON bytes, so one patient costs little more
than the model; the request schemas in the document are the very models used to validate.

With ``STROKE_API_KEY`` set, everything except the health probes (``/health``, ``/ready``,
``/v2/health/*``, ``/v2``) and the docs needs ``Authorization: Bearer <key>``: orchestrators
and load balancers probe without credentials, and the probes reveal no patient data.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import request_response

from stroke_dagster.api.config import ApiConfig
from stroke_dagster.api.errors import (
    BadBody,
    bad_body_handler,
    describe_errors,
    error_response,
    http_error_handler,
    json_response,
    summary,
)
from stroke_dagster.api.holder import ModelHolder, registry_loader, registry_resolver
from stroke_dagster.api.kserve import build_router
from stroke_dagster.api.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    TelemetryMiddleware,
)
from stroke_dagster.api.models import (
    EXAMPLE_PATIENT,
    EXAMPLE_PATIENT_NO_BMI,
    MAX_ROWS,
    AcceptedFeedback,
    BatchPrediction,
    Error,
    FeedbackRecorded,
    FeedbackRequest,
    Health,
    ModelStatus,
    OverriddenFeedback,
    Patient,
    Prediction,
    PredictRequest,
    RequestRef,
    ScoreRef,
    ValidationProblem,
)
from stroke_dagster.api.predict import parse_body, score_request
from stroke_dagster.api.telemetry import TelemetryWriter
from stroke_dagster.audit import records as audit
from stroke_dagster.audit.feedback import ACTIONS, Feedback, FeedbackError
from stroke_dagster.audit.feedback import record as record_feedback
from stroke_dagster.clinical.explain import explain_one
from stroke_dagster.core.settings import Settings, load_settings
from stroke_dagster.warehouse import store as warehouse

PROBE_PATHS = frozenset({"/health", "/ready", "/v2", "/v2/health/live", "/v2/health/ready"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body is not JSON (syntax, encoding, nesting deeper than 200 levels).",
    401: "Missing or wrong `Authorization: Bearer <key>` (the service has an API key).",
    404: "No such model (or version) served here.",
    408: "The body did not arrive within the read timeout.",
    413: "The body is larger than the limit (STROKE_API_MAX_BODY).",
    415: "The body is not sent as application/json.",
    422: "The body is JSON but not a valid request: the problems by field, values left out.",
    503: "No model loaded yet (the service is not ready).",
}
BODY_ERRORS = (400, 408, 413, 415, 422)


def is_open_path(path: str) -> bool:
    """Paths that never need the API key: health probes and the API docs."""
    return path in PROBE_PATHS or path in DOC_PATHS


def error_responses(*codes: int, model: type[BaseModel] = Error) -> dict[int | str, Any]:
    """OpenAPI ``responses`` entries for error codes (422 with the list of problems)."""
    return {
        code: {
            "model": ValidationProblem if code == 422 else model,
            "description": ERROR_DESCRIPTIONS[code],
        }
        for code in codes
    }


def json_body(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": schema,
                    "examples": {name: {"value": value} for name, value in examples.items()},
                }
            },
        }
    }


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


# Enforcement is ApiKeyMiddleware's (before the body is read); this only documents the scheme.
_DOCS_BEARER = HTTPBearer(auto_error=False, description="STROKE_API_KEY, when the service has one.")


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {**e, "loc": tuple(e.get("loc", ()))[1:]} for e in exc.errors()
    ]  # ("body" | "path" | "query", ...) -> the field
    problems = describe_errors(errors)
    return json_response({"error": summary(problems), "detail": problems}, 422)


# Keeps the request path's tail latency flat beside the background threads (see lifespan).
GIL_SWITCH_INTERVAL_S = 0.0005


def create_app(
    settings: Settings | None = None,
    *,
    config: ApiConfig | None = None,
    holder: ModelHolder | None = None,
) -> FastAPI:
    """The service. ``settings`` (default: ``load_settings()``, the environment read once here)
    and ``config`` (default: its ``api`` section).

    ``settings.home`` is where telemetry is written and ``settings.mlflow_tracking_uri`` the
    registry the champion comes from. ``holder`` replaces the default champion holder (e.g.
    another alias).
    """
    settings = settings or load_settings()
    config = config or settings.api
    holder = holder or ModelHolder(
        resolver=registry_resolver(settings),
        loader=registry_loader(settings),
        reload_seconds=config.reload_seconds,
    )
    store = warehouse.of(settings)
    requester = audit.key_id(config.api_key)  # every request carries the service's one key
    audit_log = None
    if settings.audit.enabled:
        audit_log = audit.AuditLog(
            lambda rows: store.append(audit.AUDIT_TABLE, rows),
            code_version=audit.code_version(settings),
            requester=requester,
        )
    writer = TelemetryWriter(
        settings.home,
        enabled=config.telemetry,
        store_features=config.telemetry_features,
        flush_seconds=config.flush_seconds,
        storage=settings.files,
        audit=audit_log,
    )
    body_timeout = config.body_timeout

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if writer.enabled or audit_log is not None:
            # The flush thread (and the alias reload) convert rows in Python; at the default
            # 5 ms GIL switch interval each stretch of that work can hold a request that long.
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
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
            'registered `champion` of the StrokeRF model. Errors are `{"error": "..."}`; '
            "bad input gets 422 naming the field (values are never echoed back)."
        ),
        lifespan=lifespan,
        # The service keeps its own request telemetry (patient values left out). FastAPI's
        # OpenTelemetry bridge would record validation failures and exception messages, and
        # checks for configured providers on every request: off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.holder = holder
    app.state.telemetry = writer
    app.state.audit = audit_log
    app.state.config = config
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(BadBody, bad_body_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    # Added innermost first: telemetry wraps the key check, which wraps the body limit.
    app.add_middleware(BodyLimitMiddleware, max_body=config.max_body, timeout=body_timeout)
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, is_open=is_open_path)
    app.add_middleware(
        TelemetryMiddleware, writer=writer, skip=lambda p: is_open_path(p) or p == "/favicon.ico"
    )

    keep = config.telemetry_features
    auth = [] if config.api_key is None else [Depends(_DOCS_BEARER)]
    locked = (401,) if config.api_key is not None else ()
    patients = TypeAdapter(Annotated[list[Patient], Field(max_length=MAX_ROWS)])

    @app.get("/health", tags=["health"], summary="Liveness", response_model=Health)
    def health() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/ready",
        tags=["health"],
        summary="Readiness: 200 with the served model, 503 before one is loaded",
        response_model=ModelStatus,
        responses={503: {"model": ModelStatus, "description": ERROR_DESCRIPTIONS[503]}},
    )
    def ready() -> Response:
        status = holder.status()
        return json_response(status, status_code=200 if status["ready"] else 503)

    @app.post(
        "/predict",
        tags=["scoring"],
        summary="Score one patient",
        response_model=Prediction,
        responses=error_responses(*sorted((*BODY_ERRORS, *locked, 503))),
        dependencies=auth,
        openapi_extra=json_body(
            ref(PredictRequest),
            {"patient": EXAMPLE_PATIENT, "bmi unknown": EXAMPLE_PATIENT_NO_BMI},
        ),
    )
    async def predict(request: Request) -> Response:
        body = await parse_body(request, PredictRequest)
        record = body.record()
        scored = await score_request(request, [record], keep_features=keep)
        answer = {
            "id": record["id"],
            "stroke_probability": float(scored.probabilities[0]),
            "risk_tier": str(scored.tiers[0]),
            "model_name": scored.model.name,
            "model_version": scored.model.version,
        }
        if body.explain:
            answer["explanation"] = await run_in_threadpool(
                explain_one, scored.model.model.pipeline, record
            )
        return json_response(answer, headers={"X-Request-Id": scored.request_id})

    @app.post(
        "/predict/batch",
        tags=["scoring"],
        summary=f"Score a list of up to {MAX_ROWS} patients (answers in request order)",
        response_model=BatchPrediction,
        responses=error_responses(*sorted((*BODY_ERRORS, *locked, 503))),
        dependencies=auth,
        openapi_extra=json_body(
            {"type": "array", "items": ref(Patient), "maxItems": MAX_ROWS},
            {"two patients": [EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI]},
        ),
    )
    async def predict_batch(request: Request) -> Response:
        records = [p.record() for p in await parse_body(request, patients)]
        scored = await score_request(request, records, keep_features=keep)
        name, version = scored.model.name, scored.model.version
        return json_response(
            {
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
                    for record, p, t in zip(
                        records, scored.probabilities, scored.tiers, strict=True
                    )
                ],
            },
            headers={"X-Request-Id": scored.request_id},
        )

    @app.post(
        "/admin/reload",
        tags=["admin"],
        summary="Re-resolve the champion alias now",
        response_model=ModelStatus,
        responses=error_responses(*locked, 413),
        dependencies=auth,
    )
    async def reload() -> Response:
        changed = await run_in_threadpool(holder.refresh)
        return json_response({**holder.status(), "changed": changed})

    feedback_body = TypeAdapter(FeedbackRequest)
    feedback_errors = error_responses(*sorted((*BODY_ERRORS, *locked)))
    feedback_errors[409] = {
        "model": Error,
        "description": "Several patients of the request match: give patient_id or row_in_request.",
    }
    feedback_errors[404] = {
        "model": Error,
        "description": "No prediction matches: unknown request id, or no score of that patient "
        "on that day (by that model version).",
    }

    @app.post(
        "/feedback",
        tags=["governance"],
        summary="Record a clinician's action on a flagged patient (accepted or overridden)",
        response_model=FeedbackRecorded,
        responses=feedback_errors,
        dependencies=auth,
        openapi_extra=json_body(
            {"oneOf": [ref(AcceptedFeedback), ref(OverriddenFeedback)]},
            {},  # every example would name a prediction this service may not have made
        ),
    )
    async def feedback(request: Request) -> Response:
        body = await parse_body(request, feedback_body, ACTIONS)
        target = body.prediction
        item = Feedback(
            action=body.action,
            reason_code=body.reason_code,
            clinician_id=body.clinician_id,
            feedback_id=body.feedback_id,
            **(
                {
                    "request_id": target.request_id,
                    "patient_id": target.patient_id,
                    "row_in_request": target.row_in_request,
                }
                if isinstance(target, RequestRef)
                else {
                    "cohort_date": target.cohort_date,
                    "patient_id": target.patient_id,
                    "model_version": target.model_version,
                }
            ),
        )
        try:
            row = await run_in_threadpool(
                record_feedback, store, item, requester=requester, pending=writer.pending_audit
            )
        except FeedbackError as exc:
            if exc.status != 422:
                return error_response(str(exc), exc.status)
            problem = {"field": "body", "row": None, "msg": str(exc), "type": "value_error"}
            return json_response({"error": str(exc), "detail": [problem]}, 422)
        return json_response(
            {
                **{k: row[k] for k in FeedbackRecorded.model_fields if k in row},
                "cohort_date": row["cohort_date"].isoformat(),
                "recorded_at": row["recorded_at"].isoformat(),
            }
        )

    app.include_router(build_router(keep, auth, locked))
    # The two hot routes keep their documentation but run through Starlette's plain request
    # wrapper: they take only the request, so FastAPI's dependency and response machinery
    # (a good part of one patient's time) has nothing to do for them.
    for route in app.routes:
        if isinstance(route, APIRoute) and route.endpoint in (predict, predict_batch, feedback):
            route.app = request_response(route.endpoint)

    def openapi() -> dict[str, Any]:
        """The generated document plus the request models the routes validate by hand."""
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            from stroke_dagster.api.kserve import InferRequest

            # Path parameters are plain text: FastAPI's generic 422 can never happen.
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    answer = operation.get("responses", {}).get("422", {})
                    if "HTTPValidationError" in str(answer):
                        del operation["responses"]["422"]
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            feedback_models = (AcceptedFeedback, OverriddenFeedback, RequestRef, ScoreRef)
            for model in (Patient, PredictRequest, InferRequest, *feedback_models):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
