"""Validation errors that name the field but never repeat the submitted value (patient data).

FastAPI's default 422 body echoes each rejected ``input``; :func:`validation_error_handler`
keeps only where the problem is (``field``, ``row`` for a list body) and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def describe_errors(
    errors: Sequence[Any], *, prefix: tuple[str, ...] = ("body",)
) -> list[dict[str, Any]]:
    """``[{field, row, msg, type}]`` from pydantic errors; ``input`` and ``ctx`` are dropped."""
    described = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if loc[: len(prefix)] == prefix:
            loc = loc[len(prefix) :]
        names = [str(part) for part in loc if isinstance(part, str)]
        rows = [part for part in loc if isinstance(part, int)]
        kind = str(error.get("type", "value_error"))
        message = "invalid JSON" if kind == "json_invalid" else str(error.get("msg", "invalid"))
        described.append(
            {
                "field": names[-1] if names else "body",
                "row": rows[0] if rows and kind != "json_invalid" else None,
                "msg": message,
                "type": kind,
            }
        )
    return described


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one line naming the first bad field and the full list, values left out."""
    errors = describe_errors(exc.errors())
    first = errors[0] if errors else {"field": "body", "row": None, "msg": "invalid request"}
    where = f" (row {first['row']})" if first.get("row") is not None else ""
    more = f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
    return JSONResponse(
        {"error": f"{first['field']}{where}: {first['msg']}{more}", "detail": errors},
        status_code=422,
    )
