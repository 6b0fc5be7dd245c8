"""Scoring one request's patients, shared by the REST and the KServe v2 endpoints."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from stroke_dagster.api.errors import BadBody, bad_body
from stroke_dagster.api.holder import LoadedModel, ModelHolder
from stroke_dagster.api.middleware import TELEMETRY_STATE_KEY
from stroke_dagster.api.telemetry import scoring_summary
from stroke_dagster.audit.records import AuditLog
from stroke_dagster.core.risk import assign_tiers
from stroke_dagster.core.schema import FEATURES, ID

# Larger requests are scored in the thread pool, so they never stall the event loop.
INLINE_MAX_ROWS = 64


JSON_TYPES = ("application/json",)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # curl without -H: taken as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or media.endswith("+json")


async def parse_body(
    request: Request, schema: type[BaseModel] | TypeAdapter[Any], tags: Sequence[str] = ()
) -> Any:
    """The JSON body validated by ``schema`` (a model or a TypeAdapter; ``tags``: those of a
    discriminated union, left out of the field names of a 422).

    Parsing and validation run together in pydantic-core. Raises :class:`BadBody`: 415 for a
    non-JSON content type, 400 for a body that is not JSON, 422 for JSON that is not valid.
    """
    if not _is_json(request.headers.get("content-type")):
        raise BadBody(415, "send the body as application/json", None)
    body = await request.body()
    try:
        if isinstance(schema, TypeAdapter):
            return schema.validate_json(body)
        return schema.model_validate_json(body)
    except ValidationError as exc:
        raise bad_body(exc, tags) from None


@dataclass(frozen=True)
class Scored:
    model: LoadedModel
    probabilities: np.ndarray
    tiers: np.ndarray
    request_id: str = ""  # telemetry and audit records name the request by it


def _score(loaded: LoadedModel, records: list[dict[str, Any]]) -> Scored:
    probabilities = loaded.scorer.predict(records)
    return Scored(loaded, probabilities, assign_tiers(probabilities, loaded.thresholds))


async def score_request(
    request: Request, records: list[dict[str, Any]], *, keep_features: bool
) -> Scored:
    """Score ``records`` with the model served right now; leave the telemetry for the middleware
    and the audit records (one per patient) for the telemetry writer's flush thread.

    503 when no model is loaded yet.
    """
    holder: ModelHolder = request.app.state.holder
    loaded = holder.current  # read once: a concurrent swap never changes this request's model
    if loaded is None:
        raise HTTPException(503, detail="no champion model loaded yet (run `stroke train`)")
    if len(records) <= INLINE_MAX_ROWS:
        scored = _score(loaded, records)
    else:
        scored = await run_in_threadpool(_score, loaded, records)
    state: dict[str, Any] = scoring_summary(
        records, scored.probabilities, scored.tiers, loaded.name, loaded.version
    )
    request_id = uuid.uuid4().hex
    state["request_id"] = request_id
    now = dt.datetime.now(dt.UTC)
    audit_log: AuditLog | None = getattr(request.app.state, "audit", None)
    if audit_log is not None:
        request.app.state.telemetry.record_audit(
            audit_log.prediction_rows(
                ts=now,
                request_id=request_id,
                records=records,
                probabilities=scored.probabilities,
                tiers=scored.tiers,
                model=loaded,
            )
        )
    if keep_features:
        state["features"] = [
            {
                "ts": now,
                "request_id": request_id,
                "row_in_request": i,
                ID: record.get(ID),
                **{name: record[name] for name in FEATURES},
                "stroke_probability": float(p),
                "risk_tier": str(t),
            }
            for i, (record, p, t) in enumerate(
                zip(records, scored.probabilities, scored.tiers, strict=True)
            )
        ]
    request.scope.setdefault("state", {})[TELEMETRY_STATE_KEY] = state
    return dataclasses.replace(scored, request_id=request_id)
