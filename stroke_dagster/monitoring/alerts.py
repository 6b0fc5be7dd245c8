"""Alerts: a Slack-compatible JSON POST (``{"text": ...}``) to the configured webhook.

The texts of the platform's alerts (a drifting day, an overdue cohort, a failed run) and their
delivery. Delivery retries with backoff on network errors, timeouts and 5xx/429 answers, and never
raises into the caller: a broken webhook must not fail the check that wanted to report. The
webhook URL and the UI's base URL come from the caller (``settings.alerts``).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

WEBHOOK_ENV = "STROKE_ALERT_WEBHOOK"  # where the settings read the webhook from


@dataclass(frozen=True)
class AlertResult:
    """What happened to one alert (``sent`` False with ``error`` set when it was not delivered)."""

    sent: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def drift_alert_text(
    cohort_date: str,
    drifted_features: Sequence[str],
    run_id: str | None,
    *,
    model_version: str | None = None,
    share_drifted: float | None = None,
    dagster_url: str | None = None,
) -> str:
    """The message: day, drifted features, reference model, and the run (as a link if possible)."""
    features = ", ".join(drifted_features) or "none"
    lines = [f":warning: Stroke cohort drift on {cohort_date}: {features}"]
    details = []
    if share_drifted is not None:
        details.append(f"{share_drifted:.0%} of tests drifted")
    if model_version:
        details.append(f"reference StrokeRF v{model_version}")
    if details:
        lines.append("; ".join(details))
    if run_id:
        lines.append(_run_line(run_id, dagster_url))
    return "\n".join(lines)


def _run_line(run_id: str, dagster_url: str | None) -> str:
    base = (dagster_url or "").rstrip("/")
    return f"Dagster run: {base}/runs/{run_id}" if base else f"Dagster run id: {run_id}"


def overdue_text(day: str, due_hour: int) -> str:
    """A day's cohort file has not arrived by its due hour."""
    return (
        f":hourglass: Stroke cohort for {day} is overdue: no incoming/{day}.csv|.parquet "
        f"by {due_hour:02d}:00 UTC"
    )


def unscored_text(day: str, minutes: float) -> str:
    """A day's cohort arrived but is still unscored (the runbook says what to do)."""
    return (
        f":warning: Stroke cohort for {day} arrived {minutes:.0f} min ago and is not scored yet; "
        "the platform is requesting it again (runbook: an unscored day)"
    )


def retrain_failed_text(champion: str, window: str, attempts: int) -> str:
    """The drift retraining of a policy window failed every attempt."""
    return (
        f":x: Drift retraining against champion v{champion} (days {window}) failed "
        f"{attempts} time(s); no further attempt for this window (runbook: a failed retraining)"
    )


def run_failure_text(
    job_name: str, run_id: str, error: str | None, *, dagster_url: str | None = None
) -> str:
    """A Dagster run failed: the job, the first line of the error and the run."""
    text = (error or "").strip()
    first = text.splitlines()[0][:300] if text else "no error message"
    lines = [f":x: Dagster run of {job_name} failed: {first}"]
    lines.append(_run_line(run_id, dagster_url))
    return "\n".join(lines)


def post_alert(
    text: str,
    *,
    url: str | None = None,
    retries: int = 3,
    timeout: float = 5.0,
    backoff: float = 0.5,
) -> AlertResult:
    """POST ``{"text": text}`` to ``url`` as JSON; up to ``retries`` extra attempts. Never raises.

    Without a ``url`` the alert is logged and not sent. A 4xx answer other than 429 is not retried
    (the request itself is wrong).
    """
    url = (url or "").strip()
    if not url:
        log.info("no %s set: alert not sent: %s", WEBHOOK_ENV, text)
        return AlertResult(sent=False, attempts=0, error=f"{WEBHOOK_ENV} not set")
    body = json.dumps({"text": text}).encode("utf-8")
    status: int | None = None
    error = ""
    attempts = 0
    for attempt in range(retries + 1):
        attempts = attempt + 1
        try:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status = response.status
            return AlertResult(sent=True, attempts=attempts, status=status)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code != 429:
                break
        except ValueError as exc:  # not a usable URL: retrying cannot help
            status, error = None, f"invalid webhook URL: {exc}"
            break
        except Exception as exc:  # timeouts, refused connections: never raise
            status, error = None, f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    log.warning("alert not delivered after %d attempt(s): %s", attempts, error)
    return AlertResult(sent=False, attempts=attempts, status=status, error=error)
