"""Retraining on persistent drift: the sensor that applies
:mod:`stroke_dagster.monitoring.retraining`.

A sensor rather than an automation condition: the policy reads the drift verdicts from the
warehouse (``drift_summary``, against the current champion), needs the run history for its
cooldown and window, and starts ``training_job`` as one run with its tags; automation
conditions only see asset events and cannot read either. It reads the latest snapshot of the
warehouse (never waiting for a writer); a malformed setting skips the tick with the reason.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from stroke_dagster.core.settings import Settings
from stroke_dagster.defs.resources import StrokeSettings

TRAINING_JOB = "training_job"
TRIGGER_TAG = "stroke/trigger"


def _verdicts(version: str, window: int, settings: Settings) -> list[tuple[str, bool]]:
    from stroke_dagster.warehouse import store as warehouse

    if not warehouse.exists(settings):
        return []
    frame = warehouse.query_df(
        "SELECT strftime(cohort_date, '%Y-%m-%d') AS day, is_drift FROM drift_summary "
        "WHERE reference_model_version = ? ORDER BY cohort_date DESC LIMIT ?",
        [version, window],
        settings=settings,
    )
    return [(str(d), bool(f)) for d, f in zip(frame["day"], frame["is_drift"], strict=True)]


WINDOW_TAG = "stroke/retrain_window"
CHAMPION_TAG = "stroke/champion"


def _last_retrain(context: dg.SensorEvaluationContext):  # noqa: ANN202 - LastRetrain | None
    """The latest drift-triggered training that did not fail: from the run history, or the
    cursor's request if newer and its run has not ended badly (a failed or cancelled
    retraining neither starts the cooldown nor spends its window)."""
    from stroke_dagster.defs.healing import ENDED_BADLY, IN_PROGRESS
    from stroke_dagster.monitoring.retraining import LastRetrain

    candidates = []
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=TRAINING_JOB,
            tags={TRIGGER_TAG: "drift"},
            statuses=[dg.DagsterRunStatus.SUCCESS, *IN_PROGRESS],
        ),
        limit=1,
    )
    for record in records:
        tags = record.dagster_run.tags
        candidates.append(
            LastRetrain(
                requested_at=record.create_timestamp.astimezone(dt.UTC),
                champion=tags.get(CHAMPION_TAG, ""),
                latest_day=tags.get("stroke/latest_day", ""),
            )
        )
    state = json.loads(context.cursor) if context.cursor else {}
    if state.get("requested_at"):
        key = state.get("run_key")
        runs = (
            context.instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/run_key": key}, statuses=ENDED_BADLY), limit=1
            )
            if key
            else []
        )
        if not runs:
            candidates.append(
                LastRetrain(
                    requested_at=dt.datetime.fromisoformat(state["requested_at"]),
                    champion=state["champion"],
                    latest_day=state["latest_day"],
                )
            )
    return max(candidates, key=lambda last: last.requested_at, default=None)


@dg.sensor(
    name="drift_retraining",
    job_name=TRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts training_job when retrain.drifted_days of the last retrain.window_days checked "
        "days drifted against the current champion: once per policy window, at most once per "
        "retrain.cooldown_hours; a failed or cancelled retraining spends neither and is tried "
        "again up to retrain.max_attempts times, then alerts; a malformed setting skips the tick."
    ),
)
def drift_retraining(context: dg.SensorEvaluationContext, stroke: StrokeSettings):  # noqa: ANN201
    from stroke_dagster.core.settings import SettingsError
    from stroke_dagster.defs.healing import ENDED_BADLY, count_runs
    from stroke_dagster.model import registry
    from stroke_dagster.monitoring.alerts import post_alert, retrain_failed_text
    from stroke_dagster.monitoring.retraining import Policy, decide

    try:
        settings = stroke.load()
    except SettingsError as exc:
        return dg.SkipReason(f"settings: {exc}")
    policy = Policy(
        drifted_days=settings.retrain.drifted_days,
        window_days=settings.retrain.window_days,
        cooldown_hours=settings.retrain.cooldown_hours,
    )
    running = context.instance.get_runs(
        filters=dg.RunsFilter(
            job_name=TRAINING_JOB,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if running:
        return dg.SkipReason(f"{TRAINING_JOB} run {running[0].run_id} is already under way")
    champion = registry.resolve_alias("champion", settings=settings)
    if champion is None:
        return dg.SkipReason("no champion registered yet: nothing to compare drift against")
    last = _last_retrain(context)
    window = policy.window_days + (policy.window_days if last else 0)
    verdicts = _verdicts(champion, window, settings)  # a snapshot: never waits for a writer
    now = dt.datetime.now(dt.UTC)
    decision = decide(verdicts, champion=champion, policy=policy, now=now, last=last)
    state = json.loads(context.cursor) if context.cursor else {}
    # The policy's state, on the sensor's page (its cursor), not only inside a tick.
    state["policy"] = decision.reason
    state["checked_at"] = now.isoformat(timespec="seconds")
    if not decision.retrain:
        return dg.SensorResult(skip_reason=decision.reason, cursor=json.dumps(state))
    window_tags = {TRIGGER_TAG: "drift", CHAMPION_TAG: champion, WINDOW_TAG: decision.key}
    failed = count_runs(context.instance, window_tags, ENDED_BADLY)
    max_attempts = settings.retrain.max_attempts
    if failed >= max_attempts:
        alerted = state.setdefault("alerted", [])
        if decision.key not in alerted:
            alerted.append(decision.key)
            post_alert(
                retrain_failed_text(champion, decision.key, failed), url=settings.alerts.webhook
            )
        return dg.SensorResult(
            skip_reason=f"{decision.reason}, but the retraining of this window failed "
            f"{failed} time(s) (retrain.max_attempts {max_attempts}): alerted, no further attempt",
            cursor=json.dumps(state),
        )
    attempt = failed + 1
    retry_note = f" (attempt {attempt} of {max_attempts})" if failed else ""
    context.log.info(f"{decision.reason}: requesting {TRAINING_JOB}{retry_note}")
    latest = decision.window[-1]
    run_key = f"retrain-v{champion}-{decision.key}-a{attempt}"
    state.update(
        {
            "requested_at": now.isoformat(),
            "champion": champion,
            "latest_day": latest,
            "run_key": run_key,
        }
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                tags={
                    **window_tags,
                    "stroke/latest_day": latest,
                    "stroke/drifted_days": ",".join(decision.drifted),
                    # the change-control record of the version says why it was made
                    "stroke/retrain_reason": decision.reason[:500],
                },
            )
        ],
        cursor=json.dumps(state),
    )
