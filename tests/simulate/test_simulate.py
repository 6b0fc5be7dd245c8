"""The synthetic patient generator: determinism, validity, realistic structure, files, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stroke_dagster.core.schema import CATEGORICAL_FIELDS, RAW_COLUMNS, REQUIRED_COLUMNS, TARGET
from stroke_dagster.io.readers import read_patient_file
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.simulate.generator import (
    PARAMS_PATH,
    fit_from_file,
    fit_simulator,
    load_params,
    simulate_patients,
    write_patients,
)

STROKE = Path(sys.executable).with_name("stroke")


@pytest.fixture(scope="module")
def cohort_50k() -> pd.DataFrame:
    return simulate_patients(50_000, seed=11)


def _stroke(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``stroke simulate`` in ``home``'s parent directory."""
    env = {**os.environ, "STROKE_HOME": str(home)}
    return subprocess.run(
        [str(STROKE), "simulate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home.parent,
        timeout=120,
    )


# ---------------------------------------------------------------------------- the contract


def test_same_seed_gives_identical_rows_and_other_seed_differs() -> None:
    a = simulate_patients(2_000, seed=3)
    pd.testing.assert_frame_equal(a, simulate_patients(2_000, seed=3))
    b = simulate_patients(2_000, seed=4)
    assert not a.drop(columns="id").equals(b.drop(columns="id"))


def test_columns_follow_raw_schema_with_and_without_label() -> None:
    labelled = simulate_patients(500, seed=1)
    cohort = simulate_patients(500, seed=1, with_label=False)
    assert list(labelled.columns) == list(RAW_COLUMNS)
    assert list(cohort.columns) == list(REQUIRED_COLUMNS)
    # The cohort is the labelled sample of the same seed without its outcome.
    pd.testing.assert_frame_equal(cohort, labelled.drop(columns=TARGET))


def test_ids_are_unique_and_start_at_id_start() -> None:
    df = simulate_patients(1_000, seed=0, id_start=5_000)
    assert df["id"].tolist() == list(range(5_000, 6_000))
    assert simulate_patients(0, seed=0).empty


def test_negative_n_is_rejected() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        simulate_patients(-5)


def test_every_row_passes_validation(cohort_50k: pd.DataFrame) -> None:
    sample = cohort_50k.head(20_000)
    result = validate_patients(sample, require_label=True)
    assert result.quarantine.empty, result.quarantine["reason"].value_counts().to_dict()
    assert len(result.valid) == len(sample)
    assert sample["bmi"].isna().any()  # missing bmi is part of a realistic cohort


def test_every_schema_category_occurs_including_rare_ones() -> None:
    df = simulate_patients(200_000, seed=5)
    for field in CATEGORICAL_FIELDS:
        assert set(df[field.name]) == set(field.categories), field.name
    # Rare categories stay rare: 'Other' gender about 1 in 5,000, 'Never_worked' below 1 %.
    assert 0 < (df["gender"] == "Other").mean() < 0.001
    assert 0.001 < (df["work_type"] == "Never_worked").mean() < 0.01


# ---------------------------------------------------------------------------- realism


def test_children_are_never_married_and_of_unknown_smoking_status(cohort_50k: pd.DataFrame) -> None:
    df = cohort_50k
    kids = df["work_type"] == "children"
    assert kids.sum() > 1_000
    assert (df.loc[kids, "ever_married"] == "No").all()
    assert df.loc[kids, "age"].max() < 18
    assert (df.loc[df["age"] < 10, "smoking_status"] == "Unknown").all()
    assert (df.loc[df["age"] < 16, "ever_married"] == "No").all()
    assert (df.loc[df["age"] >= 50, "ever_married"] == "Yes").mean() > 0.85


def test_stroke_and_comorbidities_rise_with_age(cohort_50k: pd.DataFrame) -> None:
    bands = pd.cut(cohort_50k["age"], [0, 30, 45, 60, 75, 121], right=False)
    rates = cohort_50k.groupby(bands, observed=True)[["stroke", "hypertension", "heart_disease"]]
    means = rates.mean()
    for column in means.columns:
        assert means[column].is_monotonic_increasing, (column, means[column].tolist())
    assert means["stroke"].iloc[-1] > 10 * means["stroke"].iloc[0]


def test_prevalences_match_the_source(cohort_50k: pd.DataFrame) -> None:
    source = load_params()["source_rates"]
    assert abs(cohort_50k["stroke"].mean() - 0.049) < 0.005
    assert abs(cohort_50k["hypertension"].mean() - source["hypertension"]) < 0.01
    assert abs(cohort_50k["heart_disease"].mean() - source["heart_disease"]) < 0.008


def test_risk_factors_separate_strokes(cohort_50k: pd.DataFrame) -> None:
    df = cohort_50k
    stroke = df["stroke"] == 1
    # bmi goes missing far more often for strokes, as in the source data.
    assert df.loc[stroke, "bmi"].isna().mean() > 2.5 * df.loc[~stroke, "bmi"].isna().mean()
    for column in ("hypertension", "heart_disease", "avg_glucose_level", "age"):
        assert df.loc[stroke, column].mean() > df.loc[~stroke, column].mean(), column


def test_glucose_is_bimodal_in_older_patients(cohort_50k: pd.DataFrame) -> None:
    glucose = cohort_50k["avg_glucose_level"]
    old, young = cohort_50k["age"] >= 60, cohort_50k["age"] < 30
    # The diabetic mode (above ~150 mg/dL) is a distinct hump, and much larger in older ages.
    assert (glucose[old] > 150).mean() > 2 * (glucose[young] > 150).mean()
    counts, _ = np.histogram(glucose[old], bins=np.arange(50, 280, 10))
    hump = counts[12:18].max()  # 170-230 mg/dL
    trough = counts[8:12].min()  # 130-170 mg/dL
    assert hump > trough


def test_generates_many_rows_with_unique_ids() -> None:
    df = simulate_patients(200_000, seed=0, with_label=False)
    assert len(df) == 200_000 and df["id"].is_unique


# ---------------------------------------------------------------------------- files


def test_csv_writes_na_for_missing_bmi_and_reads_back(tmp_path: Path) -> None:
    df = simulate_patients(3_000, seed=2)
    path = write_patients(df, tmp_path / "patients.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(RAW_COLUMNS)
    assert sum(",N/A," in line for line in lines) == df["bmi"].isna().sum() > 0
    back = validate_patients(read_patient_file(path), require_label=True)
    assert back.quarantine.empty
    assert back.valid["id"].tolist() == df["id"].astype(str).tolist()
    np.testing.assert_allclose(back.valid["avg_glucose_level"], df["avg_glucose_level"])
    pd.testing.assert_series_equal(back.valid["bmi"].isna(), df["bmi"].isna())
    assert back.valid["stroke"].tolist() == df["stroke"].tolist()


def test_parquet_round_trip(tmp_path: Path) -> None:
    df = simulate_patients(1_000, seed=2, with_label=False)
    path = write_patients(df, tmp_path / "cohort.parquet")
    back = validate_patients(read_patient_file(path))
    assert back.quarantine.empty and len(back.valid) == len(df)
    assert back.valid["bmi"].isna().sum() == df["bmi"].isna().sum()


# ---------------------------------------------------------------------------- fitting


def test_params_file_holds_only_small_summaries() -> None:
    text = PARAMS_PATH.read_text()
    assert len(text) < 30_000
    params = json.loads(text)
    assert params["source_rows"] > 0
    assert set(params["models"]) == {"hypertension", "heart_disease", "stroke", "bmi_missing"}
    assert abs(sum(params["age"]["weights"]) - 1.0) < 1e-3


def test_fit_recovers_the_generating_structure() -> None:
    source = simulate_patients(30_000, seed=21)
    source_valid = validate_patients(source, require_label=True).valid
    params = fit_simulator(source_valid)
    again = simulate_patients(30_000, seed=22, params=params)
    for column in ("stroke", "hypertension", "heart_disease"):
        assert abs(again[column].mean() - source[column].mean()) < 0.01, column
    assert abs(again["age"].median() - source["age"].median()) <= 2
    assert abs(again["bmi"].isna().mean() - source["bmi"].isna().mean()) < 0.01
    share = again["work_type"].value_counts(normalize=True)
    expected = source["work_type"].value_counts(normalize=True)
    assert (share - expected).abs().max() < 0.02


def test_fit_rejects_a_frame_without_the_label() -> None:
    with pytest.raises(ValueError, match="stroke"):
        fit_simulator(simulate_patients(100, seed=0, with_label=False))


@pytest.mark.real_data
def test_committed_params_are_the_fit_of_the_real_file(real_csv: Path) -> None:
    fitted = fit_from_file(real_csv)
    committed = load_params()
    assert fitted["source_rows"] == committed["source_rows"]
    assert fitted["age"]["weights"] == pytest.approx(committed["age"]["weights"], abs=1e-5)
    for name, model in fitted["models"].items():
        coefs = [t["coef"] for t in model["terms"]]
        assert coefs == pytest.approx(
            [t["coef"] for t in committed["models"][name]["terms"]], rel=1e-3, abs=1e-5
        )


# ---------------------------------------------------------------------------- CLI


def test_cli_writes_labelled_file_matching_the_library(tmp_path: Path) -> None:
    out = tmp_path / "sim.csv"
    proc = _stroke("--n", "400", "--seed", "9", "--output", str(out), home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"output": str(out), "rows": 400, "seed": 9, "with_label": True}
    expected = tmp_path / "expected.csv"
    write_patients(simulate_patients(400, seed=9), expected)
    assert out.read_text() == expected.read_text()


def test_cli_dated_cohort_goes_to_incoming_without_label(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _stroke("--n", "300", "--date", "2026-01-15", "--labels", home=home)
    second = _stroke("--n", "300", "--date", "2026-01-16", home=home)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["output"] == str(home / "incoming" / "2026-01-15.csv")
    assert summary["with_label"] is False and summary["rows"] == 300
    day1 = read_patient_file(home / "incoming" / "2026-01-15.csv")
    day2 = read_patient_file(home / "incoming" / "2026-01-16.csv")
    assert list(day1.columns) == list(REQUIRED_COLUMNS)
    assert day1["id"].iloc[0] == "202601150000001"
    assert not set(day1["id"]) & set(day2["id"])
    labels = read_patient_file(home / "labels" / "2026-01-15.csv")
    assert list(labels.columns) == ["id", "stroke"]
    assert labels["id"].tolist() == day1["id"].tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "-5", "--output", "x.csv"], "must be >= 0"),
        (["--n", "10"], "--output is required"),
        (["--n", "10", "--date", "2026-13-01"], "not a date"),
        (["--n", "10", "--output", "x.txt"], ".csv or .parquet"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = _stroke(*args, home=tmp_path / "home")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.csv").exists()
