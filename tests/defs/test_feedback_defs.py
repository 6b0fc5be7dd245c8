"""Clinicians' feedback files in the daily loop: reported on arrival by file_arrivals, recorded by
the `feedback` asset (every row recorded or quarantined), and the alert burden of that day and of
the day before run again with it (Dagster's own sensor ticks and automation evaluation)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
from _automation import day, project_defs, requested, tick, write_cohort

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.governance import alert_burden, feedback
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import cohort_scores, daily_cohort
from stroke_dagster.defs.sources import champion_model, clinician_feedback, file_arrivals
from stroke_dagster.simulate.generator import simulate_patients
from stroke_dagster.warehouse import store as warehouse

RESOURCES = {"stroke": StrokeSettings()}
DAY = "2026-02-10"


def write_feedback(home: Path, key: str, rows: list[dict[str, str]]) -> Path:
    path = home / "feedback" / f"{key}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_feedback_file_is_reported_then_recorded_and_the_burden_follows(
    stroke_home: Path,
) -> None:
    defs = project_defs()
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetObservation(champion_model.key))
        for key in (day(-1), day(0)):  # both days arrived and scored
            write_cohort(stroke_home, key)
        first = tick(file_arrivals, instance, cohort_due_hour=23)
        baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert "feedback" not in requested(baseline)
        for key in (day(-1), day(0)):  # the day's run: scored, burden computed
            for asset in (daily_cohort, cohort_scores, alert_burden):
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset.key, partition=key)
                )
        baseline = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=baseline.cursor
        )
        assert "alert_burden" not in requested(baseline)

        write_feedback(stroke_home, day(0), [{"patient_id": "1", "action": "accepted"}])
        (stroke_home / "feedback" / "notes.csv").write_text("action\naccepted\n")
        arrived = tick(file_arrivals, instance, first.cursor, cohort_due_hour=23)
        reported = {
            (e.asset_key.to_user_string(), e.partition)
            for e in arrived.asset_events
            if isinstance(e, dg.AssetMaterialization)
        }
        assert reported == {("clinician_feedback", day(0))}
        assert "skipped feedback/notes.csv: name is not a day" in arrived.skip_message

        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=baseline.cursor
        )
        plan = requested(result)
        # recorded, then (same run, downstream) the burden of that day and of the day before:
        # feedback on a day's flags comes that day or the next
        assert plan == {"feedback": [day(0)], "alert_burden": [day(-1), day(0)]}


def test_the_feedback_asset_records_or_quarantines_every_row(champion_home: Path) -> None:
    cohort = simulate_patients(120, seed=4, with_label=False)
    (champion_home / "incoming").mkdir(exist_ok=True)
    cohort.to_csv(champion_home / "incoming" / f"{DAY}.csv", index=False, na_rep="N/A")
    assert dg.materialize(
        [daily_cohort, cohort_scores], partition_key=DAY, resources=RESOURCES
    ).success
    settings = load_settings()
    scores = warehouse.query_df("SELECT patient_id, risk_tier FROM scores", settings=settings)
    first, second = scores["patient_id"].iloc[0], scores["patient_id"].iloc[1]
    write_feedback(
        champion_home,
        DAY,
        [
            {"cohort_date": DAY, "patient_id": first, "action": "accepted", "reason_code": ""},
            {
                "cohort_date": DAY,
                "patient_id": second,
                "action": "overridden",
                "reason_code": "already_on_anticoagulant",
            },
            {"cohort_date": DAY, "patient_id": "no-such-patient", "action": "accepted"},
            {"cohort_date": DAY, "patient_id": first, "action": "ignored"},
        ],
    )
    result = dg.materialize(
        [feedback],
        partition_key=DAY,
        resources=RESOURCES,
        selection=[feedback.key],
    )
    assert result.success
    metadata = result.asset_materializations_for_node("feedback")[0].metadata
    assert (metadata["rows_in"].value, metadata["recorded"].value) == (4, 2)
    assert metadata["quarantined"].value == 2

    recorded = warehouse.query_df(
        "SELECT patient_id, action, reason_code, model_version, source FROM feedback "
        "ORDER BY action",
        settings=settings,
    )
    assert recorded["patient_id"].tolist() == [first, second]
    assert recorded["action"].tolist() == ["accepted", "overridden"]
    assert recorded["model_version"].tolist() == ["1", "1"]  # linked to the score shown
    assert set(recorded["source"]) == {f"csv:{DAY}.csv"}
    quarantined = warehouse.query_df(
        "SELECT patient_id, reason FROM quarantine WHERE source = 'feedback' ORDER BY patient_id",
        settings=settings,
    )
    assert len(quarantined) == 2
    assert quarantined["reason"].str.len().min() > 0

    # importing the file again replaces its rows
    assert dg.materialize([feedback], partition_key=DAY, resources=RESOURCES).success
    again = warehouse.query_df("SELECT count(*) AS n FROM feedback", settings=settings)
    assert int(again["n"].item()) == 2

    burden = dg.materialize([alert_burden], partition_key=DAY, resources=RESOURCES)
    assert burden.success
    row = warehouse.query_df(
        "SELECT n_feedback, n_overridden FROM alert_burden WHERE cohort_date = ?",
        [dt.date.fromisoformat(DAY)],
        settings=settings,
    )
    assert (int(row["n_feedback"].item()), int(row["n_overridden"].item())) == (2, 1)


def test_a_missing_feedback_file_fails_once_with_one_line(stroke_home: Path) -> None:
    result = dg.materialize(
        [feedback], partition_key=DAY, resources=RESOURCES, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert f"feedback/{DAY}.csv" in message and "\n" not in message.strip()
    assert clinician_feedback.key not in result.asset_materializations_for_node("feedback")
