"""Streaming scoring: every row scored or quarantined, batches agree with one pass, CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.schema import FEATURES
from stroke_dagster.core.settings import load_settings
from stroke_dagster.io.validation import SeenIds
from stroke_dagster.scoring.batch import score_file
from stroke_dagster.simulate.generator import simulate_patients, write_patients
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-01-05"


@dataclass
class SmallModel:
    """A real fitted pipeline with the fields scoring reads from a registered ``StoredModel``."""

    pipeline: Any
    name: str = "StrokeRF"
    version: str = "9"
    thresholds: RiskThresholds = RiskThresholds(elevated=0.05, high=0.15)


@pytest.fixture(scope="module")
def model() -> SmallModel:
    from stroke_dagster.io.validation import validate_patients
    from stroke_dagster.model.training import build_pipeline

    train = validate_patients(simulate_patients(1500, seed=11), require_label=True).valid
    pipeline = build_pipeline({"n_estimators": 20, "max_depth": 4, "n_jobs": 1})
    pipeline.fit(train[list(FEATURES)], train["stroke"])
    return SmallModel(pipeline)


def cohort_with_bad_rows(path: Path, n: int = 400) -> tuple[Path, int]:
    """A cohort file of ``n`` rows, 5 of them bad (one duplicate lands in a later batch)."""
    df = simulate_patients(n, seed=5, with_label=False).astype({"age": object})
    df.loc[3, "age"] = "200"  # out of range
    df.loc[10, "gender"] = "Robot"  # unknown category
    df.loc[20, "id"] = df.loc[2, "id"]  # duplicate in the same batch
    df.loc[n - 1, "id"] = df.loc[0, "id"]  # duplicate in a later batch
    df.loc[50, "age"] = "abc"  # not a number
    df.to_csv(path, index=False, na_rep="N/A")
    return path, 5


def test_every_row_is_scored_or_quarantined_with_reason_and_date(
    stroke_home: Path, tmp_path: Path, model: SmallModel
) -> None:
    path, bad = cohort_with_bad_rows(tmp_path / "cohort.csv")
    out = tmp_path / "scores.csv"
    summary = score_file(
        path, model, cohort_date=DAY, output_csv=out, batch_rows=64, settings=load_settings()
    )
    assert summary.rows_in == 400
    assert summary.rows_quarantined == bad
    assert summary.rows_in == summary.rows_scored + summary.rows_quarantined
    assert sum(summary.tier_counts.values()) == summary.rows_scored

    written = pd.read_csv(out, dtype={"id": str})
    assert list(written.columns) == ["id", "stroke_probability", "risk_tier"]
    assert len(written) == summary.rows_scored and written["id"].is_unique
    assert written["stroke_probability"].between(0, 1).all()
    assert set(written["risk_tier"]) <= {"low", "elevated", "high"}

    scores = warehouse.query_df("SELECT * FROM scores", settings=load_settings())
    assert len(scores) == summary.rows_scored
    assert set(scores["model_version"]) == {"9"}
    quarantine = warehouse.query_df(
        "SELECT * FROM quarantine ORDER BY row_number", settings=load_settings()
    )
    assert list(quarantine["row_number"]) == [4, 11, 21, 51, 400]
    assert {str(d)[:10] for d in quarantine["cohort_date"]} == {DAY}
    assert quarantine["reason"].str.contains("duplicate id").sum() == 2
    assert quarantine["reason"].str.contains("age out of range").sum() == 1


def test_probabilities_and_tiers_match_the_model(
    stroke_home: Path, tmp_path: Path, model: SmallModel
) -> None:
    df = simulate_patients(300, seed=8, with_label=False)
    path = write_patients(df, tmp_path / "cohort.parquet")
    out = tmp_path / "scores.csv"
    score_file(path, model, output_csv=out, batch_rows=50, settings=load_settings())
    written = pd.read_csv(out)
    expected = model.pipeline.predict_proba(df[list(FEATURES)])[:, 1]
    np.testing.assert_allclose(written["stroke_probability"], expected, rtol=1e-12)
    high = written["stroke_probability"] >= model.thresholds.high
    assert (written.loc[high, "risk_tier"] == "high").all()
    assert (written.loc[written["stroke_probability"] < 0.05, "risk_tier"] == "low").all()
    # a file without bad rows and no cohort date never touches the warehouse
    assert not warehouse.exists(load_settings())


def test_batch_size_does_not_change_results(
    stroke_home: Path, tmp_path: Path, model: SmallModel
) -> None:
    path, _ = cohort_with_bad_rows(tmp_path / "cohort.csv")
    one = score_file(
        path, model, output_csv=tmp_path / "a.csv", batch_rows=1_000_000, settings=load_settings()
    )
    many = score_file(
        path, model, output_csv=tmp_path / "b.csv", batch_rows=37, settings=load_settings()
    )
    assert one.rows_scored == many.rows_scored and one.tier_counts == many.tier_counts
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))


def test_rescoring_a_day_replaces_it(stroke_home: Path, tmp_path: Path, model: SmallModel) -> None:
    path, _ = cohort_with_bad_rows(tmp_path / "cohort.csv")
    score_file(path, model, cohort_date=DAY, settings=load_settings())
    small = write_patients(simulate_patients(30, seed=1, with_label=False), tmp_path / "small.csv")
    score_file(small, model, cohort_date=DAY, settings=load_settings())
    counts = warehouse.query_df("SELECT count(*) AS n FROM scores", settings=load_settings())[
        "n"
    ].item()
    assert counts == 30
    assert (
        warehouse.query_df("SELECT count(*) AS n FROM quarantine", settings=load_settings())[
            "n"
        ].item()
        == 0
    )


def test_whole_file_problem_raises_and_writes_nothing(
    stroke_home: Path, tmp_path: Path, model: SmallModel
) -> None:
    df = simulate_patients(50, seed=2, with_label=False).drop(columns=["bmi"])
    path = write_patients(df, tmp_path / "no_bmi.csv")
    out = tmp_path / "out.csv"
    with pytest.raises(InputError, match="bmi"):
        score_file(path, model, cohort_date=DAY, output_csv=out, settings=load_settings())
    assert not out.exists()
    assert not list(tmp_path.glob(".out.csv*"))
    assert not warehouse.exists(load_settings())


def test_seen_ids_is_exact_for_integer_and_text_ids() -> None:
    seen = SeenIds()
    seen.update(["1", "2", "10", "abc", "007x"])
    for start in range(3, 40, 7):  # many runs, merged as they grow
        seen.update([str(i) for i in range(start * 100, start * 100 + 50)])
    probe = pd.Series(["1", "3", "10", "abc", "ABC", "300", "349", "350", "99999999999999999"])
    assert list(seen.contains(probe)) == [True, False, True, True, False, True, True, False, False]


# ------------------------------------------------------------------------------------------
# The command line (a real `stroke` process)
# ------------------------------------------------------------------------------------------


def stroke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("stroke")), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )


def test_cli_score_writes_csv_and_day_and_reports_counts(
    champion_home: Path, tmp_path: Path
) -> None:
    path, bad = cohort_with_bad_rows(tmp_path / "cohort.csv")
    out = tmp_path / "scores.csv"
    result = stroke("score", "--input", str(path), "--output", str(out), "--cohort-date", DAY)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows_in"] == 400 and summary["rows_quarantined"] == bad
    assert summary["rows_in"] == summary["rows_scored"] + summary["rows_quarantined"]
    assert summary["model_version"] == "1"
    assert len(pd.read_csv(out)) == summary["rows_scored"]
    day = warehouse.query_df(
        "SELECT count(*) AS n FROM scores WHERE cohort_date = ?", [DAY], settings=load_settings()
    )
    assert day["n"].item() == summary["rows_scored"]
    pinned = stroke(
        "score", "--input", str(path), "--output", str(out), "--model-uri", "models:/StrokeRF/1"
    )
    assert pinned.returncode == 0, pinned.stderr
    assert json.loads(pinned.stdout.strip().splitlines()[-1])["model_version"] == "1"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_column", "missing required column(s): bmi"),
        ("not_numeric", "column 'age' is not numeric"),
        ("no_file", "input file not found"),
        ("bad_uri", "--model-uri must look like"),
        ("no_alias", "no version or alias 'challenger'"),
        ("no_target", "give --output PATH, --cohort-date YYYY-MM-DD, or both"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    champion_home: Path, tmp_path: Path, case: str, message: str
) -> None:
    df = simulate_patients(20, seed=3, with_label=False)
    good = write_patients(df, tmp_path / "good.csv")
    out = ["--output", str(tmp_path / "out.csv")]
    args = {
        "missing_column": [
            "--input",
            str(write_patients(df.drop(columns="bmi"), tmp_path / "a.csv")),
            *out,
        ],
        "not_numeric": [
            "--input",
            str(write_patients(df.assign(age="old"), tmp_path / "b.csv")),
            *out,
        ],
        "no_file": ["--input", str(tmp_path / "missing.csv"), *out],
        "bad_uri": ["--input", str(good), *out, "--model-uri", "runs:/abc/model"],
        "no_alias": ["--input", str(good), *out, "--model-uri", "models:/StrokeRF@challenger"],
        "no_target": ["--input", str(good)],
    }[case]
    result = stroke("score", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.csv").exists()
