"""Clinicians' feedback through ``POST /feedback`` and a CSV drop, linked to its prediction;
feedback naming no prediction is refused (API) or quarantined with the reason (CSV)."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from stroke_dagster.api.models import EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI
from stroke_dagster.cli import main
from stroke_dagster.core.settings import load_settings
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-01-06"


@pytest.fixture
def client(champion_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("STROKE_API_RELOAD_SECONDS", "0")
    monkeypatch.setenv("STROKE_TELEMETRY_FLUSH_SECONDS", "3600")  # flushed by the tests
    from stroke_dagster.api.app import create_app

    with TestClient(create_app()) as http:
        deadline = time.monotonic() + 120
        while http.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield http


@pytest.fixture
def scored_day(champion_home: Path, tmp_path: Path) -> list[str]:
    """A cohort day scored in batch; its patient ids."""
    from stroke_dagster.model.store import load_model
    from stroke_dagster.scoring.batch import score_file
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    df = simulate_patients(50, seed=5, with_label=False)
    path = write_patients(df, tmp_path / f"{DAY}.csv")
    settings = load_settings()
    score_file(path, load_model("champion", settings=settings), cohort_date=DAY, settings=settings)
    return [str(i) for i in df["id"]]


def feedback_rows() -> list[dict[str, Any]]:
    frame = warehouse.of(load_settings()).query_df("SELECT * FROM feedback ORDER BY recorded_at")
    return frame.to_dict(orient="records")


def test_api_feedback_links_to_the_prediction(client: TestClient) -> None:
    answer = client.post("/predict/batch", json=[EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI])
    request_id = answer.headers["X-Request-Id"]
    # not flushed yet: the pending audit record is found
    sent = {
        "prediction": {"request_id": request_id, "patient_id": EXAMPLE_PATIENT_NO_BMI["id"]},
        "action": "overridden",
        "reason_code": "recent_imaging_clear",
        "clinician_id": "clin-7",
        "feedback_id": "fb-1",
    }
    first = client.post("/feedback", json=sent)
    assert first.status_code == 200, first.text
    assert first.json()["patient_id"] == EXAMPLE_PATIENT_NO_BMI["id"]
    assert first.json()["model_version"] == answer.json()["model_version"]
    client.app.state.telemetry.flush()  # type: ignore[attr-defined]
    # flushed: found in prediction_audit; the same feedback_id replaces the record
    again = client.post("/feedback", json={**sent, "action": "accepted", "reason_code": None})
    assert again.status_code == 200, again.text
    rows = feedback_rows()
    assert len(rows) == 1
    row = rows[0]
    assert (row["feedback_id"], row["action"], row["request_id"]) == (
        "fb-1",
        "accepted",
        request_id,
    )
    assert row["source"] == "api" and row["requester"] == "anonymous"
    assert row["row_in_request"] == 1


def test_api_feedback_on_a_batch_score(client: TestClient, scored_day: list[str]) -> None:
    body = {
        "prediction": {"cohort_date": DAY, "patient_id": scored_day[3]},
        "action": "accepted",
    }
    answer = client.post("/feedback", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["cohort_date"] == DAY and answer.json()["model_version"] == "1"
    wrong_version = {**body, "prediction": {**body["prediction"], "model_version": "7"}}
    refused = client.post("/feedback", json=wrong_version)
    assert refused.status_code == 404 and "model version 7" in refused.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"prediction": {"request_id": "nope"}, "action": "accepted"}, 404, "no prediction"),
        (
            {"prediction": {"cohort_date": DAY, "patient_id": "ghost"}, "action": "accepted"},
            404,
            "no score for patient ghost",
        ),
        ({"prediction": {"request_id": "x"}, "action": "overridden"}, 422, "reason_code"),
        ({"prediction": {"request_id": "x"}, "action": "ignored"}, 422, "action"),
        ({"prediction": {"patient_id": "p"}, "action": "accepted"}, 422, "prediction"),
    ],
)
def test_bad_feedback_is_refused(
    client: TestClient, body: dict[str, Any], status: int, words: str
) -> None:
    answer = client.post("/feedback", json=body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"] and "\n" not in answer.json()["error"]
    assert feedback_rows() == []


def test_csv_drop_records_or_quarantines_every_row(
    client: TestClient, scored_day: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    answer = client.post("/predict", json=EXAMPLE_PATIENT)
    client.app.state.telemetry.flush()  # type: ignore[attr-defined]
    drop = load_settings().home / "feedback" / f"{DAY}.csv"
    drop.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"request_id": answer.headers["X-Request-Id"], "action": "accepted"},
        {"cohort_date": DAY, "patient_id": scored_day[0], "action": "overridden",
         "reason_code": "known_af"},
        {"cohort_date": DAY, "patient_id": "ghost", "action": "accepted"},
        {"cohort_date": DAY, "patient_id": scored_day[1], "action": "overridden"},
        {"request_id": "unknown-request", "action": "accepted"},
        {"cohort_date": "yesterday", "patient_id": scored_day[2], "action": "accepted"},
    ]  # fmt: skip
    with drop.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["request_id", "cohort_date", "patient_id", "action",
                                         "reason_code"])  # fmt: skip
        writer.writeheader()
        writer.writerows(rows)
    for _ in range(2):  # importing again replaces, never duplicates
        assert main(["feedback", "import", str(drop)]) == 0
        summary = capsys.readouterr().out.strip().splitlines()[-1]
        assert '"rows_in": 6, "recorded": 2, "quarantined": 4' in summary
    kept = feedback_rows()
    assert len(kept) == 2
    by_patient = {r["patient_id"]: r for r in kept}
    assert by_patient[scored_day[0]]["reason_code"] == "known_af"
    assert by_patient[EXAMPLE_PATIENT["id"]]["request_id"] == answer.headers["X-Request-Id"]
    assert {r["source"] for r in kept} == {f"csv:{DAY}.csv"}
    reasons = warehouse.of(load_settings()).query_df(
        "SELECT row_number, reason FROM quarantine WHERE source = 'feedback' ORDER BY 1"
    )
    assert list(reasons["row_number"]) == [3, 4, 5, 6]
    assert "no score for patient ghost" in reasons["reason"][0]
    assert "reason_code is required" in reasons["reason"][1]
    assert "no prediction with request id" in reasons["reason"][2]
    assert "cohort_date" in reasons["reason"][3]


def test_missing_file_exits_2(stroke_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feedback", "import", str(stroke_home / "none.csv")]) == 2
    assert "no such feedback file" in capsys.readouterr().err
