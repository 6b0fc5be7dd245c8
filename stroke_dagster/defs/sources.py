"""What arrives from outside: cohort files, label files and the champion alias.

* ``incoming_cohort`` and ``cohort_labels`` are external daily assets: the files
  ``STROKE_HOME/incoming/<day>.csv|.parquet`` and ``STROKE_HOME/labels/<day>.csv`` (or the same
  names under ``storage.url`` on object storage). The ``file_arrivals`` sensor runs nothing: it
  reports each new or replaced file as a materialization of its day (data version = hash of
  modification time and size; of the ETag on object storage), and the
  automation conditions downstream do the rest. A badly named or future-dated file is skipped
  with its reason (tick skip message and log); it never fails the tick or holds back others.
  The same sensor marks today's cohort overdue once ``scoring.cohort_due_hour`` (UTC) has
  passed without a file (the ``arrived_by_due_hour`` check) and alerts once per day.
* ``champion_model`` is an observable source asset whose data version is the version the
  StrokeRF ``champion`` alias points to, observed with what a person asks of it
  (:func:`champion_glance`).
  The ``champion_rescoring`` sensor observes it and, when
  the alias moves (a rollback to an earlier version included), rescores only ``cohort_scores``
  of the ``scoring.rescore_days`` most recent scored days that do not carry the champion, from
  their typed cohort copy (drift then follows through automation). It waits while a run of the
  day is under way, and requests a failed rescore again (bounded). It is a
  sensor, not a condition, because the window is a runtime setting of the ``stroke`` resource.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dagster as dg

from stroke_dagster.core.settings import Settings
from stroke_dagster.defs.partitions import daily_partitions
from stroke_dagster.defs.resources import StrokeSettings

GROUP = "sources"
OWNERS = ["team:ml-platform"]
DATA_VERSION_TAG = "dagster/data_version"
OVERDUE_CHECK = "arrived_by_due_hour"
TRIGGER_TAG = "stroke/trigger"
CHAMPION_TAG = "stroke/champion"

incoming_cohort = dg.AssetSpec(
    "incoming_cohort",
    partitions_def=daily_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"file"},
    description=(
        "The day's cohort file `STROKE_HOME/incoming/<day>.csv|.parquet` as dropped by the "
        "upstream system; reported by the file_arrivals sensor when it appears or changes."
    ),
)

cohort_labels = dg.AssetSpec(
    "cohort_labels",
    partitions_def=daily_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"file"},
    description=(
        "The day's outcome labels `STROKE_HOME/labels/<day>.csv` (id,stroke); reported by the "
        "file_arrivals sensor when it appears or changes."
    ),
)


clinician_feedback = dg.AssetSpec(
    "clinician_feedback",
    partitions_def=daily_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"file"},
    description=(
        "The day's file of clinicians' feedback on flagged patients "
        "`STROKE_HOME/feedback/<day>.csv` (accepted or overridden, with a reason code); "
        "reported by the file_arrivals sensor when it appears or changes."
    ),
)


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            "champion_model",
            group_name=GROUP,
            owners=OWNERS,
            kinds={"mlflow"},
            # registered_model moves the alias (the gate), as do recalibrations and rollbacks
            deps=[dg.AssetKey("registered_model")],
            description=(
                "The StrokeRF version the MLflow `champion` alias points to (its data "
                "version), observed by the champion_rescoring sensor: since when, why (the "
                "gate's reason), its holdout and live ROC AUC and calibration (observed / "
                "expected strokes), with links to the version in MLflow and the Dagster run "
                "that registered it."
            ),
        )
    ]
)
def champion_model(stroke: StrokeSettings):  # noqa: ANN201 - yields ObserveResult
    """Observe by hand (the sensor observes it every 30 s)."""
    from stroke_dagster.model import registry

    settings = stroke.settings()
    version = registry.resolve_alias("champion", settings=settings)
    yield dg.ObserveResult(
        asset_key="champion_model",
        data_version=dg.DataVersion(version or "none"),
        metadata=champion_glance(settings, version) if version else {},
    )


def champion_glance(settings: Settings, version: str) -> dict[str, Any]:
    """What a person asks of the champion, as metadata (rounded, with links)."""
    from stroke_dagster.defs.metadata import (
        dagster_run_url,
        mlflow_run_url,
        mlflow_version_url,
        readable,
    )
    from stroke_dagster.model import registry
    from stroke_dagster.warehouse import store as warehouse

    client = registry.client(settings)
    model_version = client.get_model_version(registry.MODEL_NAME, version)
    tags = dict(model_version.tags or {})
    metadata: dict[str, Any] = {
        "version": version,
        "champion_since": tags.get("champion_since", ""),
        "gate_reason": tags.get("gate_reason", ""),
        "mlflow_version": mlflow_version_url(settings, version),
    }
    if tags.get("holdout_roc_auc"):
        metadata["holdout_roc_auc"] = float(tags["holdout_roc_auc"])
    run_id = tags.get("run_id") or model_version.run_id
    if run_id:
        try:  # one lookup for both links
            run = client.get_run(run_id)
        except Exception:  # a link is a courtesy
            run = None
        if run is not None:
            metadata["mlflow_run"] = mlflow_run_url(settings, run_id, run.info.experiment_id)
            dagster_run = run.data.tags.get("dagster_run_id")
            if dagster_run:
                metadata["registered_by_run"] = dagster_run_url(settings, dagster_run)
    if warehouse.exists(settings):
        try:
            live = warehouse.query_df(
                "SELECT count(*) AS days, sum(n_labelled) AS n, avg(roc_auc) AS auc, "
                "sum(n_positive) AS observed, sum(mean_probability * n_labelled) AS expected "
                "FROM performance_metrics WHERE model_version = ?",
                [version],
                settings=settings,
            ).iloc[0]
        except Exception:  # an unreachable store: the figures come on a later tick
            live = None
        if live is not None and int(live["days"] or 0):
            metadata["live_labelled_days"] = int(live["days"])
            metadata["live_labelled_patients"] = int(live["n"] or 0)
            if live["auc"] == live["auc"] and live["auc"] is not None:
                metadata["live_roc_auc"] = float(live["auc"])
            if live["expected"]:
                metadata["live_observed_expected"] = float(live["observed"]) / float(
                    live["expected"]
                )
    return readable(metadata)


# --------------------------------------------------------------------------- file arrivals
def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _first_day() -> dt.date:
    return daily_partitions.start.date()


def _arrival_events(
    key: dg.AssetKey, scan: Any, seen: dict[str, str]
) -> list[dg.AssetMaterialization]:
    events = []
    for file in scan.files:
        if seen.get(file.day) == file.version:
            continue
        seen[file.day] = file.version
        events.append(
            dg.AssetMaterialization(
                asset_key=key,
                partition=file.day,
                tags={DATA_VERSION_TAG: file.version},
                metadata={
                    "path": dg.MetadataValue.path(str(file.path)),
                    "bytes": file.size,
                    "modified_at": dt.datetime.fromtimestamp(file.mtime_ns / 1e9, dt.UTC).isoformat(
                        timespec="seconds"
                    ),
                },
            )
        )
    return events


def overdue_verdict(
    arrived: bool, *, day: str, due_hour: int, now: dt.datetime
) -> tuple[bool, str] | None:
    """``(passed, description)`` of the arrival check for ``day``; None before its due hour."""
    due_at = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC) + dt.timedelta(hours=due_hour)
    if arrived:
        return True, f"cohort for {day} arrived"
    if now < due_at:
        return None
    return False, f"cohort for {day} is overdue: no file by {due_hour:02d}:00 UTC"


@dg.asset_check(
    asset=incoming_cohort.key,
    name=OVERDUE_CHECK,
    description=(
        "Today's cohort file arrived by scoring.cohort_due_hour (UTC). The file_arrivals sensor "
        "records this check on every change; running it by hand evaluates it now."
    ),
)
def arrived_by_due_hour(stroke: StrokeSettings) -> dg.AssetCheckResult:
    settings = stroke.settings()
    day = _today().isoformat()
    verdict = overdue_verdict(
        settings.incoming_file(day) is not None,
        day=day,
        due_hour=settings.scoring.cohort_due_hour,
        now=dt.datetime.now(dt.UTC),
    )
    passed, description = verdict or (True, f"cohort for {day} is not due yet")
    return dg.AssetCheckResult(
        passed=passed,
        description=description,
        metadata={"day": day, "due_hour_utc": settings.scoring.cohort_due_hour},
    )


@dg.sensor(
    name="file_arrivals",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description=(
        "Reports each new or replaced `STROKE_HOME/incoming/<day>.*`, `labels/<day>.csv` and "
        "`feedback/<day>.csv` as the day's incoming_cohort / cohort_labels / "
        "clinician_feedback (runs nothing); skips badly named and "
        "future-dated files with the reason; marks today's cohort overdue after "
        "scoring.cohort_due_hour and alerts once."
    ),
)
def file_arrivals(context: dg.SensorEvaluationContext, stroke: StrokeSettings) -> dg.SensorResult:
    from stroke_dagster.core.settings import COHORT_SUFFIXES, SettingsError
    from stroke_dagster.io import arrivals
    from stroke_dagster.monitoring.alerts import overdue_text, post_alert

    try:
        settings = stroke.load()
    except SettingsError as exc:
        return dg.SensorResult(skip_reason=f"settings: {exc}")
    state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
    now = dt.datetime.now(dt.UTC)
    bounds = {"first_day": _first_day(), "last_day": now.date()}
    files = settings.files
    cohorts = arrivals.scan(settings.incoming_dir, COHORT_SUFFIXES, storage=files, **bounds)
    labels = arrivals.scan(settings.labels_dir, (".csv",), storage=files, **bounds)
    feedback = arrivals.scan(settings.feedback_dir, (".csv",), storage=files, **bounds)
    events: list[Any] = _arrival_events(
        incoming_cohort.key, cohorts, state.setdefault("incoming", {})
    )
    events += _arrival_events(cohort_labels.key, labels, state.setdefault("labels", {}))
    events += _arrival_events(clinician_feedback.key, feedback, state.setdefault("feedback", {}))

    # Overdue: record the check when its verdict for today changes; alert once per day.
    today = now.date().isoformat()
    due_hour = settings.scoring.cohort_due_hour
    arrived = any(file.day == today for file in cohorts.files)
    verdict = overdue_verdict(arrived, day=today, due_hour=due_hour, now=now)
    overdue = state.setdefault("overdue", {})
    if verdict is not None and overdue.get("day") != today:
        overdue.clear()
        overdue["day"] = today
    if verdict is not None and overdue.get("passed") != verdict[0]:
        passed, description = verdict
        overdue["passed"] = passed
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=incoming_cohort.key,
                check_name=OVERDUE_CHECK,
                passed=passed,
                description=description,
                metadata={"day": today, "due_hour_utc": due_hour},
            )
        )
        if not passed and not overdue.get("alerted"):
            alert = post_alert(overdue_text(today, due_hour), url=settings.alerts.webhook)
            overdue["alerted"] = True
            context.log.warning(
                f"{description}; alert {'sent' if alert.sent else 'not sent: ' + str(alert.error)}"
            )

    skipped = {
        **cohorts.skipped,
        **{f"labels/{k}": v for k, v in labels.skipped.items()},
        **{f"feedback/{k}": v for k, v in feedback.skipped.items()},
    }
    for name, reason in skipped.items():
        context.log.info(f"skipped {name}: {reason}")
    arrived_files = [e for e in events if isinstance(e, dg.AssetMaterialization)]
    parts = [f"reported {len(arrived_files)} new or changed file(s)"]
    parts += [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    return dg.SensorResult(
        asset_events=events,
        cursor=json.dumps(state, sort_keys=True),
        skip_reason="; ".join(parts) if not arrived_files or skipped else None,
    )


# ------------------------------------------------------------------------ champion rescoring
def _scored_version(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("model_version")
    return str(value.value) if value is not None else None


def _rescoring_state(
    cursor: str | None, version: str, now: dt.datetime
) -> tuple[dict[str, Any], bool]:
    """``({"version", "since"}, changed)``: the champion, since when this sensor sees it as
    champion, and whether that changed now."""
    state: dict[str, Any] = {}
    if cursor:
        try:
            state = json.loads(cursor)
        except ValueError:  # a cursor of an older release: the bare version
            state = {"version": cursor, "since": 0.0}
        if not isinstance(state, dict):
            state = {"version": str(state), "since": 0.0}
    if state.get("version") != version:
        return {"version": version, "since": now.timestamp()}, True
    return state, False


@dg.sensor(
    name="champion_rescoring",
    target=dg.AssetSelection.assets("cohort_scores"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Observes the StrokeRF `champion` alias (champion_model); rescores cohort_scores of the "
        "scoring.rescore_days most recent scored days that do not carry the champion, from "
        "their typed cohort copies: after every change, a rollback included; waits for a run "
        "of the day under way; a failed rescore is requested again, at most "
        "scoring.max_heal_attempts times per change."
    ),
)
def champion_rescoring(
    context: dg.SensorEvaluationContext, stroke: StrokeSettings
) -> dg.SensorResult:
    from stroke_dagster.core.settings import SettingsError
    from stroke_dagster.defs.healing import ENDED_BADLY, PARTITION_TAG, count_runs, day_busy
    from stroke_dagster.model import registry

    try:
        settings = stroke.load()
        version = registry.resolve_alias("champion", settings=settings)
    except SettingsError as exc:
        return dg.SensorResult(skip_reason=f"settings: {exc}")
    if version is None:
        return dg.SensorResult(skip_reason="no champion registered yet")
    now = dt.datetime.now(dt.UTC)
    state, changed = _rescoring_state(context.cursor, version, now)
    events = []
    glance = champion_glance(settings, version)
    digest = json.dumps({k: str(v) for k, v in glance.items()}, sort_keys=True)
    if changed or state.get("glance") != digest:  # a new champion, or new live figures
        state["glance"] = digest
        events.append(
            dg.AssetObservation(
                champion_model.key, tags={DATA_VERSION_TAG: version}, metadata=glance
            )
        )
    since = dt.datetime.fromtimestamp(state["since"], dt.UTC)
    scores_key = dg.AssetKey("cohort_scores")
    scored = sorted(context.instance.get_materialized_partitions(scores_key), reverse=True)
    recent = scored[: settings.scoring.rescore_days]
    requests, notes = [], []
    for day in recent:
        if _scored_version(context.instance, scores_key, day) == version:
            continue
        busy = day_busy(context.instance, day)
        if busy is not None:  # its run may still write another version: look again after it
            notes.append(f"{day} waits for run {busy.run_id[:8]}")
            continue
        tags = {TRIGGER_TAG: "champion", CHAMPION_TAG: version}
        failed = count_runs(
            context.instance, {**tags, PARTITION_TAG: day}, ENDED_BADLY, created_after=since
        )
        if failed >= settings.scoring.max_heal_attempts:
            notes.append(f"{day}: rescoring with v{version} failed {failed} time(s); gave up")
            continue
        requests.append(dg.RunRequest(partition_key=day, asset_selection=[scores_key], tags=tags))
    cursor = json.dumps(state, sort_keys=True)
    if requests:
        days = ", ".join(r.partition_key or "" for r in requests)
        context.log.info(f"champion is v{version}: rescoring {days}")
        return dg.SensorResult(run_requests=requests, asset_events=events, cursor=cursor)
    return dg.SensorResult(
        skip_reason=f"champion is v{version}; "
        + ("; ".join(notes) or f"the {len(recent)} most recent scored day(s) carry it already"),
        asset_events=events,
        cursor=cursor,
    )
