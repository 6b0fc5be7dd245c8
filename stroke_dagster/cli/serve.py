"""``stroke serve``: run the online scoring API with uvicorn."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; each loads the model)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument(
        "--access-log", action="store_true", help="also log every request (telemetry already does)"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from stroke_dagster.core.errors import InputError

    if args.workers < 1:
        raise InputError("--workers must be >= 1")
    from stroke_dagster.core.settings import load_settings

    load_settings()  # a malformed setting fails here, once, with its one line
    uvicorn.run(
        "stroke_dagster.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=30,
    )
    return 0
