"""The service's parts without a server: schema-built request model, exact fast scoring path,
privacy-safe errors, the telemetry writer and readers, the inference_log view, the daily asset."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from stroke_dagster.api.config import ApiConfig
from stroke_dagster.api.errors import describe_errors
from stroke_dagster.api.models import EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI, Patient
from stroke_dagster.api.scorer import Scorer, probe_records, records_frame
from stroke_dagster.api.telemetry import TelemetryWriter, scoring_summary
from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import (
    CATEGORICAL_FIELDS,
    FEATURES,
    ID,
    NUMERIC_FIELDS,
    REQUIRED_COLUMNS,
)
from stroke_dagster.core.settings import load_settings
from stroke_dagster.warehouse.telemetry import read_day, request_cohort, summarize_day

# -- request model --------------------------------------------------------------------------


def test_patient_model_is_generated_from_the_schema() -> None:
    properties = Patient.model_json_schema()["properties"]
    assert list(properties) == [ID, *FEATURES]
    for field in CATEGORICAL_FIELDS:
        assert properties[field.name]["enum"] == list(field.categories)
    for field in NUMERIC_FIELDS:
        spec = properties[field.name]
        bounds = spec["anyOf"][0] if field.nullable else spec
        assert (bounds["minimum"], bounds["maximum"]) == (field.low, field.high)
    for example in (EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI):
        Patient.model_validate(example)


def test_patient_model_accepts_exactly_what_its_json_schema_describes() -> None:
    """Strict types, so the OpenAPI document (the model's JSON Schema) tells the whole truth."""
    import jsonschema_rs

    schema = Patient.model_json_schema()
    validator = jsonschema_rs.validator_for(schema)
    accepted = [
        {**EXAMPLE_PATIENT, "bmi": "N/A", "id": 4711, "hypertension": 1.0},
        {k: v for k, v in EXAMPLE_PATIENT.items() if k not in {ID, "bmi"}},
        {**EXAMPLE_PATIENT, "age": 0, "avg_glucose_level": 700},
    ]
    refused = [
        {**EXAMPLE_PATIENT, "gender": " male "},
        {**EXAMPLE_PATIENT, "age": "58"},
        {**EXAMPLE_PATIENT, "hypertension": True},
        {**EXAMPLE_PATIENT, "hypertension": "1"},
        {**EXAMPLE_PATIENT, "heart_disease": 0.5},
        {**EXAMPLE_PATIENT, "id": 2**63},
        {**EXAMPLE_PATIENT, "id": "x" * 129},
        {**EXAMPLE_PATIENT, "bmi": "unknown"},
        {**EXAMPLE_PATIENT, "extra": 1},
    ]
    for body in accepted:
        assert validator.is_valid(body), body
        Patient.model_validate_json(json.dumps(body))
    for body in refused:
        assert not validator.is_valid(body), body
        with pytest.raises(ValidationError):
            Patient.model_validate_json(json.dumps(body))
    record = Patient.model_validate_json(json.dumps(accepted[0])).record()
    assert (record["bmi"], record[ID], record["hypertension"]) == (None, "4711", 1)
    assert Patient.model_validate(accepted[1]).record()[ID] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("age", -3.5), ("bmi", 4.25), ("work_type", "astronaut-x"), ("heart_disease", 0.5)],
)
def test_errors_name_the_field_and_never_carry_the_value(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Patient.model_validate({**EXAMPLE_PATIENT, field: value})
    described = describe_errors(caught.value.errors())
    assert [d["field"] for d in described] == [field]  # one entry, whatever the union members
    assert str(value) not in repr(described)
    in_list = describe_errors([{**e, "loc": (3, *e["loc"])} for e in caught.value.errors()])
    assert in_list[0]["row"] == 3


def test_config_rejects_malformed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROKE_API_MAX_BODY", "lots")
    with pytest.raises(InputError, match="STROKE_API_MAX_BODY"):
        _ = load_settings().api
    monkeypatch.setenv("STROKE_API_MAX_BODY", "2048")
    monkeypatch.setenv("STROKE_TELEMETRY", "0")
    config = load_settings().api
    assert isinstance(config, ApiConfig)
    assert (config.max_body, config.telemetry, config.telemetry_features) == (2048, False, False)


# -- scoring ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_path_gives_exactly_the_pipeline_probabilities(champion_home: Path) -> None:
    from stroke_dagster.model.registry import load_model
    from stroke_dagster.simulate.generator import simulate_patients

    model = load_model("champion", settings=load_settings())
    scorer = Scorer(model.pipeline)
    assert scorer.fast
    patients = simulate_patients(300, seed=21, with_label=False)
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in patients[list(FEATURES)].to_dict(orient="records")
    ]
    records += probe_records(300, seed=4)
    sequential = scorer.pipeline.predict_proba(records_frame(records))[:, 1]  # n_jobs=1
    assert np.array_equal(scorer.predict(records), sequential)
    assert np.array_equal(
        np.concatenate([scorer.predict([r]) for r in records[:30]]), sequential[:30]
    )
    # the registered pipeline (n_jobs=-1 sums trees in thread order): equal to the last ulp
    registered = model.pipeline.predict_proba(records_frame(records))[:, 1]
    np.testing.assert_allclose(scorer.predict(records), registered, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("flags", [False, True])
def test_compiled_path_is_exact_with_and_without_missing_flags(flags: bool) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from stroke_dagster.core.schema import BINARY_FEATURES, CATEGORICAL_FEATURES, NUMERIC_FEATURES

    records = probe_records(600, seed=2)
    frame = records_frame(records)
    y = ((frame["age"] > 70) | frame["bmi"].isna()).astype(int)
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=flags)),
            ("scale", StandardScaler()),
        ]
    )
    pipeline = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        ("num", numeric, [*NUMERIC_FEATURES, *BINARY_FEATURES]),
                        (
                            "cat",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                            list(CATEGORICAL_FEATURES),
                        ),
                    ]
                ),
            ),
            ("model", RandomForestClassifier(n_estimators=40, max_depth=6, random_state=0)),
        ]
    ).fit(frame, y)
    scorer = Scorer(pipeline)
    assert scorer.fast
    fresh = probe_records(400, seed=3)
    assert np.array_equal(scorer.predict(fresh), pipeline.predict_proba(records_frame(fresh))[:, 1])


