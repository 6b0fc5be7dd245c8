"""Open Inference Protocol (KServe v2, REST): health, model metadata and ``infer``.

Inputs are named tensors, one per feature column (``shape [n]`` or ``[n, 1]``, row-major data):
``BYTES`` for the categorical columns, ``FP64`` for the measurements (``bmi`` may hold
``null``) and ``INT64`` for the 0/1 flags; other float/int widths are accepted too. An optional
``id`` ``BYTES`` tensor carries patient identifiers. Outputs: ``stroke_probability`` (``FP64``)
and ``risk_tier`` (``BYTES``). Every value goes through the same schema checks as ``/predict``;
errors are ``{"error": "..."}`` (HTTP 422 for bad input, 404 for an unknown model or version).
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from stroke_dagster.api.errors import describe_errors
from stroke_dagster.api.holder import ModelHolder
from stroke_dagster.api.models import EXAMPLE_PATIENT, Patient
from stroke_dagster.api.predict import score_request
from stroke_dagster.schema import BINARY_FEATURES, FEATURES, ID, NUMERIC_FEATURES
from stroke_dagster.settings import MODEL_NAME

FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
OUTPUTS: dict[str, str] = {"stroke_probability": "FP64", "risk_tier": "BYTES"}


def datatype(name: str) -> str:
    """The advertised v2 datatype of a feature column."""
    if name in NUMERIC_FEATURES:
        return "FP64"
    if name in BINARY_FEATURES:
        return "INT64"
    return "BYTES"


def _accepted(name: str) -> frozenset[str]:
    if name in NUMERIC_FEATURES:
        return FLOAT_TYPES | INT_TYPES
    if name in BINARY_FEATURES:
        return INT_TYPES | {"BOOL"}
    return frozenset({"BYTES"})


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


EXAMPLE_INFER: dict[str, Any] = {
    "id": "req-1",
    "inputs": [
        {"name": name, "shape": [1], "datatype": datatype(name), "data": [EXAMPLE_PATIENT[name]]}
        for name in FEATURES
    ],
}

_patients = TypeAdapter(list[Patient])


class InferError(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def tensors_to_records(inputs: list[InferTensor]) -> list[dict[str, Any]]:
    """Named column tensors -> validated patient dicts (raises :class:`InferError`)."""
    by_name: dict[str, InferTensor] = {}
    for tensor in inputs:
        if tensor.name in by_name:
            raise InferError(f"input '{tensor.name}' given twice")
        if tensor.name not in FEATURES and tensor.name != ID:
            raise InferError(f"unknown input '{tensor.name}'; expected {', '.join(FEATURES)}")
        by_name[tensor.name] = tensor
    missing = [name for name in FEATURES if name not in by_name]
    if missing:
        raise InferError(f"missing input tensor(s): {', '.join(missing)}")
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for name, tensor in by_name.items():
        allowed = frozenset({"BYTES"}) if name == ID else _accepted(name)
        if tensor.datatype.upper() not in allowed:
            raise InferError(f"input '{name}' must have datatype {datatype(name)}")
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InferError(f"input '{name}' must have shape [n] or [n, 1]")
        values = _flatten(tensor.data)
        if len(values) != math.prod(tensor.shape):
            raise InferError(f"input '{name}': data length does not match shape")
        if rows is not None and len(values) != rows:
            raise InferError(f"input '{name}': every input must have the same number of rows")
        rows = len(values)
        columns[name] = values
    n = rows or 0
    raw = [{name: columns[name][i] for name in columns} for i in range(n)]
    try:
        patients = _patients.validate_python(raw)
    except ValidationError as exc:
        errors = describe_errors(exc.errors(), prefix=())
        first = errors[0]
        where = f" row {first['row']}" if first.get("row") is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InferError(f"input '{first['field']}'{where}: {first['msg']}{more}") from None
    return [p.model_dump() for p in patients]


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _package_version() -> str:
    try:
        return version("stroke-dagster")
    except PackageNotFoundError:
        return "0"


def build_router(keep_features: bool, auth: list[Any]) -> APIRouter:
    """The ``/v2`` routes; ``auth`` (dependencies) documents the key on the model routes."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])

    @router.get("", summary="Server metadata")
    def server_metadata() -> dict[str, Any]:
        return {"name": "stroke-dagster", "version": _package_version(), "extensions": []}

    @router.get("/health/live", summary="Server liveness")
    def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", summary="Server readiness (503 until a model is loaded)")
    def ready(request: Request) -> JSONResponse:
        is_ready = request.app.state.holder.current is not None
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    def _check_model(holder: ModelHolder, name: str, model_version: str | None) -> None:
        if name != MODEL_NAME:
            raise InferError(f"model '{name}' is not served here (try {MODEL_NAME})", 404)
        current = holder.current
        if model_version is not None and (current is None or current.version != model_version):
            raise InferError(f"version '{model_version}' of {MODEL_NAME} is not loaded", 404)

    @router.get("/models/{model_name}", summary="Model metadata", dependencies=auth)
    def model_metadata(request: Request, model_name: str) -> JSONResponse:
        holder: ModelHolder = request.app.state.holder
        try:
            _check_model(holder, model_name, None)
        except InferError as exc:
            return _error(exc.message, exc.status)
        current = holder.current
        return JSONResponse(
            {
                "name": MODEL_NAME,
                "versions": [current.version] if current else [],
                "platform": "sklearn",
                "inputs": [
                    {"name": name, "datatype": datatype(name), "shape": [-1]} for name in FEATURES
                ],
                "outputs": [
                    {"name": name, "datatype": kind, "shape": [-1]}
                    for name, kind in OUTPUTS.items()
                ],
            }
        )

    @router.get("/models/{model_name}/ready", summary="Model readiness", dependencies=auth)
    def model_ready(request: Request, model_name: str) -> JSONResponse:
        if model_name != MODEL_NAME:
            return _error(f"model '{model_name}' is not served here", 404)
        is_ready = request.app.state.holder.current is not None
        return JSONResponse(
            {"name": MODEL_NAME, "ready": is_ready}, status_code=200 if is_ready else 503
        )

    async def _infer(
        request: Request, body: InferRequest, model_name: str, model_version: str | None
    ) -> JSONResponse:
        holder: ModelHolder = request.app.state.holder
        try:
            _check_model(holder, model_name, model_version)
            wanted = [o.name for o in body.outputs] if body.outputs else list(OUTPUTS)
            unknown = [name for name in wanted if name not in OUTPUTS]
            if unknown:
                raise InferError(f"unknown output(s): {', '.join(unknown)}")
            records = tensors_to_records(body.inputs)
            scored = await score_request(request, records, keep_features=keep_features)
        except InferError as exc:
            return _error(exc.message, exc.status)
        except HTTPException as exc:
            return _error(str(exc.detail), exc.status_code)
        data = {
            "stroke_probability": [float(p) for p in scored.probabilities],
            "risk_tier": [str(t) for t in scored.tiers],
        }
        outputs = [
            {"name": name, "datatype": OUTPUTS[name], "shape": [len(records)], "data": data[name]}
            for name in wanted
        ]
        answer: dict[str, Any] = {
            "model_name": scored.model.name,
            "model_version": scored.model.version,
            "outputs": outputs,
        }
        if body.id is not None:
            answer["id"] = body.id
        return JSONResponse(answer)

    example = Body(openapi_examples={"one patient": {"value": EXAMPLE_INFER}})

    @router.post("/models/{model_name}/infer", summary="Inference", dependencies=auth)
    async def infer(
        request: Request, model_name: str, body: InferRequest = example
    ) -> JSONResponse:
        return await _infer(request, body, model_name, None)

    @router.post(
        "/models/{model_name}/versions/{model_version}/infer",
        summary="Inference",
        dependencies=auth,
    )
    async def infer_version(
        request: Request, model_name: str, model_version: str, body: InferRequest = example
    ) -> JSONResponse:
        return await _infer(request, body, model_name, model_version)

    return router
