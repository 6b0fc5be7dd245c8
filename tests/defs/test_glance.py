"""What Dagster's UI shows of the loop: readable numbers, links, row counts, column schemas.

Two days go through the daily assets (one shifted, so it drifts; one labelled), the champion
is observed by its sensor, and everything the instance then holds is read back as the UI reads
it: every float of every materialization, observation and check has at most 4 significant
digits, the champion observation has its version and links, and every table-like asset has a
row count and a column schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from _automation import project_defs, tick

from stroke_dagster.defs.metadata import COLUMN_SCHEMA, ROW_COUNT, round_sig
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.sources import champion_model, champion_rescoring
from stroke_dagster.simulate.generator import simulate_patients, write_patients

DAYS = ("2026-03-01", "2026-03-02")
DAILY = (
    "daily_cohort",
    "cohort_scores",
    "drift_metrics",
    "performance_metrics",
    "label_free_estimates",
    "daily_calibration",
)
TABLES = (*DAILY, "raw_patients", "clean_patients", "labelled_cohorts")


def _floats(value: Any) -> list[float]:
    """Every float inside a metadata value (plain, JSON, table records)."""
    if isinstance(value, dg.TableMetadataValue):
        return [f for record in value.records for f in _floats(record.data)]
    if isinstance(value, dg.JsonMetadataValue):
        return _floats(value.data)
    if isinstance(value, dg.FloatMetadataValue):
        return _floats(value.value)
    if isinstance(value, dg.MetadataValue | bool):
        return []
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list | tuple):
        return [f for v in value for f in _floats(v)]
    return []


def _drop(home: Path, day: str, shifted: bool) -> None:
    patients = simulate_patients(300, seed=hash(day) % 1000)
    if shifted:
        patients["age"] = 82.0
        patients["avg_glucose_level"] = patients["avg_glucose_level"] + 90
    (home / "incoming").mkdir(exist_ok=True)
    write_patients(patients.drop(columns=["stroke"]), home / "incoming" / f"{day}.csv")
    (home / "labels").mkdir(exist_ok=True)
    if not shifted:
        labels = pd.DataFrame({"id": patients["id"], "stroke": patients["stroke"]})
        labels.to_csv(home / "labels" / f"{day}.csv", index=False)


def test_the_ui_reads_at_a_glance(champion_home: Path) -> None:
    defs = project_defs()
    graph = defs.resolve_asset_graph()
    selection = [defs.get_assets_def(key) for key in DAILY]
    with dg.instance_for_test() as instance:
        for day, shifted in zip(DAYS, (False, True), strict=True):
            _drop(champion_home, day, shifted)
            labelled = ("performance_metrics", "daily_calibration")
            result = dg.materialize(
                [a for a in selection if shifted is False or a.key.path[-1] not in labelled],
                partition_key=day,
                resources={"stroke": StrokeSettings()},
                instance=instance,
                raise_on_error=False,
            )
            failed = [e.step_key for e in result.get_step_failure_events()]
            assert not failed, failed
        tick(champion_rescoring, instance)

        # the champion at a glance
        (observation,) = instance.fetch_observations(champion_model.key, limit=1).records
        glance = observation.asset_observation.metadata
        assert glance["version"].value == "1"
        assert isinstance(glance["mlflow_version"], dg.UrlMetadataValue)
        assert glance["mlflow_version"].value.endswith("/#/models/StrokeRF/versions/1")
        assert isinstance(glance["registered_by_run"], dg.UrlMetadataValue)
        assert glance["gate_reason"].value and glance["champion_since"].value
        assert 0.5 < glance["holdout_roc_auc"].value <= 1.0
        assert glance["live_labelled_days"].value == 1
        assert "live_roc_auc" in glance and "live_observed_expected" in glance

        # every number readable, everywhere the UI shows one
        records = []
        for key in graph.get_all_asset_keys():
            records += instance.fetch_materializations(key, limit=100).records
        records += instance.fetch_observations(champion_model.key, limit=10).records
        checked = 0
        for record in records:
            event = record.asset_materialization or record.asset_observation
            for name, value in event.metadata.items():
                for number in _floats(value):
                    checked += 1
                    assert round_sig(number) == number, (event.asset_key, name, number)
        assert checked > 20
        for check in instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ):
            evaluation = check.event_log_entry.dagster_event.event_specific_data
            for name, value in evaluation.metadata.items():
                for number in _floats(value):
                    assert round_sig(number) == number, (evaluation.check_name, name, number)

        # the drifted day is visible per day in the check history
        drift = dg.AssetCheckKey(dg.AssetKey("drift_metrics"), "no_drift")
        history = instance.event_log_storage.get_asset_check_execution_history(drift, limit=10)
        by_day = {r.partition: r.event.dagster_event.event_specific_data.passed for r in history}
        assert set(by_day) == set(DAYS) and by_day["2026-03-02"] is False  # one verdict a day

        # table assets: a row count on every materialization, a column schema in the catalog
        for name in DAILY:
            key = dg.AssetKey(name)
            assert instance.fetch_materializations(key, limit=1).records, name
            for record in instance.fetch_materializations(key, limit=10).records:
                assert ROW_COUNT in record.asset_materialization.metadata, name
        for name in TABLES:
            schema = graph.get(dg.AssetKey(name)).metadata[COLUMN_SCHEMA]
            schema = getattr(schema, "schema", schema)
            assert len(schema.columns) >= 5, name

    # descriptions render: no bare <day> for Dagster's Markdown to swallow
    for node in graph.asset_nodes:
        assert "<day>" not in re.sub(r"`[^`]*`", "", node.description or ""), node.key

    # lineage the UI draws
    assert dg.AssetKey("registered_model") in graph.get(champion_model.key).parent_keys
    assert dg.AssetKey("cohort_labels") in graph.get(dg.AssetKey("labelled_cohorts")).parent_keys