def test_unknown_pipeline_shape_falls_back_to_the_pipeline() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    from stroke_dagster.core.schema import BINARY_FEATURES, CATEGORICAL_FEATURES, NUMERIC_FEATURES

    records = probe_records(200, seed=1)
    frame = records_frame(records)
    y = (frame["age"] > 60).astype(int)
    pipeline = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        ("num", SimpleImputer(), [*NUMERIC_FEATURES, *BINARY_FEATURES]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_FEATURES)),
                    ]
                ),
            ),
            ("model", DecisionTreeClassifier(max_depth=4, random_state=0)),
        ]
    ).fit(frame, y)
    scorer = Scorer(pipeline)
    assert not scorer.fast
    assert np.array_equal(scorer.predict(records), pipeline.predict_proba(frame)[:, 1])


# -- telemetry ----------------------------------------------------------------------------------


def _row(ts: dt.datetime, status: int, n: int, prob: float | None, tiers: tuple[int, int, int]):
    return {
        "ts": ts,
        "request_id": f"r{ts.timestamp()}-{status}",
        "method": "POST",
        "path": "/predict/batch" if n > 1 else "/predict",
        "status_code": status,
        "latency_ms": 2.0 + n,
        "n_patients": n,
        "mean_age": 50.0 if n else None,
        "mean_avg_glucose_level": 100.0 if n else None,
        "mean_bmi": None,
        "mean_probability": prob,
        "tier_low": tiers[0],
        "tier_elevated": tiers[1],
        "tier_high": tiers[2],
        "model_name": "StrokeRF" if n else None,
        "model_version": "3" if n else None,
        "worker_pid": 1,
    }


def test_writer_buffers_flushes_per_day_and_loses_nothing_on_close(stroke_home: Path) -> None:
    writer = TelemetryWriter(stroke_home, flush_seconds=3600, store_features=True)
    writer.start()
    day1 = dt.datetime(2026, 2, 1, 23, 59, tzinfo=dt.UTC)
    day2 = dt.datetime(2026, 2, 2, 0, 1, tzinfo=dt.UTC)
    writer.record(_row(day1, 200, 1, 0.1, (1, 0, 0)))
    writer.record(_row(day2, 200, 3, 0.3, (1, 1, 1)))
    assert writer.flush() == 2
    writer.record(_row(day2, 422, 0, None, (0, 0, 0)))
    writer.record(_row(day2, 200, 1, 0.5, (0, 0, 1)))
    writer.close()  # the flush thread would only run in an hour: close writes the rest
    assert writer.pending() == 0 and writer.rows_written == 4
    assert sorted(p.name for p in (stroke_home / "telemetry").iterdir()) == [
        "date=2026-02-01",
        "date=2026-02-02",
    ]
    assert not list((stroke_home / "telemetry").glob("**/.*.tmp"))
    assert len(read_day(load_settings(), "2026-02-02")) == 3

    summary = summarize_day(load_settings(), "2026-02-02")
    assert summary["request_count"] == 3
    assert summary["error_count"] == 1 and summary["error_rate"] == pytest.approx(1 / 3)
    assert summary["patients_scored"] == 4
    assert summary["mean_probability"] == pytest.approx((0.3 * 3 + 0.5) / 4)
    assert (summary["tier_low_count"], summary["tier_high_count"]) == (1, 2)
    assert summary["latency_p50_ms"] == pytest.approx(3.0)
    assert summarize_day(load_settings(), "2026-02-03")["request_count"] == 0


