"""Open Inference Protocol (KServe v2, REST): health, server and model metadata, ``infer``.

Inputs are named tensors, one per feature column, with the datatype the model metadata
advertises: ``FP64`` for the measurements (``bmi`` may hold ``null``), ``INT64`` for the 0/1
flags, ``BYTES`` for the categories; an optional ``id`` ``BYTES`` tensor carries patient
identifiers. Each tensor has shape ``[n]`` or ``[n, 1]`` and ``n`` values in ``data`` (flat, or
one-element rows ``[[v], ...]``); every column has the same ``n``. Outputs: ``stroke_probability``
(``FP64``) and ``risk_tier`` (``BYTES``), shape ``[n]``. The values go through the same checks as
``/predict`` (the tensor schemas are built from the same field types). Errors are
``{"error": "..."}``: 400 body not JSON, 404 unknown model or version, 422 invalid request,
503 no model loaded yet (and 401/408/413/415 as on every scoring route).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal, TypeVar, Union

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.exceptions import HTTPException
from starlette.responses import Response

from stroke_dagster.api.errors import error_response, json_response
from stroke_dagster.api.holder import ModelHolder
from stroke_dagster.api.models import (
    EXAMPLE_PATIENT,
    ID_MAX_LENGTH,
    MAX_ROWS,
    NULLABLE_FEATURES,
    Error,
    feature_type,
    integer,
)
from stroke_dagster.api.predict import _is_json, score_request
from stroke_dagster.core.schema import BINARY_FEATURES, FEATURES, ID, NUMERIC_FEATURES
from stroke_dagster.core.settings import MODEL_NAME

OUTPUTS: dict[str, str] = {"stroke_probability": "FP64", "risk_tier": "BYTES"}
TENSOR_NAMES: tuple[str, ...] = (*FEATURES, ID)
V2_ERRORS: dict[int, str] = {
    400: "The body is not JSON.",
    401: "Missing or wrong `Authorization: Bearer <key>` (the service has an API key).",
    404: "No such model, or that version is not the one loaded.",
    408: "The body did not arrive within the read timeout.",
    413: "The body is larger than the limit (STROKE_API_MAX_BODY).",
    415: "The body is not sent as application/json.",
    422: "Not a valid inference request for this model (the values are never echoed).",
    503: "No model loaded yet.",
}


def datatype(name: str) -> str:
    """The v2 datatype of a feature column (the only one its input tensor accepts)."""
    if name in NUMERIC_FEATURES:
        return "FP64"
    if name in BINARY_FEATURES:
        return "INT64"
    return "BYTES"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Dimension = integer(ge=1)


def _tensor_model(name: str) -> type[BaseModel]:
    value = (
        Annotated[str, Field(max_length=ID_MAX_LENGTH, strict=True)]
        if name == ID
        else feature_type(name)
    )
    row = Annotated[list[value], Field(min_length=1, max_length=1)]  # type: ignore[valid-type]
    kind = "BYTES" if name == ID else datatype(name)
    return create_model(
        f"InferInput_{name}",
        __base__=_Strict,
        __doc__=f"The '{name}' column: shape [n] or [n, 1], n values in data.",
        name=(Literal[name], ...),  # type: ignore[valid-type]
        datatype=(Literal[kind], ...),  # type: ignore[valid-type]
        shape=(Annotated[list[_Dimension], Field(min_length=1, max_length=2)], ...),
        parameters=(dict[str, Any] | None, None),
        data=(Annotated[list[value | row], Field(min_length=1, max_length=MAX_ROWS)], ...),  # type: ignore[valid-type]
    )


InferInput = Annotated[
    Union[tuple(_tensor_model(name) for name in TENSOR_NAMES)],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="name"),
]


class RequestedOutput(_Strict):
    name: Literal[tuple(OUTPUTS)]  # type: ignore[valid-type]
    parameters: dict[str, Any] | None = None


class InferRequest(_Strict):
    """An inference request: every feature column once (``id`` optional), equal lengths."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(  # type: ignore[valid-type]
        min_length=len(FEATURES), max_length=len(TENSOR_NAMES)
    )
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: Literal[tuple(OUTPUTS)]  # type: ignore[valid-type]
    datatype: Literal["FP64", "BYTES"]
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[float] | list[str]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


EXAMPLE_INFER: dict[str, Any] = {
    "id": "req-1",
    "inputs": [
        {"name": name, "shape": [1], "datatype": datatype(name), "data": [EXAMPLE_PATIENT[name]]}
        for name in FEATURES
    ],
}


