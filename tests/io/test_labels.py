"""The one reader of outcome labels and labelled cohorts (io/labels.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import load_settings
from stroke_dagster.io.labels import day_labels, labelled_cohort, labelled_cohorts, labelled_days
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.simulate.generator import simulate_patients, write_patients

DAY = "2026-03-02"


def _cohort(home: Path, day: str = DAY, n: int = 6) -> None:
    (home / "incoming").mkdir(parents=True, exist_ok=True)
    write_patients(simulate_patients(n, seed=4, with_label=False), home / "incoming" / f"{day}.csv")


def _labels(home: Path, text: str, day: str = DAY) -> None:
    (home / "labels").mkdir(parents=True, exist_ok=True)
    (home / "labels" / f"{day}.csv").write_text(text)


def test_labels_as_given_reach_validation_which_quarantines_the_bad_ones(
    stroke_home: Path,
) -> None:
    _cohort(stroke_home)
    ids = simulate_patients(6, seed=4, with_label=False)["id"].astype(str).tolist()
    # a valid "1.0", an invalid "x", a missing "N/A", and a corrected line (the last wins)
    _labels(
        stroke_home,
        f"id,stroke\n{ids[0]},1.0\n{ids[1]},x\n{ids[2]},N/A\n{ids[3]},1\n{ids[3]},0\n",
    )
    settings = load_settings()
    rows = labelled_cohort(DAY, settings).set_index("id")
    assert list(rows.index) == ids[:4]  # a cohort row without a label line is not returned
    assert rows.loc[ids[0], "stroke"] == "1" and rows.loc[ids[3], "stroke"] == "0"
    assert rows.loc[ids[1], "stroke"] == "x"
    result = validate_patients(rows.reset_index(), require_label=True)
    assert sorted(result.valid["id"]) == sorted([ids[0], ids[3]])
    reasons = dict(zip(result.quarantine["patient_id"], result.quarantine["reason"], strict=True))
    assert set(reasons) == {ids[1], ids[2]}
    # the day's known outcomes: valid labels only, one per id
    known = day_labels(DAY, settings).set_index("id")["stroke"].to_dict()
    assert known == {ids[0]: 1.0, ids[3]: 0.0}


def test_a_day_missing_its_cohort_raises_when_strict_and_is_skipped_otherwise(
    stroke_home: Path,
) -> None:
    _labels(stroke_home, "id,stroke\n1,0\n")
    _labels(stroke_home, "id,stroke\n1,0\n", day="2026-03-03")
    _cohort(stroke_home, day="2026-03-03")
    settings = load_settings()
    assert labelled_days(settings) == [DAY, "2026-03-03"]
    with pytest.raises(InputError, match="no cohort file"):
        labelled_cohort(DAY, settings)
    assert labelled_cohort(DAY, settings, strict=False) is None
    rows = labelled_cohorts(settings)  # the day without a cohort skipped, the other read
    assert set(rows["id"].str.split("/").str[0]) == {"2026-03-03"}


def test_labels_without_their_columns_are_one_line_errors(stroke_home: Path) -> None:
    _cohort(stroke_home)
    _labels(stroke_home, "patient,outcome\n1,0\n")
    with pytest.raises(InputError, match="lack column"):
        labelled_cohort(DAY, load_settings())
    assert labelled_cohort(DAY, load_settings(), strict=False) is None
