"""Days that arrived but are not scored: a failed check, one alert, and a bounded re-request.

Dagster heals most failures by itself (step retries, run monitoring and run retries, see
:mod:`.automation`). What is left, a day whose runs all failed or whose run never came, is the
job of the ``unscored_days`` sensor. For every day of the last :data:`LOOKBACK_DAYS` whose cohort
file arrived more than ``scoring.unscored_after_minutes`` ago and has no scores since:

* the ``scored_in_time`` check of ``cohort_scores`` fails, naming the day, and the alert webhook
  is told once per file version;
* unless a run of the day is under way, or its last run failed permanently (bad input: only a
  new file mends it), the day is requested again, at most ``scoring.max_heal_attempts`` times
  per file version.

Once the day is scored the check passes again. A sensor, not an automation condition, because
the attempts are counted from the run history, which conditions cannot read. The check is not
partitioned: Dagster 1.13 stores one sensor-reported evaluation per partition at most (a second
one violates a unique key of its check storage), so the day is in its description and metadata.
"""

import datetime as dt
import json
from typing import Any

import dagster as dg

from stroke_dagster.defs.automation import PERMANENT_TAG
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.sources import DATA_VERSION_TAG, incoming_cohort

SCORED_CHECK = "scored_in_time"
TRIGGER_TAG = "stroke/trigger"
FILE_VERSION_TAG = "stroke/file_version"
PARTITION_TAG = "dagster/partition"
LOOKBACK_DAYS = 14
SCORES = dg.AssetKey("cohort_scores")
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
ENDED_BADLY = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def day_busy(instance: dg.DagsterInstance, day: str) -> dg.DagsterRun | None:
    """A queued or running run of ``day`` (any job), if there is one."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={PARTITION_TAG: day}, statuses=IN_PROGRESS), limit=1
    )
    return runs[0] if runs else None


def count_runs(
    instance: dg.DagsterInstance,
    tags: dict[str, str],
    statuses: list[dg.DagsterRunStatus] | None = None,
    created_after: dt.datetime | None = None,
) -> int:
    """How many runs carry ``tags`` (with one of ``statuses``, created after a time)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags=tags, statuses=statuses or [], created_after=created_after)
    )
    return len(records)


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> Any:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
    ).records
    return records[0] if records else None


def _recent_days(today: dt.date) -> list[str]:
    """The days the healer looks at, oldest first (today included)."""
    return [(today - dt.timedelta(days=n)).isoformat() for n in range(LOOKBACK_DAYS, -1, -1)]


def _unscored_arrival(instance: dg.DagsterInstance, day: str) -> Any:
    """The day's latest cohort arrival when no scores were written since it, else ``None``."""
    arrival = _latest(instance, incoming_cohort.key, day)
    if arrival is None:
        return None
    scored = _latest(instance, SCORES, day)
    return arrival if scored is None or scored.timestamp < arrival.timestamp else None


def _failed_permanently(instance: dg.DagsterInstance, day: str, since: float) -> str | None:
    """The asset whose bad input failed the latest run of ``day`` after ``since``, if any."""
    runs = instance.get_run_records(
        filters=dg.RunsFilter(
            tags={PARTITION_TAG: day},
            created_after=dt.datetime.fromtimestamp(since, dt.UTC),
        ),
        limit=1,
    )
    if runs and runs[0].dagster_run.status == dg.DagsterRunStatus.FAILURE:
        return runs[0].dagster_run.tags.get(PERMANENT_TAG)
    return None


