"""API key, probes left open, and no telemetry lost on shutdown (a real uvicorn process).

The servers flush telemetry only every hour here, so every row the view shows at the end of the
shutdown test was written by the shutdown flush. That test stops a server of its own, so the
tests pass in any order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _api_server import ApiServer, copy_home

from stroke_dagster.api.models import EXAMPLE_PATIENT
from stroke_dagster.core.settings import MODEL_NAME, load_settings

pytestmark = pytest.mark.slow
KEY = "s3cret-key-for-tests"
OPEN_PATHS = (
    "/health",
    "/ready",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/docs",
    "/openapi.json",
)


def start(home: Path) -> ApiServer:
    return ApiServer(
        home, wait_ready=True, STROKE_API_KEY=KEY, STROKE_TELEMETRY_FLUSH_SECONDS="3600"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, _champion_home: Path) -> Iterator[ApiServer]:
    srv = start(copy_home(_champion_home, tmp_path_factory.mktemp("api_auth") / "home"))
    yield srv
    srv.stop()


def client(
    server: ApiServer, key: str | None = None, sent: list[str] | None = None
) -> httpx.Client:
    """A client with the key (or none); logged (non-probe) request paths go to ``sent``."""

    def count(request: httpx.Request) -> None:
        if sent is not None and request.url.path not in OPEN_PATHS:
            sent.append(request.url.path)

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return server.client(headers=headers, event_hooks={"request": [count]})


def test_probes_and_docs_stay_open(server: ApiServer) -> None:
    with client(server) as http:
        for path in OPEN_PATHS:
            assert http.get(path).status_code == 200, path


def test_scoring_needs_the_bearer_key(server: ApiServer) -> None:
    with client(server) as anonymous, client(server, "wrong") as wrong, client(server, KEY) as ok:
        for http in (anonymous, wrong):
            answer = http.post("/predict", json=EXAMPLE_PATIENT)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert http.post("/admin/reload").status_code == 401
            assert http.get(f"/v2/models/{MODEL_NAME}").status_code == 401
        basic = anonymous.post(
            "/predict", json=EXAMPLE_PATIENT, headers={"Authorization": f"Basic {KEY}"}
        )
        assert basic.status_code == 401
        answer = ok.post("/predict", json=EXAMPLE_PATIENT)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "1"
        assert ok.post("/admin/reload").json()["changed"] is False
        assert ok.get(f"/v2/models/{MODEL_NAME}").status_code == 200


def test_key_is_checked_before_the_body_is_read(server: ApiServer) -> None:
    """Without the key, invalid or oversized bodies learn nothing: 401, not 422 or 413."""
    with client(server) as anonymous:
        invalid = anonymous.post("/predict", json={**EXAMPLE_PATIENT, "age": 500})
        huge = anonymous.post(
            "/predict/batch",
            content=json.dumps([EXAMPLE_PATIENT] * 6000).encode(),
            headers={"content-type": "application/json"},
        )
    assert invalid.status_code == 401
    assert huge.status_code == 401


def test_shutdown_flushes_every_buffered_row(
    tmp_path: Path,
    _champion_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    home = copy_home(_champion_home, tmp_path / "home")
    server = start(home)
    request.addfinalizer(server.stop)  # when an assertion stops the test early
    sent: list[str] = []
    with client(server, KEY, sent) as ok, client(server, None, sent) as anonymous:
        for _ in range(25):
            assert ok.post("/predict/batch", json=[EXAMPLE_PATIENT] * 3).status_code == 200
        assert ok.post("/predict", json={**EXAMPLE_PATIENT, "age": 500}).status_code == 422
        assert anonymous.post("/predict", json=EXAMPLE_PATIENT).status_code == 401
        assert ok.get("/health").status_code == 200  # probes are not logged
    assert not list((home / "telemetry").glob("**/*.parquet"))  # nothing flushed yet
    # uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean stop
    assert server.stop() in (0, -15)
    assert "Application shutdown complete" in server.log.read_text()
    monkeypatch.setenv("STROKE_HOME", str(home))
    from stroke_dagster.warehouse import store as warehouse

    logged = warehouse.query_df(
        "SELECT path, count(*) AS n, sum(n_patients) AS patients FROM inference_log GROUP BY path",
        settings=load_settings(),
    ).set_index("path")
    expected = {path: sent.count(path) for path in set(sent)}
    assert logged["n"].to_dict() == expected
    assert int(logged.loc["/predict/batch", "patients"]) == 75
