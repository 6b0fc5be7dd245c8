"""The service keeps the promises of its OpenAPI document, and bad input stays cheap and safe.

schemathesis (``--checks all``, every phase including the stateful one, a fixed seed) runs
against a real ``uvicorn`` serving a trained champion, then against a server with an API key,
with and without the key. Hand-made bad bodies (not UTF-8, nested 100,000 deep, huge numbers,
NaN/Infinity, 10,000 patients, a body sent a byte at a time) each get an error the document
lists for the route, in ``{"error": ...}`` form, within a client timeout; the service stays
healthy, and neither an answer nor the server's log repeats a submitted patient value.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _api_server import ApiServer, copy_home

from stroke_dagster.api.kserve import EXAMPLE_INFER
from stroke_dagster.api.middleware import DEFAULT_BODY_TIMEOUT
from stroke_dagster.api.models import EXAMPLE_PATIENT
from stroke_dagster.core.settings import MODEL_NAME

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[1]  # tests/: the hooks, the schemathesis config
SEED = 20261201
EXAMPLES = 30  # per operation and phase (examples, coverage, fuzzing; stateful on top)
KEYED_EXAMPLES = 10
KEY = "contract-test-key"
INFER = f"/v2/models/{MODEL_NAME}/infer"
# Values no answer or log line may repeat (patient data stand-ins).
SECRET_ID = "pid-7c1d-sentinel"
SECRET_TEXT = "Secret-Value-7c1d"
SECRET_AGE = "131.987654"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, _champion_home: Path) -> Path:
    return copy_home(_champion_home, tmp_path_factory.mktemp("contract") / "home")


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[ApiServer]:
    srv = ApiServer(home, wait_ready=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyed_server(home: Path) -> Iterator[ApiServer]:
    srv = ApiServer(home, wait_ready=True, STROKE_API_KEY=KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def document(server: ApiServer) -> dict[str, Any]:
    with server.client() as http:
        return http.get("/openapi.json").json()


def schemathesis(url: str, workdir: Path, examples: int, *extra: str) -> tuple[int, str]:
    """``st run`` with every check and phase; returns its exit code and output."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(TESTS / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(SEED),
        "--max-examples",
        str(examples),
        "--workers",
        "1",  # hypothesis' lambda reflection is not thread-safe on Python 3.11
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        *extra,
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "_schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
    }
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    return done.returncode, done.stdout + done.stderr


def _summary(output: str) -> str:
    return output[output.rfind("SUMMARY") - 40 :] if "SUMMARY" in output else output[-4000:]


def test_schemathesis_finds_no_failure(server: ApiServer, tmp_path: Path) -> None:
    code, output = schemathesis(server.url, tmp_path, EXAMPLES)
    assert code == 0, output[-12000:]
    assert "Stateful" in output and "passed" in output, _summary(output)


def test_schemathesis_with_api_key(keyed_server: ApiServer, tmp_path: Path) -> None:
    code, output = schemathesis(
        keyed_server.url, tmp_path, KEYED_EXAMPLES, "--header", f"Authorization: Bearer {KEY}"
    )
    assert code == 0, output[-12000:]
    # without the key every scoring call is 401, which the document lists for each of them
    code, output = schemathesis(keyed_server.url, tmp_path, KEYED_EXAMPLES)
    assert code == 0, output[-12000:]


