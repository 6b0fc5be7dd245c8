"""Validation against the one patient schema: typed rows out, every bad row quarantined."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import FEATURES
from stroke_dagster.io.validation import validate_patients


def _patients(n: int = 6) -> pd.DataFrame:
    base = {
        "id": [str(i) for i in range(1, n + 1)],
        "gender": ["Female"] * n,
        "age": ["54"] * n,
        "hypertension": ["0"] * n,
        "heart_disease": ["1"] * n,
        "ever_married": ["Yes"] * n,
        "work_type": ["Private"] * n,
        "Residence_type": ["Urban"] * n,
        "avg_glucose_level": ["101.3"] * n,
        "bmi": ["27.5"] * n,
        "smoking_status": ["never smoked"] * n,
        "stroke": ["0"] * n,
    }
    return pd.DataFrame(base)


def test_clean_rows_are_typed() -> None:
    result = validate_patients(_patients(), require_label=True)
    assert result.quarantine.empty and len(result.valid) == 6
    valid = result.valid
    assert valid["age"].dtype == "float64" and valid["hypertension"].dtype == "int64"
    assert list(valid.columns) == ["id", *FEATURES, "stroke"]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("age", "abc", "age is not a number"),
        ("age", "130", "age out of range [0, 120]"),
        ("age", "-1", "age out of range [0, 120]"),
        ("age", "N/A", "age is missing"),
        ("bmi", "4", "bmi out of range [10, 100]"),
        ("avg_glucose_level", "5.6", "avg_glucose_level out of range [20, 700]"),
        ("hypertension", "2", "hypertension must be 0 or 1"),
        ("gender", "Unknown", "gender is not one of Female, Male, Other"),
        ("work_type", "", "work_type is missing"),
        ("id", "", "id is missing"),
        ("stroke", "yes", "stroke must be 0 or 1"),
    ],
)
def test_bad_values_are_quarantined_with_reason(column: str, value: str, reason: str) -> None:
    raw = _patients()
    raw.loc[2, column] = value
    result = validate_patients(raw, require_label=True)
    assert len(result.valid) == 5
    assert result.rows_in == 6
    row = result.quarantine.iloc[0]
    assert row["reason"] == reason
    assert row["row_number"] == 3
    assert json.loads(row["record"])[column] == value


def test_several_problems_in_one_row_are_all_named() -> None:
    raw = _patients()
    raw.loc[0, ["age", "gender"]] = ["x", "robot"]
    reason = validate_patients(raw).quarantine["reason"].iloc[0]
    assert "age is not a number" in reason and "gender is not one of" in reason


def test_missing_bmi_is_allowed_and_categories_are_normalised() -> None:
    raw = _patients(3)
    raw.loc[0, "bmi"] = "N/A"
    raw.loc[1, "gender"] = " male "
    raw.loc[2, "smoking_status"] = "SMOKES"
    result = validate_patients(raw)
    assert result.quarantine.empty
    assert pd.isna(result.valid.loc[0, "bmi"])
    assert result.valid.loc[1, "gender"] == "Male"
    assert result.valid.loc[2, "smoking_status"] == "smokes"


def test_duplicate_ids_keep_the_first_and_span_batches() -> None:
    seen: set[str] = set()
    first = _patients(3)
    first.loc[2, "id"] = "1"
    r1 = validate_patients(first, seen_ids=seen)
    assert r1.valid["id"].tolist() == ["1", "2"]
    assert r1.quarantine["reason"].tolist() == ["duplicate id"]
    second = _patients(3)  # ids 1, 2, 3 again: 1 and 2 were accepted in the first batch
    r2 = validate_patients(second, seen_ids=seen, row_offset=3)
    assert r2.valid["id"].tolist() == ["3"]
    assert r2.quarantine["row_number"].tolist() == [4, 5]


def test_label_is_optional_for_cohorts() -> None:
    result = validate_patients(_patients().drop(columns="stroke"))
    assert "stroke" not in result.valid.columns and len(result.valid) == 6


def test_missing_columns_are_an_input_error() -> None:
    with pytest.raises(InputError, match="missing required column\\(s\\): age, bmi"):
        validate_patients(_patients().drop(columns=["age", "bmi"]))


def test_a_column_without_any_number_is_an_input_error() -> None:
    raw = _patients()
    raw["age"] = "sixty"
    with pytest.raises(InputError, match="column 'age' is not numeric"):
        validate_patients(raw)
