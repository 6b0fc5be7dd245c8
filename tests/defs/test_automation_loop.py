"""Fourteen simulated days through the loop, driven only by Dagster's own evaluation.

Each day its cohort file arrives (an older, sicker population from day 6 on) and, from day 3,
the previous day's labels. The sensors tick (``evaluate_tick``, their events stored as the
daemon stores them), the automation conditions are evaluated at that day's time
(``evaluate_automation_conditions``) and every requested run is executed in process against the
same instance, until nothing more is requested. Then: every day is scored once, drift follows
its scores, one retraining starts, the gate promotes its version and the latest day is rescored
with it (and its drift checked again), and no run fails.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest
from _automation import project_defs, tick

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.retraining import drift_retraining
from stroke_dagster.defs.sources import champion_rescoring, file_arrivals
from stroke_dagster.model import registry
from stroke_dagster.simulate.generator import simulate_patients, write_patients
from stroke_dagster.warehouse import store as warehouse

N_DAYS, SHIFT_FROM, LABELS_FROM, ROWS = 14, 6, 3, 300
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [(TODAY - dt.timedelta(days=N_DAYS - i)).isoformat() for i in range(1, N_DAYS + 1)]
TRAINING_CONFIG = {"ops": {"tuned_model": {"config": {"n_trials": 2, "cv_folds": 3}}}}


def drop_day(home: Path, number: int) -> None:
    """Day ``number`` (1-based): its cohort file; from LABELS_FROM, yesterday's labels."""
    key = DAYS[number - 1]
    frame = simulate_patients(ROWS, seed=100 + number, id_start=number * 10_000)
    if number >= SHIFT_FROM:  # the population shifts: older, with higher glucose
        frame["age"] = (frame["age"] + 20).clip(upper=100)
        frame["avg_glucose_level"] = frame["avg_glucose_level"] * 1.3
    write_patients(frame.drop(columns="stroke"), home / "incoming" / f"{key}.csv")
    pending = home / "outcomes"  # outcomes are known later: labels arrive the next day
    pending.mkdir(exist_ok=True)
    frame[["id", "stroke"]].to_csv(pending / f"{key}.csv", index=False)
    if number > LABELS_FROM:
        (home / "labels").mkdir(exist_ok=True)
        previous = DAYS[number - 2]
        (pending / f"{previous}.csv").rename(home / "labels" / f"{previous}.csv")


def run_requested(result: dg.EvaluateAutomationConditionsResult, instance) -> int:  # noqa: ANN001
    """Execute the runs of one automation evaluation (one run per day, as the sensor does)."""
    by_day: dict[str, list[dg.AssetKey]] = defaultdict(list)
    unpartitioned: list[dg.AssetKey] = []  # e.g. the daily warehouse maintenance (on a cron)
    for item in result.results:
        if not item.true_subset.is_partitioned:
            if not item.true_subset.is_empty:
                unpartitioned.append(item.key)
            continue
        for key in item.true_subset.expensively_compute_partition_keys():
            by_day[key].append(item.key)
    defs = project_defs()
    for key, assets in sorted(by_day.items()):
        job = defs.resolve_implicit_job_def_def_for_assets(assets)
        job.execute_in_process(
            instance=instance, partition_key=key, asset_selection=assets, raise_on_error=False
        )
    if unpartitioned:
        job = defs.resolve_implicit_job_def_def_for_assets(unpartitioned)
        job.execute_in_process(instance=instance, asset_selection=unpartitioned)
    return len(by_day) + bool(unpartitioned)


def materializations(instance, asset: str) -> dict[str, list]:  # noqa: ANN001
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    out: dict[str, list] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.storage_id):
        out[record.partition_key].append(record)
    return out


