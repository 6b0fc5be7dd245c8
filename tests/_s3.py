"""An S3 API server for tests: moto in server mode on a free local port, with fresh buckets.

Use it from a test module (or another test helper)::

    from _s3 import MotoS3, s3_storage_env   # tests/ is on sys.path under pytest

    with MotoS3() as s3:                      # in-process server thread (mode="process": a
        bucket = s3.create_bucket()           # `moto_server` child process, for tests whose
        env = s3_storage_env(s3, bucket)      # own process is busy or forks workers)
        # env: STROKE_STORAGE_URL=s3://<bucket>/stroke, STROKE_S3_ENDPOINT_URL, AWS_* credentials

or through the fixtures below (bind them in a test module: ``import _s3; moto_s3 =
_s3.moto_s3; s3_bucket = _s3.s3_bucket``). ``moto_s3`` is one server per test session; ``s3_bucket``
gives each test its own new bucket and sets the environment (storage URL, endpoint, dummy
credentials) with ``monkeypatch``, so that ``load_settings()`` points the platform at it.

The credentials are dummies that moto accepts; botocore reads them from the environment like real
ones. Nothing here talks to AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no probe of an instance-metadata endpoint
}
DEFAULT_PREFIX = "stroke"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoS3:
    """A moto S3 server on ``127.0.0.1:<free port>``; ``endpoint_url`` is its address.

    ``mode="thread"`` (default) runs ``moto.server.ThreadedMotoServer`` in this process (starts in
    well under a second); ``mode="process"`` runs the ``moto_server`` program as a child process,
    which keeps serving while this process is busy and is reachable by any process.
    """

    def __init__(self, mode: str = "thread") -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.mode = mode
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MotoS3:
        if self.mode == "thread":
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request

            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()
        else:
            program = Path(sys.executable).with_name("moto_server")
            command = [str(program)] if program.exists() else [sys.executable, "-m", "moto.server"]
            self._proc = subprocess.Popen(
                [*command, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self._wait(timeout)
        return self

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                    return
            except OSError:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {self._proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_TEST_ENV["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (default: a fresh unique name) and return its name."""
        name = name or f"stroke-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key of ``bucket`` under ``prefix``, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)


def s3_storage_env(s3: MotoS3, bucket: str, prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """The environment that points the platform's storage at ``s3://bucket/prefix`` on ``s3``."""
    return {
        **AWS_TEST_ENV,
        "STROKE_STORAGE_URL": f"s3://{bucket}/{prefix}",
        "STROKE_S3_ENDPOINT_URL": s3.endpoint_url,
    }


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server for the test session: a child process, because delta-rs (the
    warehouse's Delta tables) calls S3 without releasing the GIL, which an in-process server
    thread would need to answer."""
    previous = {name: os.environ.get(name) for name in AWS_TEST_ENV}
    os.environ.update(AWS_TEST_ENV)  # boto3's client() above and s3fs need credentials
    try:
        with MotoS3(mode="process") as server:
            yield server
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_bucket(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket; the environment points the platform's storage at ``s3://<bucket>/stroke``."""
    bucket = moto_s3.create_bucket()
    for name, value in s3_storage_env(moto_s3, bucket).items():
        monkeypatch.setenv(name, value)
    return bucket
