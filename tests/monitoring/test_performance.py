"""Realized performance from arriving labels, and the labelled cohorts retraining learns from."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import PATIENT_KEY, RAW_COLUMNS
from stroke_dagster.core.settings import load_settings
from stroke_dagster.io.labels import labelled_cohorts
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.monitoring.performance import (
    day_performance,
    write_performance,
)
from stroke_dagster.simulate.generator import simulate_patients, write_patients
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-02-10"


def _write_scores(day: str, n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    scores = pd.DataFrame(
        {
            "patient_id": [str(i) for i in range(1, n + 1)],
            "stroke_probability": rng.uniform(0, 0.4, n),
            "risk_tier": "low",
            "model_name": "StrokeRF",
            "model_version": "4",
            "scored_at": dt.datetime.now(dt.UTC),
        }
    )
    warehouse.replace_partition("score_history", day, scores, settings=load_settings())
    return scores


def test_realized_auc_and_brier_from_labels(stroke_home: Path) -> None:
    scores = _write_scores(DAY)
    rng = np.random.default_rng(1)
    labelled = scores.iloc[:150]  # labels arrive for 150 of 200 scored patients
    y = (rng.random(150) < labelled["stroke_probability"]).astype(int)
    labels_dir = load_settings().labels_dir
    labels_dir.mkdir(parents=True)
    pd.DataFrame({"id": labelled["patient_id"], "stroke": y}).to_csv(
        labels_dir / f"{DAY}.csv", index=False
    )
    frame = day_performance(DAY, settings=load_settings())
    assert frame is not None and len(frame) == 1
    row = frame.iloc[0]
    p = labelled["stroke_probability"].to_numpy()
    assert (row["n_scored"], row["n_labelled"], row["n_positive"]) == (200, 150, y.sum())
    assert row["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert row["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert row["model_version"] == "4"
    for _ in range(2):  # re-running replaces the day
        write_performance(DAY, frame, settings=load_settings())
    stored = warehouse.query_df("SELECT * FROM performance_metrics", settings=load_settings())
    assert len(stored) == 1 and str(stored["cohort_date"][0])[:10] == DAY
    assert stored["roc_auc"][0] == pytest.approx(row["roc_auc"])


def test_no_labels_yet_and_single_class_labels(stroke_home: Path) -> None:
    assert day_performance(DAY, settings=load_settings()) is None
    scores = _write_scores(DAY, n=20)
    labels_dir = load_settings().labels_dir
    labels_dir.mkdir(parents=True)
    (labels_dir / f"{DAY}.csv").write_text(
        "ID,Stroke\n" + "".join(f"{i},0\n" for i in scores["patient_id"][:10]) + "99999,1\n"
    )
    row = day_performance(DAY, settings=load_settings()).iloc[0]
    assert row["n_labelled"] == 10 and row["roc_auc"] is None  # one class: AUC undefined
    assert row["brier"] == pytest.approx(np.mean(scores["stroke_probability"][:10] ** 2))


def test_labels_without_columns_or_scores_are_input_errors(stroke_home: Path) -> None:
    labels_dir = load_settings().labels_dir
    labels_dir.mkdir(parents=True)
    (labels_dir / f"{DAY}.csv").write_text("id,outcome\n1,0\n")
    with pytest.raises(InputError, match="lack column"):
        day_performance(DAY, settings=load_settings())
    (labels_dir / f"{DAY}.csv").write_text("id,stroke\n1,0\n")
    _write_scores("2026-02-11")
    with pytest.raises(InputError, match="no scores"):
        day_performance(DAY, settings=load_settings())


def test_labelled_cohorts_in_raw_schema(stroke_home: Path) -> None:
    settings = load_settings()
    settings.ensure_dirs()
    first = simulate_patients(40, seed=1, with_label=False)
    second = simulate_patients(30, seed=2, with_label=False)  # same ids 1..30 as the first day
    write_patients(first, settings.incoming_dir / "2026-02-01.csv")
    write_patients(second, settings.incoming_dir / "2026-02-02.parquet")
    write_patients(
        simulate_patients(10, seed=3, with_label=False), settings.incoming_dir / "2026-02-03.csv"
    )
    pd.DataFrame({"id": first["id"][:25], "stroke": [1] * 5 + [0] * 20}).to_csv(
        settings.labels_dir / "2026-02-01.csv", index=False
    )
    pd.DataFrame({"id": second["id"][:10], "stroke": 0}).to_csv(
        settings.labels_dir / "2026-02-02.csv", index=False
    )
    (settings.labels_dir / "2026-02-09.csv").write_text("id,stroke\n1,1\n")  # no cohort: skipped
    rows = labelled_cohorts(settings)
    assert list(rows.columns) == [*RAW_COLUMNS, PATIENT_KEY]
    assert len(rows) == 35  # labelled rows only; the unlabelled third day contributes nothing
    assert rows["id"].iloc[0] == "2026-02-01/1" and rows["id"].is_unique
    assert rows[PATIENT_KEY].iloc[0] == "1"  # the patient behind the day's row
    first_day = rows[rows["id"].str.startswith("2026-02-01/")]
    assert first_day["stroke"].astype(int).sum() == 5
    assert first_day["age"].astype(float).tolist() == pytest.approx(first["age"][:25].tolist())
    result = validate_patients(rows, require_label=True)  # trains like any raw labelled file
    assert len(result.valid) == 35 and result.quarantine.empty


def test_labelled_cohorts_empty_without_labels(stroke_home: Path) -> None:
    rows = labelled_cohorts(settings=load_settings())
    assert rows.empty and list(rows.columns) == [*RAW_COLUMNS, PATIENT_KEY]
