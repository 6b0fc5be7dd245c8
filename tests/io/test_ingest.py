"""Reading patient files as Kaggle and its mirrors ship them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.io.readers import iter_patient_batches, read_patient_file
from stroke_dagster.io.validation import validate_patients

HEADER = (
    "id,gender,age,hypertension,heart_disease,ever_married,work_type,Residence_type,"
    "avg_glucose_level,bmi,smoking_status,stroke"
)
ROWS = [
    "101,Male,70,1,0,Yes,Private,Urban,210.5,31.2,formerly smoked,1",
    "102,Female,34,0,0,No,Govt_job,Rural,88.1,N/A,never smoked,0",
    "103,Other,12,0,0,No,children,Urban,95.0,18.4,Unknown,0",
]


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_kaggle_variants_parse_identically(tmp_path: Path, bom: bool, newline: str) -> None:
    path = _write(tmp_path / "p.csv", newline.join([HEADER, *ROWS]) + newline, bom=bom)
    frame = read_patient_file(path)
    assert list(frame.columns) == HEADER.split(",")
    result = validate_patients(frame, require_label=True)
    assert result.quarantine.empty
    valid = result.valid
    assert valid["id"].tolist() == ["101", "102", "103"]
    assert pd.isna(valid.loc[1, "bmi"]) and valid.loc[0, "bmi"] == pytest.approx(31.2)
    assert valid["gender"].tolist() == ["Male", "Female", "Other"]
    assert valid["smoking_status"].iloc[2] == "Unknown"  # the text 'Unknown' is a category, not NA
    assert valid["stroke"].tolist() == [1, 0, 0]


def test_headers_in_other_case_and_spacing_are_recognised(tmp_path: Path) -> None:
    header = " ID ,Gender,AGE,hypertension,heart_disease,ever_married,work_type,residence_type,"
    header += "avg_glucose_level,BMI,smoking_status"
    path = _write(tmp_path / "p.csv", header + "\n" + ROWS[0].rsplit(",", 1)[0] + "\n")
    frame = read_patient_file(path)
    assert {"id", "age", "Residence_type", "bmi"} <= set(frame.columns)


def test_batches_cover_every_row_once(tmp_path: Path) -> None:
    rows = [f"{i},Male,50,0,0,Yes,Private,Urban,100,25,smokes,0" for i in range(1, 1001)]
    path = _write(tmp_path / "p.csv", "\n".join([HEADER, *rows]) + "\n")
    sizes = [len(b) for b in iter_patient_batches(path, batch_rows=300)]
    assert sizes == [300, 300, 300, 100]
    ids = pd.concat(iter_patient_batches(path, batch_rows=300))["id"].astype(int)
    assert ids.tolist() == list(range(1, 1001))


def test_parquet_input_is_read(tmp_path: Path) -> None:
    csv = _write(tmp_path / "p.csv", "\n".join([HEADER, *ROWS]) + "\n")
    frame = pd.read_csv(csv, na_values=["N/A"])
    frame.to_parquet(tmp_path / "p.parquet")
    result = validate_patients(read_patient_file(tmp_path / "p.parquet"), require_label=True)
    assert result.valid["id"].tolist() == ["101", "102", "103"]  # integer ids, not '101.0'
    assert result.quarantine.empty


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    assert len(read_patient_file(_write(tmp_path / "p.csv", HEADER + "\n"))) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\xff\xfe\x00garbage\x00\n\x01,\x02\n", "cannot read")],
)
def test_unreadable_files_raise_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_patient_file(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_patient_file(tmp_path / "nope.csv")
