"""Error answers that name the field but never repeat the submitted value (patient data).

Every error body is ``{"error": "<one line>"}``. A 422 adds ``detail``: one entry per problem with
the ``field``, the ``row`` of a list body, pydantic's message and its error type; the rejected
``input`` and ``ctx`` are dropped. A body that is not JSON at all gets 400.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

# A field name is the client's text too: long unknown keys are cut.
MAX_FIELD_CHARS = 64


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Compact JSON (floats written with ``repr``, so probabilities round-trip exactly)."""
    body = json.dumps(content, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def error_response(
    message: str, status_code: int, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error": message}, status_code, headers)


def describe_errors(errors: Sequence[Any], tags: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``[{field, row, msg, type}]`` from pydantic errors, one per (row, field).

    ``loc`` is ``(field, ...)`` for one patient and ``(row, field, ...)`` for a list of them; what
    follows the field (union members, nested positions) only repeats what ``msg`` says. ``tags``:
    the tags of a discriminated union, which pydantic puts before the field.
    """
    described: list[dict[str, Any]] = []
    seen: set[tuple[Any, str]] = set()
    for error in errors:
        loc = tuple(error.get("loc", ()))
        row = loc[0] if loc and isinstance(loc[0], int) else None
        names = [part for part in loc if isinstance(part, str) and part not in tags]
        field = names[0][:MAX_FIELD_CHARS] if names else "body"
        if (row, field) in seen:
            continue
        seen.add((row, field))
        described.append(
            {
                "field": field,
                "row": row,
                "msg": str(error.get("msg", "invalid")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return described


def summary(problems: Sequence[dict[str, Any]], *, label: str = "") -> str:
    """One line: the first problem, and how many more there are."""
    if not problems:
        return "invalid request"
    first = problems[0]
    where = f" (row {first['row']})" if first.get("row") is not None else ""
    more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return f"{label}{first['field']}{where}: {first['msg']}{more}"


class BadBody(Exception):
    """A request body that cannot be used: 400 (not JSON) or 422 (JSON, but invalid)."""

    def __init__(self, status_code: int, message: str, problems: list[dict[str, Any]] | None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.problems = problems


def bad_body(exc: ValidationError, tags: Sequence[str] = ()) -> BadBody:
    """400 when the body is not JSON (pydantic's ``json_invalid``), else 422 with the problems."""
    errors = exc.errors(include_input=False, include_context=False, include_url=False)
    if any(e.get("type") == "json_invalid" for e in errors):
        # pydantic's parser message says where ("... at line 1 column 7"), never what
        message = str(errors[0].get("msg", "invalid JSON"))
        return BadBody(400, f"request body is not valid JSON: {message}", None)
    problems = describe_errors(errors, tags)
    return BadBody(422, summary(problems), problems)


async def bad_body_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadBody)
    if exc.problems is None:
        return error_response(exc.message, exc.status_code)
    return json_response({"error": exc.message, "detail": exc.problems}, exc.status_code)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette/FastAPI HTTP errors (404, 405, 503...) in the service's ``{"error"}`` shape."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return error_response(str(exc.detail), exc.status_code, headers)