def test_disabled_writer_writes_nothing(stroke_home: Path) -> None:
    writer = TelemetryWriter(stroke_home, enabled=False)
    writer.start()
    writer.record(_row(dt.datetime.now(dt.UTC), 200, 1, 0.2, (1, 0, 0)))
    writer.close()
    assert not (stroke_home / "telemetry").exists()


def test_request_cohort_is_typed_raw_schema(stroke_home: Path) -> None:
    empty = request_cohort(load_settings(), "2026-02-02")
    assert list(empty.columns) == list(REQUIRED_COLUMNS) and empty.empty
    writer = TelemetryWriter(stroke_home, store_features=True)
    records = [dict(EXAMPLE_PATIENT), {**EXAMPLE_PATIENT_NO_BMI, ID: None}]
    probs = np.array([0.1, 0.2])
    summary = scoring_summary(records, probs, np.array(["low", "elevated"]), "StrokeRF", "1")
    assert summary["mean_age"] == pytest.approx((58.0 + 71.0) / 2)
    assert summary["mean_bmi"] == pytest.approx(29.4)  # missing bmi left out of the mean
    ts = dt.datetime(2026, 2, 2, 12, tzinfo=dt.UTC)
    features = [
        {
            "ts": ts,
            "request_id": "abc",
            "row_in_request": i,
            **r,
            "stroke_probability": p,
            "risk_tier": "low",
        }
        for i, (r, p) in enumerate(zip(records, probs, strict=True))
    ]
    writer.record({**_row(ts, 200, 2, 0.15, (1, 1, 0)), **summary}, features)
    writer.close()
    cohort = request_cohort(load_settings(), "2026-02-02")
    assert list(cohort[ID]) == ["patient-0001", "abc:1"]
    assert cohort["hypertension"].dtype == "int64" and pd.isna(cohort["bmi"].iloc[1])
    from stroke_dagster.io.validation import validate_patients

    assert validate_patients(cohort).quarantine.empty  # valid input for the drift monitor


def test_inference_log_view_works_before_and_after_the_first_segment(stroke_home: Path) -> None:
    from stroke_dagster.warehouse import store as warehouse

    empty = warehouse.query_df("SELECT * FROM inference_log", settings=load_settings())
    assert empty.empty and {"ts", "latency_ms", "status_code", "date"} <= set(empty.columns)
    writer = TelemetryWriter(stroke_home)
    writer.record(_row(dt.datetime(2026, 2, 5, 8, tzinfo=dt.UTC), 200, 2, 0.2, (2, 0, 0)))
    writer.close()
    rows = warehouse.query_df(
        "SELECT date, n_patients, path FROM inference_log", settings=load_settings()
    )
    assert len(rows) == 1 and int(rows["n_patients"][0]) == 2
    assert pd.Timestamp(rows["date"][0]).date() == dt.date(2026, 2, 5)


@pytest.mark.slow
def test_daily_summary_asset_logs_to_the_inference_experiment(stroke_home: Path) -> None:
    import dagster as dg
    import mlflow

    from stroke_dagster.defs.resources import StrokeSettings
    from stroke_dagster.defs.telemetry import INFERENCE_EXPERIMENT, inference_daily_summary

    writer = TelemetryWriter(stroke_home)
    ts = dt.datetime(2026, 2, 6, 9, tzinfo=dt.UTC)
    writer.record(_row(ts, 200, 4, 0.25, (2, 1, 1)))
    writer.record(_row(ts, 503, 0, None, (0, 0, 0)))
    writer.close()
    for _ in range(2):  # re-materialising a day updates its run, never adds one
        result = dg.materialize(
            [inference_daily_summary],
            partition_key="2026-02-06",
            resources={"stroke": StrokeSettings()},
        )
        assert result.success
    event = result.asset_materializations_for_node("inference_daily_summary")[0]
    assert event.metadata["request_count"].value == 2
    assert event.metadata["error_rate"].value == pytest.approx(0.5)
    assert event.metadata["tier_high_count"].value == 1
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(INFERENCE_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    assert runs[0].data.metrics["patients_scored"] == 4
    assert runs[0].data.metrics["mean_probability"] == pytest.approx(0.25)