class InferError(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _where(loc: tuple[Any, ...]) -> str:
    """A readable place in the request from a pydantic ``loc`` (union member labels left out)."""
    if len(loc) >= 2 and loc[0] == "inputs" and isinstance(loc[1], int):
        rest = loc[2:]
        if rest and rest[0] in TENSOR_NAMES:
            where, rest = f"input '{rest[0]}'", rest[1:]
        else:
            where = f"inputs[{loc[1]}]"
        if len(rest) >= 2 and rest[0] == "data" and isinstance(rest[1], int):
            return f"{where} row {rest[1]}"
        if rest and isinstance(rest[0], str):
            return f"{where} {rest[0]}"
        return where
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in loc[:3]]
    return "".join(parts)[:80] or "body"


def validation_message(exc: ValidationError) -> str:
    """One line for a v2 error: the first problem, and how many places have one."""
    places: dict[str, str] = {}
    for error in exc.errors(include_input=False, include_context=False, include_url=False):
        where = _where(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "union_tag_invalid":
            message = f"unknown input name; expected one of {', '.join(TENSOR_NAMES)}"
        places.setdefault(where, message)
    (where, message), *others = places.items()
    more = f" (and {len(others)} more)" if others else ""
    return f"{where}: {message}{more}"


def tensors_to_records(inputs: list[Any]) -> list[dict[str, Any]]:
    """Validated column tensors -> patient dicts (raises :class:`InferError`)."""
    by_name: dict[str, Any] = {}
    for tensor in inputs:
        if tensor.name in by_name:
            raise InferError(f"input '{tensor.name}' given twice")
        by_name[tensor.name] = tensor
    missing = [name for name in FEATURES if name not in by_name]
    if missing:
        raise InferError(f"missing input tensor(s): {', '.join(missing)}")
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for name in (*FEATURES, ID):
        tensor = by_name.get(name)
        if tensor is None:
            continue
        shape = tensor.shape
        if len(shape) == 2 and shape[1] != 1:
            raise InferError(f"input '{name}' must have shape [n] or [n, 1]")
        values = [v[0] if isinstance(v, list) else v for v in tensor.data]
        if len(values) != math.prod(shape):
            raise InferError(f"input '{name}': data length does not match shape")
        if rows is not None and len(values) != rows:
            raise InferError(f"input '{name}': every input must have the same number of rows")
        rows = len(values)
        columns[name] = values
    for name in NULLABLE_FEATURES:
        columns[name] = [None if isinstance(v, str) else v for v in columns[name]]
    ids = columns.pop(ID, None)
    names = list(columns)
    records = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    for i, record in enumerate(records):
        record[ID] = ids[i] if ids is not None else None
    return records


def _package_version() -> str:
    try:
        return version("stroke-dagster")
    except PackageNotFoundError:
        return "0"


def _errors(*codes: int) -> dict[int | str, Any]:
    return {code: {"model": Error, "description": V2_ERRORS[code]} for code in codes}


ModelName = Annotated[str, Path(openapi_examples={"served model": {"value": MODEL_NAME}})]
ModelVersion = Annotated[str, Path(openapi_examples={"first version": {"value": "1"}})]


async def _version_segment(model_version: ModelVersion) -> None:
    """Declares (validates, documents) ``{model_version}`` on the versioned twin of a route."""


async def _path_version(request: Request) -> str | None:
    """The version a route's path names, ``None`` on the unversioned route (async: no thread)."""
    return request.path_params.get("model_version")


# The one handler of a route serves both paths; only the versioned path declares the segment.
OptionalVersion = Annotated[str | None, Depends(_path_version)]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# Where the stateful phase of a contract test (and a reader) goes from a model's metadata.
_VERSION_LINKS = {
    f"{kind}": {
        "operationId": f"v2_model_version_{kind}",
        "parameters": {
            "model_name": "$response.body#/name",
            "model_version": "$response.body#/versions/0",
        },
    }
    for kind in ("metadata", "ready", "infer")
}


def build_router(keep_features: bool, auth: list[Any], locked: tuple[int, ...] = ()) -> APIRouter:
    """The ``/v2`` routes; ``auth`` (dependencies) and ``locked`` (401) when a key is set."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe v2)"])

    @router.get("", summary="Server metadata", response_model=ServerMetadata)
    def server_metadata() -> Response:
        return json_response(
            {"name": "stroke-dagster", "version": _package_version(), "extensions": []}
        )

    @router.get("/health/live", summary="Server liveness", response_model=Live)
    def live() -> Response:
        return json_response({"live": True})

    @router.get(
        "/health/ready",
        summary="Server readiness (503 until a model is loaded)",
        response_model=Ready,
        responses={503: {"model": Ready, "description": V2_ERRORS[503]}},
    )
    def ready(request: Request) -> Response:
        is_ready = request.app.state.holder.current is not None
        return json_response({"ready": is_ready}, status_code=200 if is_ready else 503)

    def _check_model(holder: ModelHolder, name: str, model_version: str | None) -> None:
        if name != MODEL_NAME:
            raise InferError(f"model '{name[:64]}' is not served here (try {MODEL_NAME})", 404)
        current = holder.current
        if model_version is not None and (current is None or current.version != model_version):
            raise InferError(f"version '{model_version[:64]}' of {MODEL_NAME} is not loaded", 404)

    meta_errors = _errors(*locked, 404)
    infer_errors = _errors(*sorted((400, *locked, 404, 408, 413, 415, 422, 503)))
    infer_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/InferRequest"},
                    "examples": {"one patient": {"value": EXAMPLE_INFER}},
                }
            },
        }
    }
    ready_errors = {
        **_errors(*locked, 404),
        503: {"model": ModelReady, "description": V2_ERRORS[503]},
    }

    def model_route(
        method: str,
        kind: str,
        *,
        summary: str,
        version_summary: str,
        responses: dict[int | str, Any],
        links: dict[str, Any] | None = None,
        **spec: Any,
    ) -> Callable[[Endpoint], Endpoint]:
        """Registers one handler at ``/models/{model_name}<tail>`` and at the same route under
        ``/versions/{model_version}``, each with its own summary and operation id."""
        tail = "" if kind == "metadata" else f"/{kind}"
        plain = {**responses, 200: {"links": links}} if links else responses

        def register(endpoint: Endpoint) -> Endpoint:
            router.add_api_route(
                f"/models/{{model_name}}{tail}",
                endpoint,
                methods=[method],
                summary=summary,
                operation_id=f"v2_model_{kind}",
                responses=plain,
                dependencies=auth,
                **spec,
            )
            router.add_api_route(
                f"/models/{{model_name}}/versions/{{model_version}}{tail}",
                endpoint,
                methods=[method],
                summary=version_summary,
                operation_id=f"v2_model_version_{kind}",
                responses=responses,
                dependencies=[*auth, Depends(_version_segment)],
                **spec,
            )
            return endpoint

        return register

    def _check_model(holder: ModelHolder, name: str, model_version: str | None) -> None:
        if name != MODEL_NAME:
            raise InferError(f"model '{name[:64]}' is not served here (try {MODEL_NAME})", 404)
        current = holder.current
        if model_version is not None and (current is None or current.version != model_version):
            raise InferError(f"version '{model_version[:64]}' of {MODEL_NAME} is not loaded", 404)

    @model_route(
        "GET",
        "metadata",
        summary="Model metadata",
        version_summary="Model version metadata (404 unless it is the version loaded)",
        response_model=ModelMetadata,
        responses=meta_errors,
        links=_VERSION_LINKS,
    )
    def model_metadata(
        request: Request, model_name: ModelName, model_version: OptionalVersion
    ) -> Response:
        holder: ModelHolder = request.app.state.holder
        try:
            _check_model(holder, model_name, model_version)
        except InferError as exc:
            return error_response(exc.message, exc.status)
        current = holder.current
        return json_response(
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

    @model_route(
        "GET",
        "ready",
        summary="Model readiness",
        version_summary="Model version readiness",
        response_model=ModelReady,
        responses=ready_errors,
    )
    def model_ready(
        request: Request, model_name: ModelName, model_version: OptionalVersion
    ) -> Response:
        holder: ModelHolder = request.app.state.holder
        try:
            _check_model(holder, model_name, model_version)
        except InferError as exc:
            return error_response(exc.message, exc.status)
        is_ready = holder.current is not None
        return json_response(
            {"name": MODEL_NAME, "ready": is_ready}, status_code=200 if is_ready else 503
        )

    @model_route(
        "POST",
        "infer",
        summary="Inference",
        version_summary="Inference with a given version (404 unless it is the version loaded)",
        response_model=InferResponse,
        responses=infer_errors,
        openapi_extra=infer_body,
    )
    async def infer(
        request: Request, model_name: ModelName, model_version: OptionalVersion
    ) -> Response:
        holder: ModelHolder = request.app.state.holder
        try:
            _check_model(holder, model_name, model_version)
            if not _is_json(request.headers.get("content-type")):
                raise InferError("send the body as application/json", 415)
            try:
                body = InferRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors(include_input=False)):
                    raise InferError("request body is not valid JSON", 400) from None
                raise InferError(validation_message(exc)) from None
            records = tensors_to_records(body.inputs)
            scored = await score_request(request, records, keep_features=keep_features)
        except InferError as exc:
            return error_response(exc.message, exc.status)
        except HTTPException as exc:
            if exc.status_code in (408, 413):  # the body limits: answered by the app's handler
                raise
            return error_response(str(exc.detail), exc.status_code)
        wanted = [o.name for o in body.outputs] if body.outputs else list(OUTPUTS)
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
        return json_response(answer)

    return router