def test_document_matches_the_routes(document: dict[str, Any], keyed_server: ApiServer) -> None:
    paths = document["paths"]
    scoring = ("/predict", "/predict/batch", INFER.replace(MODEL_NAME, "{model_name}"))
    for path in scoring:
        responses = paths[path]["post"]["responses"]
        assert {"200", "400", "413", "415", "422", "503"} <= set(responses), path
        assert "401" not in responses  # no key on this server
    assert paths["/predict"]["post"]["responses"]["422"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/ValidationProblem"}
    for path, item in paths.items():
        if path.startswith("/v2/models/"):
            for operation in item.values():
                assert "404" in operation["responses"], path
    metadata = document["components"]["schemas"]["ModelMetadata"]["properties"]
    assert {"inputs", "outputs", "platform", "versions"} <= set(metadata)
    with keyed_server.client() as http:
        keyed = http.get("/openapi.json").json()
    for path in ("/predict", "/admin/reload", "/v2/models/{model_name}"):
        operation = next(iter(keyed["paths"][path].values()))
        assert "401" in operation["responses"], path
        assert operation.get("security"), path


def test_documented_examples_are_accepted(server: ApiServer, document: dict[str, Any]) -> None:
    with server.client() as http:
        for path, item in document["paths"].items():
            for method, operation in item.items():
                content = operation.get("requestBody", {}).get("content", {})
                for example in content.get("application/json", {}).get("examples", {}).values():
                    url = path.replace("{model_name}", MODEL_NAME).replace("{model_version}", "1")
                    answer = http.request(method, url, json=example["value"])
                    assert answer.status_code == 200, (path, answer.text)


# -- bad input --------------------------------------------------------------------------------


def _patient(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE_PATIENT, "id": SECRET_ID, **changes}


def _infer(rows: int = 1, **columns: list[Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(EXAMPLE_INFER))
    for tensor in body["inputs"]:
        tensor["data"] = columns.get(tensor["name"], tensor["data"] * rows)
        tensor["shape"] = [len(tensor["data"])]
    body["inputs"].append(
        {"name": "id", "datatype": "BYTES", "shape": [rows], "data": [SECRET_ID] * rows}
    )
    return body


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


NESTED = b"[" * 100_000 + b"]" * 100_000
BAD_BODIES: dict[str, tuple[str, bytes]] = {
    "not utf-8": ("/predict", _json(_patient()).replace(b'"Female"', b'"Fem\xff\xfeale"')),
    "not utf-8 batch": ("/predict/batch", b'[{"gender": "\xc3\x28' + SECRET_TEXT.encode() + b'"}]'),
    "not utf-8 infer": (INFER, _json(_infer()).replace(b'"Urban"', b'"Ur\xffban"')),
    "nested": ("/predict", NESTED),
    "nested batch": ("/predict/batch", NESTED),
    "nested infer": (INFER, b'{"inputs": ' + NESTED + b"}"),
    "nested field": ("/predict", _json(_patient())[:-1] + b', "extra": ' + NESTED + b"}"),
    "huge float": ("/predict", _json(_patient()).replace(b"58.0", b"1e999999")),
    "huge integer": ("/predict", _json(_patient()).replace(b"58.0", b"9" * 5000)),
    "huge integer id": ("/predict", _json(_patient(id=10**40))),
    "huge infer": (INFER, _json(_infer()).replace(b"105.3", b"-1e400")),
    "nan": ("/predict", _json(_patient()).replace(b"58.0", b"NaN")),
    "infinity": ("/predict", _json(_patient()).replace(b"29.4", b"Infinity")),
    "minus infinity batch": (
        "/predict/batch",
        b"[" + _json(_patient()).replace(b"105.3", b"-Infinity") + b"]",
    ),
    "nan infer": (INFER, _json(_infer()).replace(b"58.0", b"NaN")),
    "out of range": ("/predict", _json(_patient(age=float(SECRET_AGE), gender=SECRET_TEXT))),
    "10,000 patients": ("/predict/batch", _json([_patient()] * 10_000)),
    "10,000 rows infer": (INFER, _json(_infer(10_000))),
    "empty": ("/predict", b""),
    "truncated": ("/predict", _json(_patient())[:-20]),
}


def _documented(document: dict[str, Any], path: str) -> set[int]:
    key = path.replace(MODEL_NAME, "{model_name}")
    return {int(code) for code in document["paths"][key]["post"]["responses"] if code != "200"}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_gets_a_documented_error(
    server: ApiServer, document: dict[str, Any], case: str
) -> None:
    path, body = BAD_BODIES[case]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        answer = http.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, (case, answer.status_code, answer.text[:300])
    assert answer.status_code in _documented(document, path), (case, answer.status_code)
    assert isinstance(answer.json()["error"], str)
    for secret in (SECRET_ID, SECRET_TEXT, SECRET_AGE):
        assert secret not in answer.text, (case, answer.text[:300])


def test_slow_body_gets_408_and_the_connection_is_closed(
    server: ApiServer, document: dict[str, Any]
) -> None:
    """A client dribbling its body a byte at a time is cut off at the body read timeout."""
    body = _json(_patient())
    host, port = "127.0.0.1", server.port
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection((host, port), timeout=DEFAULT_BODY_TIMEOUT + 20) as sock:
        sock.sendall(head)
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server closed the connection: the answer is waiting
                break
            time.sleep(0.25)
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if answer:
                break
        sock.settimeout(DEFAULT_BODY_TIMEOUT + 20)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status == 408, answer[:300]
    assert status in _documented(document, "/predict")
    assert b"connection: close" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def test_service_stays_healthy_and_logs_no_patient_value(server: ApiServer) -> None:
    with server.client() as http:
        for path, body in BAD_BODIES.values():
            http.post(path, content=body, headers={"content-type": "application/json"})
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 200
        answer = http.post("/predict", json=EXAMPLE_PATIENT)
        assert answer.status_code == 200, answer.text
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
    for secret in (SECRET_ID, SECRET_TEXT, SECRET_AGE):
        assert secret not in log
