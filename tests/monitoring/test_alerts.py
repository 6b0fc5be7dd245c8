"""Alerts against a real local HTTP server: payload, retries, timeout, never raising."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from _webhook import Webhook

from stroke_dagster.monitoring.alerts import (
    drift_alert_text,
    overdue_text,
    post_alert,
    run_failure_text,
)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as hook:
        yield hook


def test_payload_is_slack_text_with_features_and_run_id(webhook: Webhook) -> None:
    text = drift_alert_text(
        "2026-03-01",
        ["age", "bmi_missing_rate"],
        "run-42",
        model_version="3",
        share_drifted=0.2,
        dagster_url="http://dagster.local:3000/",
    )
    result = post_alert(text, url=webhook.url)
    assert result.sent and result.attempts == 1 and result.status == 200
    (request,) = webhook.requests
    assert request["content_type"] == "application/json"
    payload = json.loads(request["body"])
    assert set(payload) == {"text"}
    assert "2026-03-01" in payload["text"] and "age, bmi_missing_rate" in payload["text"]
    assert "http://dagster.local:3000/runs/run-42" in payload["text"]
    assert "StrokeRF v3" in payload["text"] and "20%" in payload["text"]


def test_retries_on_server_errors() -> None:
    with Webhook(statuses=[500, 503]) as hook:
        result = post_alert("drift", url=hook.url, retries=3, backoff=0.01)
    assert result.sent and result.attempts == 3 and len(hook.requests) == 3


def test_gives_up_after_retries_without_raising() -> None:
    with Webhook(statuses=[500] * 10) as hook:
        result = post_alert("drift", url=hook.url, retries=2, backoff=0.01)
    assert not result.sent and result.attempts == 3 and result.status == 500
    assert len(hook.requests) == 3 and "500" in (result.error or "")


def test_client_error_is_not_retried() -> None:
    with Webhook(statuses=[404]) as hook:
        result = post_alert("drift", url=hook.url, retries=3, backoff=0.01)
    assert not result.sent and result.attempts == 1 and result.status == 404


def test_timeout_bounds_a_hanging_webhook() -> None:
    with Webhook(delay=2.0) as hook:
        result = post_alert("drift", url=hook.url, retries=1, timeout=0.2, backoff=0.01)
    # Both attempts gave up on their own timeout instead of waiting for the 2 s answers.
    assert not result.sent and result.attempts == 2
    assert "timed out" in (result.error or "").lower()


def test_unreachable_or_invalid_webhook_never_raises() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = post_alert("drift", url=f"http://127.0.0.1:{port}/", retries=1, backoff=0.01)
    assert not result.sent and result.attempts == 2 and result.error
    invalid = post_alert("drift", url="not a url", retries=3, backoff=0.01)
    assert not invalid.sent and invalid.attempts == 1 and "invalid webhook URL" in invalid.error


def test_without_webhook_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    # The webhook comes from the caller's settings; the environment is never read here.
    monkeypatch.setenv("STROKE_ALERT_WEBHOOK", "http://127.0.0.1:9/never-read")
    result = post_alert("drift")
    assert not result.sent and result.attempts == 0


def test_overdue_and_run_failure_texts() -> None:
    assert "2026-03-02 is overdue" in overdue_text("2026-03-02", 6)
    assert "by 06:00 UTC" in overdue_text("2026-03-02", 6)
    text = run_failure_text("training_job", "r-1", "Boom\ntraceback", dagster_url="http://ui:3000")
    assert text.splitlines() == [
        ":x: Dagster run of training_job failed: Boom",
        "Dagster run: http://ui:3000/runs/r-1",
    ]
    assert "no error message" in run_failure_text("job", "r-2", None)
