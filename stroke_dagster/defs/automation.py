"""How the daily loop runs itself: the automation conditions of the assets, the sensor that
evaluates them, and the alert for failed runs.

Every daily asset uses :func:`on_new_upstream_data`: a partition is requested as soon as an
upstream partition it reads is updated (a cohort file arrives, the day is scored...) or when it
becomes missing, but only once its upstream data exist and nothing upstream is still running.
Unlike ``AutomationCondition.eager()`` it is not limited to the latest day, so files dropped
for several past days are all scored, and it does not forget updates seen before its first
evaluation (no reset on the initial evaluation). A request is handled once (requested or
materialized).

Failures heal without a person (docs/runbook.md):

* a step's transient failure (the registry or the object store away for a minute) is retried
  by :data:`TRANSIENT_RETRY`, with exponential backoff, a bounded number of times;
* a permanent one (a file whose every row is invalid) raises :func:`permanent_failure`: no
  step retry, and the ``unscored_days`` sensor does not request the day again until its file
  changes;
* a run whose worker died (crash, reboot) is failed by run monitoring and retried by run
  retries (``dagster.yaml``, :mod:`.launcher`);
* a day whose cohort arrived but is still unscored after ``scoring.unscored_after_minutes`` is
  a failed ``scored_in_time`` check, alerts once and is requested again, at most
  ``scoring.max_heal_attempts`` times per file version (:mod:`.healing`).
"""

from collections.abc import Sequence

import dagster as dg

from stroke_dagster.defs.resources import StrokeSettings

AUTOMATION_SENSOR = "daily_loop_automation"
PERMANENT_TAG = "stroke/permanent_failure"
# 10 s, 20 s, 40 s (+-50%): outlasts a 60 s outage of the registry or the object store.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def permanent_failure(
    context: dg.AssetExecutionContext, description: str, **metadata: object
) -> dg.Failure:
    """A failure that no retry can mend (bad input): tags the run and is never retried."""
    context.instance.add_run_tags(
        context.run_id, {PERMANENT_TAG: context.asset_key.to_user_string()}
    )
    return dg.Failure(description=description, metadata=dict(metadata), allow_retries=False)


HANDLED = (
    dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()
).with_label("requested or updated")


def on_new_upstream_data(ignore: Sequence[dg.AssetKey] = ()) -> dg.AutomationCondition:
    """Run a partition when its upstream data changed (or it became missing), once they exist.

    Updates of the assets in ``ignore`` do not trigger (they still must exist).
    """
    updated = dg.AutomationCondition.any_deps_updated()
    if ignore:
        updated = updated.ignore(dg.AssetSelection.keys(*ignore))
    return (
        (dg.AutomationCondition.newly_missing() | updated)
        .since(HANDLED)
        .with_label("new upstream data since last handled")
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("on new upstream data")


daily_loop_automation = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    # With file_arrivals every 10 s, a file is scored and drift-checked about a minute after it
    # lands (benchmarks/faults.py measures it).
    minimum_interval_seconds=15,
    # One run per day (its cohort, scores, drift and performance steps), not a backfill.
    emit_backfills=False,
    description=(
        "Evaluates the automation conditions of every asset: scores a day when its cohort file "
        "arrives, checks its drift once it is scored (again when rescored), and computes its "
        "realized performance once its labels arrive and it is scored."
    ),
)


def _failure_message(context: dg.RunFailureSensorContext) -> str | None:
    event = context.failure_event
    if event.event_specific_data is not None and getattr(event.event_specific_data, "error", None):
        return event.event_specific_data.error.message
    return event.message


def _run_label(run: dg.DagsterRun) -> str:
    if not run.job_name.startswith("__ASSET_JOB"):
        return run.job_name
    assets = ", ".join(key.to_user_string() for key in sorted(run.asset_selection or []))
    partition = run.tags.get("dagster/partition")
    return f"assets [{assets}]" + (f" for {partition}" if partition else "")


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Posts every failed run of this code location to the alert webhook.",
)
def run_failure_alert(
    context: dg.RunFailureSensorContext, stroke: StrokeSettings
) -> dg.SkipReason | None:
    from stroke_dagster.core.settings import SettingsError
    from stroke_dagster.monitoring.alerts import post_alert, run_failure_text

    try:
        alerts = stroke.load().alerts
    except SettingsError as exc:
        return dg.SkipReason(f"alert not sent: {exc}")
    text = run_failure_text(
        _run_label(context.dagster_run),
        context.dagster_run.run_id,
        _failure_message(context),
        dagster_url=alerts.dagster_url,
    )
    result = post_alert(text, url=alerts.webhook)
    if not result.sent:
        return dg.SkipReason(f"alert not delivered: {result.error}")
    return None


@dg.definitions
def automation() -> dg.Definitions:
    """The sensors above (the executor of their runs comes from :mod:`.execution`)."""
    return dg.Definitions(sensors=[daily_loop_automation, run_failure_alert])