@pytest.mark.slow
def test_fourteen_days_run_themselves(
    champion_home: Path, synthetic_train_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "STROKE_RAW_CSV": str(synthetic_train_csv),
        "STROKE_RETRAIN_DRIFTED_DAYS": "3",
        "STROKE_RETRAIN_WINDOW_DAYS": "5",
        "STROKE_RETRAIN_COOLDOWN_HOURS": "1000",
        "STROKE_GATE_TOLERANCE": "1.0",  # here the gate promotes any sound retrain
        "STROKE_GATE_MIN_EVENTS": "5",
        "STROKE_GATE_LOG_LOSS_MARGIN": "1.0",
        "STROKE_GATE_OE_MARGIN": "10",
        "STROKE_DRIFT_BACKEND": "scipy",
        "STROKE_COHORT_DUE_HOUR": "23",
    }.items():
        monkeypatch.setenv(name, value)
    defs = project_defs()
    training = defs.resolve_job_def("training_job")
    cursors: dict[str, str | None] = defaultdict(lambda: None)
    automation_cursor = None
    retrains = []
    with dg.instance_for_test() as instance:

        def sensor_tick(sensor) -> dg.SensorResult:  # noqa: ANN001
            data = tick(sensor, instance, cursor=cursors[sensor.name])
            cursors[sensor.name] = data.cursor or cursors[sensor.name]
            return data

        for number in range(1, N_DAYS + 1):
            drop_day(champion_home, number)
            now = dt.datetime.fromisoformat(DAYS[number - 1]).replace(hour=8, tzinfo=dt.UTC)
            for _ in range(5):  # until the day settles
                sensor_tick(file_arrivals)
                started = 0
                for request in sensor_tick(champion_rescoring).run_requests:
                    started += 1
                    defs.resolve_implicit_job_def_def_for_assets(
                        request.asset_selection
                    ).execute_in_process(
                        instance=instance,
                        partition_key=request.partition_key,
                        asset_selection=request.asset_selection,
                        tags=request.tags,
                    )
                for request in sensor_tick(drift_retraining).run_requests:
                    started += 1
                    retrains.append(number)
                    training.execute_in_process(
                        instance=instance, run_config=TRAINING_CONFIG, tags=request.tags
                    )
                result = dg.evaluate_automation_conditions(
                    defs=defs, instance=instance, cursor=automation_cursor, evaluation_time=now
                )
                automation_cursor = result.cursor
                started += run_requested(result, instance)
                if not started:
                    break
                now += dt.timedelta(minutes=1)

        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert not failed, [run.job_name for run in failed]
        cohorts = materializations(instance, "daily_cohort")
        scores = materializations(instance, "cohort_scores")
        drift = materializations(instance, "drift_metrics")
        performance = materializations(instance, "performance_metrics")
        (model,) = materializations(instance, "registered_model")[None]

    # Every day validated once and scored once by the daily path.
    assert sorted(cohorts) == DAYS and all(len(v) == 1 for v in cohorts.values())
    assert sorted(scores) == DAYS
    # Drift follows the scores of every day (and the rescoring); shifted days drift.
    for key in DAYS:
        assert drift[key] and drift[key][0].storage_id > scores[key][0].storage_id
        assert drift[key][-1].storage_id > scores[key][-1].storage_id
    flags = [drift[k][0].asset_materialization.metadata["is_drift"].value for k in DAYS]
    assert all(flags[SHIFT_FROM - 1 :])
    # Exactly one retraining, on the first day 3 of the last 5 verdicts drifted (the shift
    # persisting; an unshifted day may drift by chance at 300 patients).
    first_due = next(n for n in range(1, N_DAYS + 1) if sum(flags[max(0, n - 5) : n]) >= 3)
    assert SHIFT_FROM + 1 <= first_due <= SHIFT_FROM + 2
    assert retrains == [first_due]
    new_version = str(model.asset_materialization.metadata["version"].value)
    assert model.asset_materialization.metadata["alias"].value == "champion"
    assert registry.resolve_alias("champion", settings=load_settings()) == new_version != "1"
    # The latest day scored when it was promoted was rescored with it, and only that day.
    rescored = {k: v for k, v in scores.items() if len(v) > 1}
    assert list(rescored) == [DAYS[first_due - 1]]
    ((rescored_day, versions),) = rescored.items()
    assert len(versions) == 2
    assert versions[-1].asset_materialization.metadata["model_version"].value == new_version
    stored = warehouse.query_df(
        "SELECT DISTINCT model_version FROM scores WHERE cohort_date = ?",
        [dt.date.fromisoformat(rescored_day)],
        settings=load_settings(),
    )
    assert list(stored["model_version"]) == [new_version]
    # Realized performance once the labels arrived (day 3's labels on day 4, ...).
    assert sorted(performance) == DAYS[LABELS_FROM - 1 : N_DAYS - 1]
