"""Silent (shadow) scoring as Dagster runs it: shadow slices beside the champion's, never in
`scores`; the live paired comparison once labels arrive; an inconclusive challenger judged again
on the pooled live days; a shadow failure that leaves the champion's day intact."""

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from stroke_dagster.core.settings import MODEL_NAME, load_settings
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import cohort_scores, daily_cohort
from stroke_dagster.defs.shadow import shadow_comparison, shadow_scores
from stroke_dagster.model import gate, registry
from stroke_dagster.scoring import shadow
from stroke_dagster.simulate.generator import simulate_patients
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-02-03"
RESOURCES = {"stroke": StrokeSettings()}


def write_day(home: Path, day: str, n: int = 1500, seed: int = 3) -> pd.DataFrame:
    """``incoming/<day>.csv`` and its labels ``labels/<day>.csv``; the labelled frame."""
    df = simulate_patients(n, seed=seed)
    df["id"] = [f"p{seed}-{i}" for i in range(n)]
    (home / "incoming").mkdir(exist_ok=True)
    (home / "labels").mkdir(exist_ok=True)
    df.drop(columns=["stroke"]).to_csv(home / "incoming" / f"{day}.csv", index=False, na_rep="N/A")
    df[["id", "stroke"]].to_csv(home / "labels" / f"{day}.csv", index=False)
    return df


def copy_version(source: str = "1", *, alias: str, outcome: str | None = None) -> str:
    """A new registered version with ``source``'s model and tags, given ``alias``."""
    settings = load_settings()
    client = registry.client(settings)
    old = client.get_model_version(MODEL_NAME, source)
    new = client.create_model_version(MODEL_NAME, old.source, run_id=old.run_id, tags=old.tags)
    client.set_registered_model_alias(MODEL_NAME, alias, new.version)
    if outcome is not None:
        client.set_model_version_tag(MODEL_NAME, new.version, "gate_outcome", outcome)
    return str(new.version)


def history(day: str = DAY) -> pd.DataFrame:
    return warehouse.query_df(
        "SELECT model_version, role, is_current, count(*) AS n FROM score_history "
        "WHERE cohort_date = ? GROUP BY ALL ORDER BY model_version",
        [dt.date.fromisoformat(day)],
        settings=load_settings(),
    )


