"""The loop's automation through Dagster's own evaluation: sensor ticks (``evaluate_tick``),
automation conditions (``evaluate_automation_conditions``) and run-status sensor contexts.

Covers the cases that broke: a cohort file for today, for tomorrow or with a bad name; a labels
file for today before its day is scored; a warehouse written during a tick; malformed settings.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import dagster as dg
import pytest
from _automation import (
    day,
    drift_days,
    project_defs,
    report_scored,
    requested,
    tick,
    write_cohort,
    write_labels,
)
from _webhook import Webhook

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.automation import run_failure_alert
from stroke_dagster.defs.partitions import daily_partitions
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.retraining import drift_retraining
from stroke_dagster.defs.scoring import cohort_scores, daily_cohort
from stroke_dagster.defs.sources import (
    OVERDUE_CHECK,
    champion_model,
    champion_rescoring,
    cohort_labels,
    file_arrivals,
    incoming_cohort,
)
from stroke_dagster.warehouse import store as warehouse


@pytest.fixture
def defs() -> dg.Definitions:
    return project_defs()


# ------------------------------------------------------------------------------ file arrivals
def test_files_for_today_are_reported_and_future_or_bad_names_skipped(
    stroke_home: Path, defs: dg.Definitions
) -> None:
    write_cohort(stroke_home, day(-1))
    write_cohort(stroke_home, day(0))
    write_cohort(stroke_home, day(1))  # tomorrow: not a partition yet
    (stroke_home / "incoming" / "cohort-final.csv").write_text("id\n1\n")
    write_labels(stroke_home, day(0))  # labels for today, before the day is scored
    with dg.instance_for_test() as instance:
        first = tick(file_arrivals, instance, cohort_due_hour=23)
        reported = {
            (e.asset_key.to_user_string(), e.partition)
            for e in first.asset_events
            if isinstance(e, dg.AssetMaterialization)
        }
        assert reported == {
            ("incoming_cohort", day(-1)),
            ("incoming_cohort", day(0)),
            ("cohort_labels", day(0)),
        }
        assert not first.run_requests and first.skip_message
        assert f"skipped {day(1)}.csv: dated in the future" in first.skip_message
        assert "skipped cohort-final.csv: name is not a day" in first.skip_message
        assert all(daily_partitions.has_partition_key(p) for _, p in reported)

        again = tick(file_arrivals, instance, cursor=first.cursor, cohort_due_hour=23)
        assert not [e for e in again.asset_events if isinstance(e, dg.AssetMaterialization)]

        instance.report_runless_asset_event(dg.AssetObservation(champion_model.key))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        plan = requested(result)
        # Today's file is scored today; drift and (with today's labels) realized performance
        # follow in the same run of the day, after its scores.
        assert plan == {
            "daily_cohort": [day(-1), day(0)],
            "cohort_scores": [day(-1), day(0)],
            "drift_metrics": [day(-1), day(0)],
            "performance_metrics": [day(0)],
            "high_risk_explanations": [day(-1), day(0)],
            "label_free_estimates": [day(-1), day(0)],
            "daily_calibration": [day(0)],
            "alert_burden": [day(-1), day(0)],  # runs without labels, again when they arrive
            "shadow_scores": [day(-1), day(0)],  # after cohort_scores (its upstream)
            "shadow_comparison": [day(0)],
        }
        again = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        assert again.total_requested == 0  # requested once


def test_labels_wait_for_scores_then_performance_runs(
    stroke_home: Path, defs: dg.Definitions
) -> None:
    key = day(-2)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetObservation(champion_model.key))
        instance.report_runless_asset_event(
            dg.AssetMaterialization(cohort_labels.key, partition=key)
        )
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert "performance_metrics" not in requested(result)  # no scores yet: wait, not fail
        for asset in (incoming_cohort.key, daily_cohort.key):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=key))
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        plan = requested(result)
        assert plan["cohort_scores"] == [key] and plan["performance_metrics"] == [key]


def test_overdue_cohort_fails_its_check_and_alerts_once(stroke_home: Path) -> None:
    with Webhook() as hook, dg.instance_for_test() as instance:
        settings = {"cohort_due_hour": 0, "alert_webhook": hook.url}
        first = tick(file_arrivals, instance, **settings)
        (check,) = [e for e in first.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert check.check_name == OVERDUE_CHECK and not check.passed
        assert f"cohort for {day(0)} is overdue" in (check.description or "")
        second = tick(file_arrivals, instance, cursor=first.cursor, **settings)
        assert not [e for e in second.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert len(hook.requests) == 1
        assert f"{day(0)} is overdue" in json.loads(hook.requests[0]["body"])["text"]

        write_cohort(stroke_home, day(0))
        arrived = tick(file_arrivals, instance, cursor=second.cursor, **settings)
        (check,) = [e for e in arrived.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert check.passed and len(hook.requests) == 1
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(incoming_cohort.key, OVERDUE_CHECK)]
        )
        assert record  # the check's state is in the instance, shown in the UI


@pytest.mark.parametrize("sensor", [file_arrivals, champion_rescoring, drift_retraining])
def test_malformed_settings_skip_the_tick_with_one_line(
    stroke_home: Path,
    sensor,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setenv("STROKE_RETRAIN_WINDOW_DAYS", "seven")
    with dg.instance_for_test() as instance:
        data = tick(sensor, instance)
    assert not data.run_requests and "\n" not in data.skip_message
    assert "STROKE_RETRAIN_WINDOW_DAYS must be an integer >= 1, got 'seven'" in data.skip_message


# --------------------------------------------------------------------------- new champion
def test_new_champion_rescores_only_the_recent_scored_days(champion_home: Path) -> None:
    with dg.instance_for_test() as instance:
        for key in (day(-3), day(-2), day(-1)):
            report_scored(instance, key, "0")  # scored by an earlier champion
        first = tick(champion_rescoring, instance)
        (observation,) = first.asset_events
        assert observation.asset_key == champion_model.key
        assert observation.tags["dagster/data_version"] == "1"
        (request,) = first.run_requests
        assert request.partition_key == day(-1) and request.asset_selection == [cohort_scores.key]
        assert json.loads(first.cursor)["version"] == "1"

        wider = tick(champion_rescoring, instance, cursor=first.cursor, rescore_days=2)
        assert [r.partition_key for r in wider.run_requests] == [day(-1), day(-2)]
        assert not wider.asset_events  # the alias did not move: no new observation

        report_scored(instance, day(-1), "1")
        done = tick(champion_rescoring, instance, cursor=first.cursor)
        assert not done.run_requests and "carry it already" in done.skip_message


def test_rescoring_reads_the_typed_copy_after_the_file_is_archived(champion_home: Path) -> None:
    key = day(-1)
    write_cohort(champion_home, key, n=80)
    resources = {"stroke": StrokeSettings()}
    with dg.instance_for_test() as instance:
        assert dg.materialize(
            [daily_cohort, cohort_scores], partition_key=key, resources=resources, instance=instance
        ).success
        archive = champion_home / "archive"
        archive.mkdir()
        (champion_home / "incoming" / f"{key}.csv").rename(archive / f"{key}.csv")
        result = dg.materialize(
            [daily_cohort, cohort_scores],
            partition_key=key,
            selection=[cohort_scores],
            resources=resources,
            instance=instance,
        )
        assert result.success
        (check,) = result.get_asset_check_evaluations()
        assert check.passed and check.metadata["rows_in"].value == 80
    count = warehouse.query_df(
        "SELECT count(*) AS n FROM scores WHERE cohort_date = ?",
        [dt.date.fromisoformat(key)],
        settings=load_settings(),
    )
    assert int(count["n"].item()) == 80


# ------------------------------------------------------------------------------- retraining
def test_retraining_starts_once_per_window(champion_home: Path) -> None:
    drift_days(".xxx")
    with dg.instance_for_test() as instance:
        settings = {"retrain_drifted_days": 3, "retrain_window_days": 4}
        first = tick(drift_retraining, instance, **settings)
        (request,) = first.run_requests
        assert request.tags["stroke/trigger"] == "drift" and request.tags["stroke/champion"] == "1"
        assert request.tags["stroke/latest_day"] == day(-1)
        # The next tick (the run not even started yet) does not ask again: that window is used.
        second = tick(drift_retraining, instance, cursor=first.cursor, **settings)
        assert not second.run_requests
        assert f"counting days after {day(-1)}" in second.skip_message


def test_retraining_tick_reads_while_the_warehouse_is_written(champion_home: Path) -> None:
    """A long write during a tick (drift days rewritten in a loop) never fails or blocks it."""
    drift_days("xxx")
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            drift_days("xxx")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with dg.instance_for_test() as instance:
            cursor = None
            for _ in range(3):
                data = tick(drift_retraining, instance, cursor=cursor)
                cursor = data.cursor or cursor
                assert data.run_requests or data.skip_message
    finally:
        stop.set()
        thread.join()


# ----------------------------------------------------------------------------- failed runs
def test_failed_run_posts_to_the_webhook(stroke_home: Path) -> None:
    @dg.asset
    def broken() -> None:
        raise RuntimeError("the cohort file is unreadable")

    with Webhook() as hook, dg.instance_for_test() as instance:
        result = dg.materialize([broken], instance=instance, raise_on_error=False)
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name=run_failure_alert.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"stroke": StrokeSettings(alert_webhook=hook.url)},
        ).for_run_failure()
        run_failure_alert(context)
        (request,) = hook.requests
    text = json.loads(request["body"])["text"]
    assert "failed" in text and result.run_id in text and "broken" in text
