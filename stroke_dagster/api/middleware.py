"""Pure ASGI middleware: request telemetry, API key, body size limit and read timeout.

Order in the app (outermost first): telemetry (sees every answer, 401, 408 and 413 included), API
key (checked before any byte of the body is read), body limit and timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import os
import time
import uuid
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stroke_dagster.api.errors import error_response
from stroke_dagster.api.telemetry import TelemetryWriter

TELEMETRY_STATE_KEY = "stroke_telemetry"
# Seconds a client has to send the whole body, from the start of the request (slow clients
# holding a connection open a byte at a time get 408).
DEFAULT_BODY_TIMEOUT = 10.0
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _BodyRefused(HTTPException):
    """Raised from ``receive``: the app's HTTP error handler answers it (connection closed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, detail=message, headers={"Connection": "close"})


class BodyLimitMiddleware:
    """413 for bodies over ``max_body`` bytes, 408 for bodies not received within ``timeout`` s.

    Only methods that carry a body are watched. A declared ``Content-Length`` over the limit is
    refused before the app runs; otherwise the bytes are counted as the app receives them and the
    read fails as soon as the count passes the limit, or when the deadline passes first. Either
    answer closes the connection.
    """

    def __init__(self, app: ASGIApp, max_body: int, timeout: float = DEFAULT_BODY_TIMEOUT) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout = timeout
        self.too_large = f"request body larger than {max_body} bytes"
        self.too_slow = f"request body not received within {timeout:g} s"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _refuse(413, self.too_large, scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received = 0
        complete = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyRefused(408, self.too_slow) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyRefused(413, self.too_large)
                complete = not message.get("more_body", False)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _BodyRefused as refused:
            if started:
                raise
            await _refuse(refused.status_code, str(refused.detail), scope, receive, send)


async def _refuse(status: int, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(message, status, headers={"Connection": "close"})
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every path except ``open_paths`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, api_key: str | None, is_open: Callable[[str], bool]) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        response = error_response(
            "missing or invalid API key (send Authorization: Bearer <key>)",
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


class TelemetryMiddleware:
    """One telemetry row per request (except ``skip`` paths), written after the response."""

    def __init__(self, app: ASGIApp, writer: TelemetryWriter, skip: Callable[[str], bool]) -> None:
        self.app = app
        self.writer = writer
        self.skip = skip
        self.pid = os.getpid()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.writer.enabled or self.skip(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            state = scope.get("state") or {}
            scoring = state.get(TELEMETRY_STATE_KEY) or {}
            row = {
                "ts": now,
                "request_id": scoring.pop("request_id", None) or uuid.uuid4().hex,
                "method": scope["method"],
                "path": scope["path"],
                "status_code": status,
                "latency_ms": (time.perf_counter() - started) * 1000.0,
                "n_patients": 0,
                "worker_pid": self.pid,
            }
            features = scoring.pop("features", None)
            row.update(scoring)
            self.writer.record(row, features if status < 400 else None)
