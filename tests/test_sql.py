"""Every file under sql/ runs as-is against a populated warehouse; the analyst queries return the
expected rows (executed unmodified, exactly as ``duckdb -readonly FILE < query.sql`` would)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from stroke_dagster import warehouse
from stroke_dagster.settings import SQL_DIR

D1, D2 = "2026-01-04", "2026-01-05"
QUERIES = SQL_DIR / "queries"


def _scores(rows: list[tuple[str, float, str]], version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [r[0] for r in rows],
            "stroke_probability": [r[1] for r in rows],
            "risk_tier": [r[2] for r in rows],
            "model_name": "StrokeRF",
            "model_version": version,
            "scored_at": pd.Timestamp("2026-01-06T02:00:00Z"),
        }
    )


@pytest.fixture
def populated(stroke_home: Path) -> Path:
    """Two scored days (patients 2 and 3 in both) and quarantined rows of two sources."""
    warehouse.replace_partition(
        "scores",
        D1,
        _scores([("1", 0.02, "low"), ("2", 0.30, "high"), ("3", 0.08, "elevated")], "1"),
    )
    warehouse.replace_partition(
        "scores",
        D2,
        _scores(
            [("2", 0.40, "high"), ("3", 0.01, "low"), ("4", 0.25, "high"), ("5", 0.09, "elevated")],
            "2",
        ),
    )
    quarantine = pd.DataFrame(
        {
            "row_number": [4, 9, 11],
            "patient_id": ["7", None, "7"],
            "reason": [
                "age out of range [0, 120]",
                "id is missing; bmi is not a number",
                "duplicate id",
            ],
            "record": ["{}", "{}", "{}"],
        }
    )
    warehouse.write_quarantine(quarantine, "cohort", D2)
    warehouse.write_quarantine(quarantine.iloc[:1], "train:patients.csv", None)
    return warehouse.snapshot_path()


def run_file(db: Path, path: Path, *setup: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        for statement in setup:
            con.execute(statement)
        return con.execute(path.read_text(encoding="utf-8")).df()


@pytest.mark.parametrize(
    "path", sorted(SQL_DIR.rglob("*.sql")), ids=lambda p: str(p.relative_to(SQL_DIR))
)
def test_every_sql_file_runs_against_the_populated_warehouse(populated: Path, path: Path) -> None:
    if path.parent.name == "ddl":
        # DDL is idempotent: applying it again to the live warehouse changes nothing.
        with warehouse.connect() as con:
            sql = path.read_text().replace("{stroke_home}", str(warehouse.warehouse_path().parent))
            try:
                con.execute(sql)
            except duckdb.IOException:
                pytest.skip(f"{path.name} reads files that this test does not write")
            assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 7
    else:
        result = run_file(populated, path)
        assert isinstance(result, pd.DataFrame) and len(result.columns) > 0


def test_latest_score_per_patient(populated: Path) -> None:
    got = run_file(populated, QUERIES / "latest_score_per_patient.sql")
    assert list(got["patient_id"]) == ["1", "2", "3", "4", "5"]
    latest = dict(zip(got["patient_id"], got["stroke_probability"], strict=True))
    assert latest == {"1": 0.02, "2": 0.40, "3": 0.01, "4": 0.25, "5": 0.09}
    assert got.loc[got["patient_id"] == "1", "model_version"].item() == "1"


def test_high_risk_patients_default_to_the_latest_day_and_take_a_variable(populated: Path) -> None:
    latest = run_file(populated, QUERIES / "high_risk_patients.sql")
    assert list(latest["patient_id"]) == ["2", "4"]  # most at risk first
    assert {str(d)[:10] for d in latest["cohort_date"]} == {D2}
    earlier = run_file(
        populated, QUERIES / "high_risk_patients.sql", f"SET VARIABLE cohort_date = DATE '{D1}'"
    )
    assert list(earlier["patient_id"]) == ["2"]


def test_daily_risk_tier_summary(populated: Path) -> None:
    got = run_file(populated, QUERIES / "daily_risk_tier_summary.sql")
    assert [str(d)[:10] for d in got["cohort_date"]] == [D1, D2]
    assert list(got["patients"]) == [3, 4]
    assert list(got["low"]) == [1, 1] and list(got["elevated"]) == [1, 1]
    assert list(got["high"]) == [1, 2]
    assert list(got["high_share"]) == [pytest.approx(1 / 3, abs=1e-4), 0.5]
    assert list(got["models"]) == ["StrokeRF v1", "StrokeRF v2"]


def test_quarantine_summary_counts_each_reason(populated: Path) -> None:
    got = run_file(populated, QUERIES / "quarantine_summary.sql")
    day = got[got["source"] == "cohort"]
    counts = dict(zip(day["reason"], day["rows"], strict=True))
    assert counts == {
        "age out of range [0, 120]": 1,
        "id is missing": 1,
        "bmi is not a number": 1,
        "duplicate id": 1,
    }
    assert {str(d)[:10] for d in day["cohort_date"]} == {D2}
    train = got[got["source"] == "train:patients.csv"]
    assert len(train) == 1 and pd.isna(train["cohort_date"].iloc[0])


def test_queries_also_run_on_the_live_warehouse(populated: Path) -> None:
    live = warehouse.warehouse_path()
    got = run_file(live, QUERIES / "daily_risk_tier_summary.sql")
    assert list(got["patients"]) == [3, 4]
    assert dt.date.fromisoformat(str(got["cohort_date"].iloc[-1])[:10]) == dt.date(2026, 1, 5)
