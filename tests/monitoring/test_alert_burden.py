"""Alert burden on a real warehouse and through real Dagster runs: tier shares and alerts per 100,
PPV / sensitivity / NNE against hand-computed values, overrides from feedback rows, the band
check (inside, outside, too little reference) and the automation that reruns it on labels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from _automation import project_defs, requested

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs import governance
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.sources import cohort_labels
from stroke_dagster.monitoring.alert_burden import burden_band, day_burden, write_burden
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-02-02"
VERSION = "3"
# Patients 1-5 low, 6-8 elevated, 9-10 high: shares 0.5 / 0.3 / 0.2, 2 alerts in 10 patients.
TIERS = {**dict.fromkeys("12345", "low"), **dict.fromkeys("678", "elevated"), "9": "high"}
TIERS["10"] = "high"
PROBABILITY = {"low": 0.02, "elevated": 0.10, "high": 0.40}


def _score(day: str, tiers: dict[str, str], version: str = VERSION) -> None:
    frame = pd.DataFrame(
        {
            "patient_id": list(tiers),
            "stroke_probability": [PROBABILITY[t] for t in tiers.values()],
            "risk_tier": list(tiers.values()),
            "model_name": "StrokeRF",
            "model_version": version,
            "scored_at": pd.Timestamp("2026-02-03T02:00:00Z"),
        }
    )
    warehouse.replace_partition("score_history", day, frame, settings=load_settings())


def _labels(home: Path, day: str) -> None:
    """Strokes: 2 (low), 7 (elevated), 9 (high); 5 has no usable label; 99 was not scored."""
    strokes = {"1": "0", "2": "1", "3": "0", "4": "0", "5": "N/A", "6": "0", "7": "1"}
    strokes |= {"8": "0", "9": "1", "10": "0", "99": "1"}
    (home / "labels").mkdir(exist_ok=True)
    frame = pd.DataFrame({"id": list(strokes), "stroke": list(strokes.values())})
    frame.to_csv(home / "labels" / f"{day}.csv", index=False)


def _feedback(day: str, rows: list[tuple[str, str, str | None, str, int]]) -> None:
    """``(feedback_id, patient_id, model_version, action, minute)`` records of ``day``."""
    frame = pd.DataFrame(
        {
            "feedback_id": [r[0] for r in rows],
            "patient_id": [r[1] for r in rows],
            "model_version": [r[2] for r in rows],
            "action": [r[3] for r in rows],
            "reason_code": ["not_indicated" if r[3] == "overridden" else None for r in rows],
            "recorded_at": [
                pd.Timestamp("2026-02-03T09:00:00Z") + pd.Timedelta(minutes=r[4]) for r in rows
            ],
            "source": "api",
        }
    )
    warehouse.replace_partition("feedback", day, frame, settings=load_settings())


def _burden(day: str, **alert_burden: object) -> pd.Series:
    settings = load_settings()
    if alert_burden:
        settings = settings.replace(
            alert_burden={**settings.alert_burden.model_dump(), **alert_burden}
        )
    frame = day_burden(day, settings)
    write_burden(day, frame, settings)
    assert len(frame) == 1
    return frame.iloc[0]


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == governance.BAND_CHECK
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    return evaluation


def _materialize(instance: dg.DagsterInstance, day: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [governance.alert_burden],
        instance=instance,
        partition_key=day,
        resources={"stroke": StrokeSettings()},
    )
    assert result.success  # a WARN check does not fail the run
    return result


def test_tier_shares_and_alerts_per_100_on_a_known_day(stroke_home: Path) -> None:
    _score(DAY, TIERS)
    row = _burden(DAY)
    assert (row["n_patients"], row["n_low"], row["n_elevated"], row["n_high"]) == (10, 5, 3, 2)
    assert (row["share_low"], row["share_elevated"], row["share_high"]) == (0.5, 0.3, 0.2)
    assert (row["alert_from_tier"], row["n_alerts"], row["alerts_per_100"]) == ("high", 2, 20.0)
    assert pd.isna(row["n_labelled"]) and pd.isna(row["ppv_high"])  # no labels yet
    elevated = _burden(DAY, alert_from_tier="elevated")  # elevated and high alert
    assert (elevated["n_alerts"], elevated["alerts_per_100"]) == (5, 50.0)
    stored = warehouse.query_df("SELECT * FROM alert_burden", settings=load_settings())
    assert len(stored) == 1 and stored["n_alerts"].item() == 5  # the day replaced, not added


def test_ppv_sensitivity_and_nne_once_labels_arrive(stroke_home: Path) -> None:
    _score(DAY, TIERS)
    with dg.instance_for_test() as instance:
        before = _materialize(instance, DAY).asset_materializations_for_node("alert_burden")
        assert before[0].metadata["labelled"].value is False
        _labels(stroke_home, DAY)
        after = _materialize(instance, DAY).asset_materializations_for_node("alert_burden")
    glance = after[0].metadata
    assert glance["labelled"].value is True and glance["ppv_high"].value == 0.5
    row = warehouse.query_df("SELECT * FROM alert_burden", settings=load_settings()).iloc[0]
    # 9 labelled (5 unusable, 99 unscored), 3 strokes: 2, 7, 9.
    assert (row["n_labelled"], row["n_positive"]) == (9, 3)
    # At or above elevated: 6, 7, 8, 9, 10 flagged, 7 and 9 strokes.
    assert (row["flagged_elevated"], row["tp_elevated"]) == (5, 2)
    assert row["ppv_elevated"] == pytest.approx(0.4)
    assert row["sensitivity_elevated"] == pytest.approx(2 / 3)
    assert row["nne_elevated"] == pytest.approx(2.5)
    # High: 9, 10 flagged, 9 a stroke.
    assert (row["flagged_high"], row["tp_high"]) == (2, 1)
    assert row["ppv_high"] == pytest.approx(0.5)
    assert row["sensitivity_high"] == pytest.approx(1 / 3)
    assert row["nne_high"] == pytest.approx(2.0)


def test_overrides_are_counted_from_feedback(stroke_home: Path) -> None:
    _score(DAY, TIERS)
    _feedback(
        DAY,
        [
            ("f1", "9", VERSION, "overridden", 0),
            ("f2", "10", VERSION, "accepted", 5),
            ("f2", "10", VERSION, "accepted", 6),  # re-sent: counted once
            ("f3", "10", None, "overridden", 1),  # names no version; earlier than f2
            ("f4", "6", VERSION, "overridden", 0),  # elevated: not an alert
            ("f5", "9", "2", "overridden", 0),  # another version's flag
        ],
    )
    row = _burden(DAY)
    assert (row["n_feedback"], row["n_overridden"]) == (4, 3)  # f1, f2, f3, f4
    # Alerts 9 and 10 both answered; 9's latest overrode, 10's latest (f2) accepted.
    assert (row["alerts_with_feedback"], row["alerts_overridden"]) == (2, 1)
    assert row["override_rate"] == pytest.approx(0.5)


def _high_share_day(day: str, high: int, n: int = 20) -> None:
    _score(day, {str(i): "high" if i < high else "low" for i in range(n)})


def test_band_check_passes_inside_warns_outside_and_waits_for_reference(
    stroke_home: Path,
) -> None:
    first = dt.date(2026, 2, 1)
    reference = [first + dt.timedelta(days=i) for i in range(7)]  # Feb 1-7
    for d, high in zip(reference, [4, 5, 4, 5, 4, 5, 4], strict=True):  # shares .20 / .25
        _high_share_day(d.isoformat(), high)
        write_burden(d.isoformat(), day_burden(d.isoformat(), load_settings()), load_settings())
    # mean 0.2214, sd 0.0267: the band is about 0.141-0.302
    _high_share_day("2026-02-08", 5)  # 0.25
    _high_share_day("2026-02-09", 10)  # 0.50
    with dg.instance_for_test() as instance:
        inside = _check(_materialize(instance, "2026-02-08"))
        assert inside.passed, inside.description
        assert inside.metadata["reference_days"].value == 7
        assert inside.metadata["high_share_pct"].value == 25.0
        assert inside.metadata["band_low_pct"].value == pytest.approx(14.1, abs=0.1)
        assert inside.metadata["band_high_pct"].value == pytest.approx(30.2, abs=0.1)

        outside = _check(_materialize(instance, "2026-02-09"))
        assert not outside.passed
        assert "50.0% above the band" in outside.description
        assert outside.metadata["reference_days"].value == 8  # Feb 1-8, the day itself excluded

        short = _check(_materialize(instance, "2026-02-07"))  # Feb 1-6 before it
        assert short.passed
        assert short.description.startswith("not enough reference days: 6 of the 7")
        assert "band_low_pct" not in short.metadata

        (latest,) = instance.fetch_materializations(governance.alert_burden.key, limit=1).records
        burden = latest.asset_materialization.metadata  # Feb 7: 4 of 20 high
        assert burden["high_pct"].value == 20.0 and burden["alerts_per_100"].value == 20.0
    band = burden_band("2026-02-09", load_settings().replace(alert_burden={"band_k": 12.0}))
    assert band.passed  # a wider band (k = 12: up to 54.6 %) takes it in


def test_runs_once_scored_and_again_when_labels_arrive(stroke_home: Path) -> None:
    defs = project_defs()
    scores = dg.AssetKey("cohort_scores")
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(scores, partition=DAY))
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(first).get("alert_burden") == [DAY]  # no labels: runs anyway
        assert "performance_metrics" not in requested(first)  # which waits for them
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert "alert_burden" not in requested(again)  # requested once
        instance.report_runless_asset_event(
            dg.AssetMaterialization(cohort_labels.key, partition=DAY)
        )
        labelled = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=again.cursor
        )
        assert requested(labelled).get("alert_burden") == [DAY]
