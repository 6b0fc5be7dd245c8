"""Scoring one request's patients, shared by the REST and the KServe v2 endpoints."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from stroke_dagster.api.holder import LoadedModel, ModelHolder
from stroke_dagster.api.middleware import TELEMETRY_STATE_KEY
from stroke_dagster.api.telemetry import scoring_summary
from stroke_dagster.risk import assign_tiers
from stroke_dagster.schema import FEATURES, ID

# Larger requests are scored in the thread pool, so they never stall the event loop.
INLINE_MAX_ROWS = 64


@dataclass(frozen=True)
class Scored:
    model: LoadedModel
    probabilities: np.ndarray
    tiers: np.ndarray


def _score(loaded: LoadedModel, records: list[dict[str, Any]]) -> Scored:
    probabilities = loaded.scorer.predict(records)
    return Scored(loaded, probabilities, assign_tiers(probabilities, loaded.thresholds))


async def score_request(
    request: Request, records: list[dict[str, Any]], *, keep_features: bool
) -> Scored:
    """Score ``records`` with the model served right now; leave the telemetry for the middleware.

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
    if keep_features:
        now = dt.datetime.now(dt.UTC)
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
    return scored