def materialize(*assets, day: str = DAY, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(list(assets), partition_key=day, resources=RESOURCES, **kwargs)


def test_a_challenger_scores_in_shadow_and_is_promoted_on_live_evidence(
    champion_home: Path,
) -> None:
    labelled = write_day(champion_home, DAY)
    challenger = copy_version(alias="challenger", outcome=gate.INCONCLUSIVE)
    assert shadow.shadow_versions(load_settings()) == [challenger]

    assert materialize(daily_cohort, cohort_scores, shadow_scores).success
    rows = history()
    assert rows.to_dict("records") == [
        {"model_version": "1", "role": "champion", "is_current": True, "n": 1500},
        {"model_version": challenger, "role": "shadow", "is_current": False, "n": 1500},
    ]
    shown = warehouse.query_df(
        "SELECT DISTINCT model_version FROM scores", settings=load_settings()
    )
    assert shown["model_version"].tolist() == ["1"]  # the shadow slice is never shown

    result = materialize(shadow_comparison)
    assert result.success
    table = warehouse.query_df("SELECT * FROM shadow_comparison", settings=load_settings())
    assert len(table) == 1
    row = table.iloc[0]
    events = int(labelled["stroke"].sum())
    assert (row["shadow_version"], row["champion_version"]) == (challenger, "1")
    assert (row["n_patients"], row["n_events"]) == (1500, events)
    # the same model in both roles: identical AUCs, no difference, the same O/E
    assert row["shadow_auc"] == pytest.approx(row["champion_auc"])
    assert row["auc_difference"] == pytest.approx(0.0, abs=1e-12)
    assert row["shadow_oe"] == pytest.approx(row["champion_oe"])
    assert row["threshold_high"] > row["threshold_elevated"] > 0
    # net benefit at the high threshold, computed by hand from the champion's scores
    scores = warehouse.query_df(
        "SELECT patient_id, stroke_probability FROM scores", settings=load_settings()
    ).merge(labelled, left_on="patient_id", right_on="id")
    t = row["threshold_high"]
    flagged = scores["stroke_probability"] >= t
    y = scores["stroke"].astype(bool)
    expected = (flagged & y).mean() - (flagged & ~y).mean() * t / (1 - t)
    assert row["champion_net_benefit_high"] == pytest.approx(expected)

    # enough live events: the inconclusive challenger is judged again and promoted
    assert events >= load_settings().gate.min_events
    assert registry.resolve_alias("champion", settings=load_settings()) == challenger
    tags = registry.client(load_settings()).get_model_version(MODEL_NAME, challenger).tags
    assert tags["gate_outcome"] == gate.PROMOTE
    metadata = result.asset_materializations_for_node("shadow_comparison")[0].metadata
    assert metadata[f"v{challenger}_pooled"].value["n_patients"] == 1500


@pytest.mark.slow
def test_a_refused_challenger_keeps_scoring_in_shadow_but_is_not_judged_again(
    champion_home: Path,
) -> None:
    write_day(champion_home, DAY)
    challenger = copy_version(alias="challenger", outcome=gate.REFUSE)
    assert materialize(daily_cohort, cohort_scores, shadow_scores).success
    assert materialize(shadow_comparison).success
    settings = load_settings()
    assert shadow.rejudge(settings, challenger) is None
    assert registry.resolve_alias("champion", settings=settings) == "1"
    assert len(warehouse.query_df("SELECT * FROM shadow_comparison", settings=settings)) == 1


@pytest.mark.slow
def test_live_days_count_a_recurring_patient_once(champion_home: Path) -> None:
    """Two labelled days with the same patients: the pooled evidence holds each patient once."""
    first = write_day(champion_home, DAY, n=400, seed=5)
    second_day = "2026-02-04"
    write_day(champion_home, second_day, n=400, seed=5)  # the same ids and patients again
    challenger = copy_version(alias="shadow")
    for day in (DAY, second_day):
        assert materialize(daily_cohort, cohort_scores, shadow_scores, day=day).success
    settings = load_settings()
    days = shadow.live_days(settings, challenger, "1")
    assert [len(d) for d in days] == [400, 400]
    pooled = shadow.pooled(settings, challenger, "1")
    assert (pooled["n_days"], pooled["n_patients"]) == (2, 400)
    assert pooled["n_events"] == int(first["stroke"].sum())


def test_a_failing_shadow_version_leaves_the_champion_day_scored(champion_home: Path) -> None:
    write_day(champion_home, DAY, n=300)
    settings = load_settings()
    client = registry.client(settings)
    old = client.get_model_version(MODEL_NAME, "1")
    tags = {**old.tags, "risk_thresholds": '{"elevated": 0.9, "high": 0.1}'}  # unusable
    broken = client.create_model_version(MODEL_NAME, old.source, run_id=old.run_id, tags=tags)
    client.set_registered_model_alias(MODEL_NAME, "shadow", broken.version)

    result = materialize(daily_cohort, cohort_scores, shadow_scores, raise_on_error=False)
    assert not result.success
    steps = {e.step_key: e.event_type_value for e in result.all_events if e.is_step_failure}
    assert set(steps) == {"shadow_scores"}
    # an unusable version fails the same way every time: not retried
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert history().to_dict("records") == [
        {"model_version": "1", "role": "champion", "is_current": True, "n": 300}
    ]


def test_a_shadow_slice_never_replaces_the_current_slice_of_the_same_version(
    champion_home: Path,
) -> None:
    """A version promoted while its shadow scoring ran: the shadow write of the very slice the
    champion's rescoring made current keeps it current (the day is never left without scores)."""
    from stroke_dagster.scoring import batch as scoring

    write_day(champion_home, DAY, n=200)
    settings = load_settings()
    model = registry.load_model("1", settings=settings)
    path = champion_home / "incoming" / f"{DAY}.csv"
    scoring.score_file(path, model, cohort_date=DAY, settings=settings)
    scoring.score_file(path, model, cohort_date=DAY, role="shadow", settings=settings)
    assert history().to_dict("records") == [
        {"model_version": "1", "role": "champion", "is_current": True, "n": 200}
    ]
    probabilities = warehouse.query_df("SELECT stroke_probability FROM scores", settings=settings)[
        "stroke_probability"
    ]
    assert np.isfinite(probabilities).all() and len(probabilities) == 200


def test_automation_runs_shadow_scoring_after_the_champion_and_not_on_a_rescore(
    stroke_home: Path,
) -> None:
    """Through Dagster's own evaluation: a new cohort is scored in shadow in the same run as the
    champion's scores (after them: they are its upstream); a champion rescoring does not re-run
    it; labels then bring the comparison; a corrected file is scored in shadow again."""
    from _automation import project_defs, requested

    from stroke_dagster.defs.sources import champion_model, cohort_labels, incoming_cohort

    defs, key = project_defs(), "2026-01-07"

    def report(*assets: dg.AssetsDefinition | dg.AssetSpec) -> None:
        for asset in assets:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset.key, partition=key))

    def evaluate(cursor: object = None) -> dg.EvaluateAutomationConditionsResult:
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetObservation(champion_model.key))
        report(incoming_cohort)
        result = evaluate()
        plan = requested(result)
        assert plan["cohort_scores"] == plan["shadow_scores"] == [key]
        assert "shadow_comparison" not in plan  # no labels yet
        report(daily_cohort, cohort_scores, shadow_scores)
        result = evaluate(result.cursor)
        assert "shadow_scores" not in requested(result)
        report(cohort_scores)  # a new champion rescored the day
        result = evaluate(result.cursor)
        assert "shadow_scores" not in requested(result)
        report(cohort_labels)
        result = evaluate(result.cursor)
        assert requested(result).get("shadow_comparison") == [key]
        report(shadow_comparison)
        report(incoming_cohort)  # a corrected file: validated, scored, and in shadow again
        result = evaluate(result.cursor)
        plan = requested(result)
        assert plan["daily_cohort"] == plan["shadow_scores"] == [key]


def test_feedback_cannot_name_a_shadow_score(champion_home: Path) -> None:
    """Clinicians never see shadow scores: feedback on one is refused, on the champion's kept."""
    from stroke_dagster.audit import feedback
    from stroke_dagster.scoring import batch as scoring

    write_day(champion_home, DAY, n=50)
    settings = load_settings()
    shadow_version = copy_version(alias="shadow")
    path = champion_home / "incoming" / f"{DAY}.csv"
    scoring.score_file(
        path, registry.load_model("1", settings=settings), cohort_date=DAY, settings=settings
    )
    scoring.score_file(
        path,
        registry.load_model(shadow_version, settings=settings),
        cohort_date=DAY,
        role="shadow",
        settings=settings,
    )
    wh = warehouse.of(settings)
    day = dt.date.fromisoformat(DAY)

    def send(version: str) -> dict:
        item = feedback.Feedback(
            "accepted", cohort_date=day, patient_id="p3-0", model_version=version
        )
        return feedback.record(wh, item, requester="test")

    with pytest.raises(feedback.FeedbackError) as refused:
        send(shadow_version)
    assert refused.value.status == 404
    assert send("1")["model_version"] == "1"