@dg.asset_check(
    asset=SCORES,
    name=SCORED_CHECK,
    description=(
        "Every day of the last two weeks whose cohort arrived is scored (within "
        "scoring.unscored_after_minutes). The unscored_days sensor records it when a day fails "
        "or heals; a failing day is requested again."
    ),
)
def scored_in_time(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    today = dt.datetime.now(dt.UTC).date()
    missing = [d for d in _recent_days(today) if _unscored_arrival(context.instance, d)]
    return dg.AssetCheckResult(
        passed=not missing,
        description=f"not scored: {', '.join(missing)}" if missing else "every arrived day scored",
        metadata={"unscored_days": ", ".join(missing)},
    )


def _evaluation(day: str, passed: bool, description: str, **metadata: Any) -> Any:
    return dg.AssetCheckEvaluation(
        asset_key=SCORES,
        check_name=SCORED_CHECK,
        passed=passed,
        description=description,
        metadata={"day": day, **metadata},
    )


@dg.sensor(
    name="unscored_days",
    target=dg.AssetSelection.assets("daily_cohort", "cohort_scores"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description=(
        "Finds days whose cohort arrived more than scoring.unscored_after_minutes ago and are "
        "still unscored: fails their scored_in_time check, alerts once and requests the day "
        "again (at most scoring.max_heal_attempts times per file; never after a permanent "
        "failure until the file changes)."
    ),
)
def unscored_days(context: dg.SensorEvaluationContext, stroke: StrokeSettings) -> dg.SensorResult:
    from stroke_dagster.core.settings import SettingsError
    from stroke_dagster.monitoring.alerts import post_alert, unscored_text

    try:
        settings = stroke.load()
    except SettingsError as exc:
        return dg.SensorResult(skip_reason=f"settings: {exc}")
    state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
    failing: dict[str, str] = state.setdefault("failing", {})  # day -> file version alerted
    instance = context.instance
    now = dt.datetime.now(dt.UTC)
    due_after = settings.scoring.unscored_after_minutes * 60
    max_attempts = settings.scoring.max_heal_attempts
    events: list[Any] = []
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for day in _recent_days(now.date()):
        arrival = _unscored_arrival(instance, day)
        if arrival is None:  # nothing arrived, or scored since: a failing day has healed
            if day in failing:
                del failing[day]
                events.append(_evaluation(day, True, f"{day} is scored"))
            continue
        version = (arrival.event_log_entry.tags or {}).get(DATA_VERSION_TAG, "")
        waited = now.timestamp() - arrival.timestamp
        if waited < due_after:
            notes.append(f"{day}: arrived {waited / 60:.0f} min ago, not due yet")
            continue
        description = f"{day}: cohort arrived {waited / 60:.0f} min ago and is not scored"
        if failing.get(day) != version:
            failing[day] = version
            events.append(_evaluation(day, False, description, file_version=version))
            alert = post_alert(unscored_text(day, waited / 60), url=settings.alerts.webhook)
            context.log.warning(
                f"{description}; alert {'sent' if alert.sent else 'not sent: ' + str(alert.error)}"
            )
        busy = day_busy(instance, day)
        if busy is not None:
            notes.append(f"{day}: run {busy.run_id[:8]} under way")
            continue
        permanent = _failed_permanently(instance, day, arrival.timestamp)
        if permanent:
            notes.append(f"{day}: {permanent} failed on its input; waiting for a new file")
            continue
        tags = {TRIGGER_TAG: "heal", FILE_VERSION_TAG: version, PARTITION_TAG: day}
        attempts = count_runs(instance, tags)
        if attempts >= max_attempts:
            notes.append(f"{day}: gave up after {attempts} heal run(s); see the runbook")
            continue
        notes.append(f"{day}: requested again (heal attempt {attempts + 1} of {max_attempts})")
        requests.append(
            dg.RunRequest(
                run_key=f"heal-{day}-{version}-{attempts + 1}",
                partition_key=day,
                asset_selection=[dg.AssetKey("daily_cohort"), SCORES],
                tags={TRIGGER_TAG: "heal", FILE_VERSION_TAG: version},
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        asset_events=events,
        cursor=json.dumps(state, sort_keys=True),
        skip_reason=None if requests else ("; ".join(notes) or "every arrived day is scored"),
    )


@dg.definitions
def healing() -> dg.Definitions:
    return dg.Definitions(sensors=[unscored_days], asset_checks=[scored_in_time])
