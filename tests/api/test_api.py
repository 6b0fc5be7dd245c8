"""The scoring API through real HTTP: one uvicorn process for the module, on a trained home copy.

The server reloads every second and flushes telemetry every 0.2 s. Tests that move the
``champion`` alias put it back, and the service before any champion exists has a server of its
own, so the tests pass in any order.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _api_server import ApiServer, copy_home, stroke_command, wait_for

from stroke_dagster.core.schema import CATEGORICAL_FIELDS, FEATURES, ID, NUMERIC_FEATURES
from stroke_dagster.core.settings import MODEL_NAME, load_settings

pytestmark = pytest.mark.slow
MAX_BODY = 64 * 1024


def payload(row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    """One patient as JSON-able dict (NaN bmi -> null, numpy scalars -> Python)."""
    out: dict[str, Any] = {}
    for key in (ID, *FEATURES):
        value = row[key]
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        out[key] = value
    out[ID] = str(out[ID])
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, _champion_home: Path) -> Path:
    """A copy of the trained home (champion alias on version 1)."""
    return copy_home(_champion_home, tmp_path_factory.mktemp("api") / "home")


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[ApiServer]:
    srv = ApiServer(
        home,
        wait_ready=True,
        STROKE_API_MAX_BODY=str(MAX_BODY),
        STROKE_TELEMETRY_FEATURES="1",
    )
    yield srv
    srv.stop()


@pytest.fixture
def env_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point this process (registry, warehouse) at the served home."""
    monkeypatch.setenv("STROKE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from stroke_dagster.model import registry

    registry.clear_cache()
    return home


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    from stroke_dagster.simulate.generator import simulate_patients

    df = simulate_patients(40, seed=11, with_label=False, id_start=5000)
    df.loc[df.index[:5], "bmi"] = np.nan  # some missing bmi for sure
    return df


def _client(home: Path | None = None) -> Any:
    import mlflow

    from stroke_dagster.model.registry import _set_uris

    uri = (
        f"sqlite:///{home / 'mlflow.db'}"
        if home is not None
        else _set_uris(settings=load_settings())
    )
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def log_count(where: str = "true") -> int:
    from stroke_dagster.warehouse import store as warehouse

    return int(
        warehouse.query_df(
            f"SELECT count(*) AS n FROM inference_log WHERE {where}", settings=load_settings()
        )["n"][0]
    )


def settled_count(where: str = "true") -> int:
    """The row count once earlier tests' rows are flushed (the server flushes every 0.2 s)."""
    previous = -1
    while True:
        current = log_count(where)
        if current == previous:
            return current
        previous = current
        time.sleep(0.6)


# -- before any champion ----------------------------------------------------------------------


def test_service_without_champion_is_not_ready_until_the_alias_is_set(
    tmp_path: Path, _champion_home: Path, patients: pd.DataFrame
) -> None:
    """No champion yet: alive but not ready (503); the alias set later is picked up live."""
    home = copy_home(_champion_home, tmp_path / "home")
    client = _client(home)
    client.delete_registered_model_alias(MODEL_NAME, "champion")
    server = ApiServer(home)
    try:
        with server.client() as http:
            assert http.get("/health").json() == {"status": "ok"}
            ready = http.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            assert http.get("/v2/health/live").status_code == 200
            assert http.get("/v2/health/ready").status_code == 503
            assert http.get(f"/v2/models/{MODEL_NAME}/ready").status_code == 503
            answer = http.post("/predict", json=payload(patients.iloc[0]))
            assert answer.status_code == 503
            assert "champion" in answer.json()["error"]
            client.set_registered_model_alias(MODEL_NAME, "champion", "1")
            ready = wait_for(lambda: http.get("/ready").status_code == 200, timeout=90)
            assert ready, http.get("/ready").json()
            body = http.get("/ready").json()
            assert (body["model_name"], body["model_version"]) == (MODEL_NAME, "1")
            assert http.get("/v2/health/ready").json() == {"ready": True}
            assert http.post("/predict", json=payload(patients.iloc[0])).status_code == 200
    finally:
        server.stop()


# -- scoring ------------------------------------------------------------------------------------


def test_predict_equals_the_registered_pipeline(
    server: ApiServer, env_home: Path, patients: pd.DataFrame
) -> None:
    from stroke_dagster.core.risk import assign_tiers
    from stroke_dagster.model.registry import load_model

    model = load_model("champion", settings=load_settings())
    expected = model.pipeline.predict_proba(patients[list(FEATURES)])[:, 1]
    tiers = assign_tiers(expected, model.thresholds)
    with server.client() as http:
        for i in range(len(patients)):
            answer = http.post("/predict", json=payload(patients.iloc[i]))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["id"] == str(patients[ID].iloc[i])
            assert body["stroke_probability"] == pytest.approx(expected[i], rel=1e-12, abs=1e-15)
            assert body["risk_tier"] == tiers[i]
            assert (body["model_name"], body["model_version"]) == (MODEL_NAME, "1")


def test_batch_answers_in_order_like_single_requests(
    server: ApiServer, patients: pd.DataFrame
) -> None:
    rows = [payload(patients.iloc[i]) for i in range(len(patients))]
    rows[3].pop(ID)  # id is optional
    with server.client() as http:
        batch = http.post("/predict/batch", json=rows)
        assert batch.status_code == 200, batch.text
        predictions = batch.json()["predictions"]
        singles = [http.post("/predict", json=row).json() for row in rows[:8]]
    assert len(predictions) == len(rows)
    assert predictions[3]["id"] is None
    assert [p["id"] for p in predictions[:3]] == [r[ID] for r in rows[:3]]
    for single, batched in zip(singles, predictions, strict=False):
        assert single["stroke_probability"] == batched["stroke_probability"]
        assert single["risk_tier"] == batched["risk_tier"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("age", 131.5),
        ("avg_glucose_level", -7.25),
        ("bmi", "abc-not-a-number"),
        ("gender", "Martian-xyz"),
        ("smoking_status", "cigars-daily"),
        ("hypertension", 7),
    ],
)
def test_invalid_value_gets_422_naming_the_field_without_echo(
    server: ApiServer, patients: pd.DataFrame, field: str, value: Any
) -> None:
    row = payload(patients.iloc[0])
    row[field] = value
    with server.client() as http:
        answer = http.post("/predict", json=row)
        in_batch = http.post("/predict/batch", json=[payload(patients.iloc[1]), row])
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"][0]["field"] == field
    assert field in body["error"]
    assert str(value) not in answer.text
    assert str(row[ID]) not in answer.text
    assert in_batch.status_code == 422
    assert in_batch.json()["detail"][0] == {**body["detail"][0], "row": 1}
    assert str(value) not in in_batch.text


def test_missing_unknown_fields_get_422_and_malformed_json_400(
    server: ApiServer, patients: pd.DataFrame
) -> None:
    row = payload(patients.iloc[0])
    with server.client() as http:
        missing = http.post("/predict", json={k: v for k, v in row.items() if k != "age"})
        unknown = http.post("/predict", json={**row, "BMI_typo": 31.0})
        broken = http.post(
            "/predict",
            content=b'{"age": 55, "gender": "Secret-Value',
            headers={"content-type": "application/json"},
        )
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "age"
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "BMI_typo"
    assert broken.status_code == 400 and "Secret-Value" not in broken.text  # not JSON at all
    assert broken.json()["error"].startswith("request body is not valid JSON")


def test_oversized_body_gets_413(server: ApiServer, patients: pd.DataFrame) -> None:
    rows = [payload(patients.iloc[i % len(patients)]) for i in range(2000)]
    body = json.dumps(rows).encode()
    assert len(body) > MAX_BODY

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count the bytes
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    with server.client() as http:
        declared = http.post(
            "/predict/batch", content=body, headers={"content-type": "application/json"}
        )
    with server.client() as http:
        streamed = http.post(
            "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413
    with server.client() as http:  # and the service keeps working
        assert http.post("/predict/batch", json=rows[:50]).status_code == 200


def test_kserve_v2_metadata_and_infer_round_trip(server: ApiServer, patients: pd.DataFrame) -> None:
    rows = [payload(patients.iloc[i]) for i in range(6)]
    with server.client() as http:
        meta = http.get(f"/v2/models/{MODEL_NAME}").json()
        types = {t["name"]: t["datatype"] for t in meta["inputs"]}
        assert list(types) == list(FEATURES)
        assert {types[c.name] for c in CATEGORICAL_FIELDS} == {"BYTES"}
        assert {types[n] for n in NUMERIC_FEATURES} == {"FP64"}
        assert types["hypertension"] == "INT64"
        request = {
            "id": "r-1",
            "inputs": [
                {
                    "name": name,
                    "shape": [len(rows), 1] if name == "age" else [len(rows)],
                    "datatype": types[name],
                    "data": [r[name] for r in rows],
                }
                for name in FEATURES
            ],
        }
        infer = http.post(f"/v2/models/{MODEL_NAME}/infer", json=request)
        batch = http.post("/predict/batch", json=rows).json()["predictions"]
        bad = json.loads(json.dumps(request))
        bad["inputs"][1]["data"][2] = 250.5  # age out of range
        rejected = http.post(f"/v2/models/{MODEL_NAME}/infer", json=bad)
        wrong_type = json.loads(json.dumps(request))
        wrong_type["inputs"][0]["datatype"] = "FP32"
        unknown_model = http.post("/v2/models/Other/infer", json=request)
    assert infer.status_code == 200, infer.text
    body = infer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL_NAME, "1", "r-1")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["stroke_probability"]["datatype"] == "FP64"
    assert outputs["risk_tier"]["datatype"] == "BYTES"
    assert outputs["stroke_probability"]["shape"] == [len(rows)]
    assert outputs["stroke_probability"]["data"] == [p["stroke_probability"] for p in batch]
    assert outputs["risk_tier"]["data"] == [p["risk_tier"] for p in batch]
    assert rejected.status_code == 422
    assert "age" in rejected.json()["error"] and "row 2" in rejected.json()["error"]
    assert "250.5" not in rejected.text
    assert unknown_model.status_code == 404


def test_openapi_docs_have_examples(server: ApiServer) -> None:
    with server.client() as http:
        assert http.get("/docs").status_code == 200
        spec = http.get("/openapi.json").json()
    examples = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    from stroke_dagster.api.models import Patient

    for example in examples.values():
        Patient.model_validate(example["value"])  # every documented example is valid
    assert "/v2/models/{model_name}/infer" in spec["paths"]


# -- telemetry ----------------------------------------------------------------------------------


def test_telemetry_rows_reach_the_inference_log_view(
    server: ApiServer, env_home: Path, patients: pd.DataFrame
) -> None:
    before = settled_count()
    row = payload(patients.iloc[0])
    with server.client() as http:
        assert http.post("/predict", json=row).status_code == 200
        assert http.post("/predict/batch", json=[row, row, row]).status_code == 200
        assert http.post("/predict", json={**row, "age": 999.0}).status_code == 422
        http.get("/health")  # probes are not logged
    assert wait_for(lambda: log_count() == before + 3, timeout=30), (before, log_count())
    from stroke_dagster.warehouse import store as warehouse

    last = warehouse.query_df(
        "SELECT path, status_code, n_patients, mean_age, mean_probability, tier_low + "
        "tier_elevated + tier_high AS tiers, model_version, latency_ms, date "
        "FROM inference_log ORDER BY ts DESC LIMIT 3",
        settings=load_settings(),
    )
    assert list(last["status_code"]) == [422, 200, 200]
    assert list(last["n_patients"]) == [0, 3, 1]
    assert list(last["tiers"].iloc[1:]) == [3, 1]
    assert last["mean_age"].iloc[1] == pytest.approx(row["age"])
    assert last["model_version"].iloc[1] == "1"
    assert (last["latency_ms"] > 0).all()
    assert pd.Timestamp(last["date"].iloc[0]).date() == dt.datetime.now(dt.UTC).date()


def test_live_traffic_cohort_for_drift(
    server: ApiServer, env_home: Path, patients: pd.DataFrame
) -> None:
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.warehouse.telemetry import request_cohort

    rows = [payload(patients.iloc[i]) for i in range(10, 14)]
    for i, row in enumerate(rows):
        row[ID] = f"cohort-check-{i}"
    with server.client() as http:
        assert http.post("/predict/batch", json=rows).status_code == 200

    def cohort() -> pd.DataFrame:
        df = request_cohort(load_settings(), dt.datetime.now(dt.UTC).date())
        return df[df[ID].isin([r[ID] for r in rows])]

    found = wait_for(lambda: len(cohort()) == len(rows), timeout=30)
    assert found
    df = cohort().set_index(ID)
    assert list(df.columns) == list(FEATURES)
    for row in rows:
        assert df.loc[row[ID], "age"] == row["age"]
        assert df.loc[row[ID], "gender"] == row["gender"]
        assert (pd.isna(df.loc[row[ID], "bmi"]) and row["bmi"] is None) or (
            df.loc[row[ID], "bmi"] == row["bmi"]
        )


# -- model changes --------------------------------------------------------------------------------


def test_alias_move_is_hot_reloaded_while_requests_are_in_flight(
    server: ApiServer, env_home: Path, patients: pd.DataFrame
) -> None:
    client = _client()
    v1 = client.get_model_version(MODEL_NAME, "1")
    v2 = client.create_model_version(MODEL_NAME, v1.source, run_id=v1.run_id, tags=v1.tags)
    assert wait_for(
        lambda: client.get_model_version(MODEL_NAME, v2.version).status == "READY", timeout=30
    )
    row = payload(patients.iloc[0])
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with server.client() as http:
            while not stop.is_set():
                answer = http.post("/predict", json=row)
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    versions.append(answer.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    reload: dict[str, Any] = {}
    try:
        wait_for(lambda: len(statuses) > 20, timeout=30)
        client.set_registered_model_alias(MODEL_NAME, "champion", v2.version)
        with server.client() as http:
            moved = wait_for(
                lambda: http.get("/ready").json()["model_version"] == str(v2.version), timeout=90
            )
        count = len(statuses)
        wait_for(lambda: len(statuses) > count + 20, timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        # back to v1 on demand, without waiting for the periodic check (other tests expect v1)
        client.set_registered_model_alias(MODEL_NAME, "champion", "1")
        with server.client() as http:
            reload = http.post("/admin/reload").json()
            if reload["model_version"] != "1":  # the periodic check got there first
                wait_for(lambda: http.get("/ready").json()["model_version"] == "1", timeout=30)
    assert moved
    assert set(statuses) == {200}
    assert versions[0] == "1" and versions[-1] == str(v2.version)
    assert reload["model_version"] == "1"


# -- the service and the batch pipeline at the same time ----------------------------------------


def _score_command(input_path: Path, day: str) -> list[str]:
    """``stroke score --input F --cohort-date D``."""
    command = stroke_command("score", "--input", str(input_path), "--cohort-date", day)
    if command is not None:
        return command
    if importlib.util.find_spec("stroke_dagster.cli.score") is not None:
        runner = (
            "import argparse, sys\n"
            "from stroke_dagster.cli import score\n"
            "parser = argparse.ArgumentParser()\n"
            "score.add_arguments(parser)\n"
            "sys.exit(score.run(parser.parse_args(sys.argv[1:])))\n"
        )
        return [sys.executable, "-c", runner, "--input", str(input_path), "--cohort-date", day]
    # Without the score command: a process writing to the warehouse as hard as it can.
    loop = (
        "import time\n"
        "from stroke_dagster.warehouse import store as warehouse\n"
        "from stroke_dagster.core.settings import load_settings\n"
        "end = time.monotonic() + 8\n"
        "while time.monotonic() < end:\n"
        "    with warehouse.write_transaction(load_settings()) as con:\n"
        "        con.execute('CREATE TABLE IF NOT EXISTS api_test_load(x INTEGER)')\n"
        "        con.execute('INSERT INTO api_test_load SELECT range FROM range(1000)')\n"
    )
    return [sys.executable, "-c", loop]


def test_batch_scoring_while_serving_loses_no_telemetry(
    server: ApiServer, env_home: Path, patients: pd.DataFrame, tmp_path: Path
) -> None:
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    cohort = write_patients(simulate_patients(1000, seed=3, with_label=False), tmp_path / "c.csv")
    marker = "/predict/batch"
    before = settled_count(f"path = '{marker}'")
    row = payload(patients.iloc[2])
    env = {**__import__("os").environ, "STROKE_HOME": str(env_home)}
    scorer = subprocess.Popen(
        _score_command(cohort, "2026-03-01"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sent, failures = 0, []
    with server.client() as http:
        while scorer.poll() is None or sent < 50:
            answer = http.post(marker, json=[row, row])
            sent += 1
            if answer.status_code != 200:
                failures.append(answer.status_code)
            # the warehouse stays readable for analysts meanwhile
            if sent % 25 == 0:
                log_count()
    out, err = scorer.communicate(timeout=300)
    assert scorer.returncode == 0, err
    assert "lock" not in err.lower()
    if importlib.util.find_spec("stroke_dagster.cli.score") is not None:
        from stroke_dagster.warehouse import store as warehouse

        scored = warehouse.query_df(
            "SELECT count(*) AS n FROM scores WHERE cohort_date = DATE '2026-03-01'",
            settings=load_settings(),
        )
        assert int(scored["n"][0]) == 1000
    assert failures == []
    assert wait_for(lambda: log_count(f"path = '{marker}'") == before + sent, timeout=30), (
        before + sent,
        log_count(f"path = '{marker}'"),
    )


def test_unknown_path_and_auth_off(server: ApiServer, patients: pd.DataFrame) -> None:
    with server.client() as http:
        assert http.get("/nope").status_code == 404
        # no STROKE_API_KEY: any (or no) Authorization header is accepted
        answer = http.post(
            "/predict", json=payload(patients.iloc[0]), headers={"Authorization": "Bearer x"}
        )
        assert answer.status_code == 200


def test_request_with_unreachable_registry_keeps_serving(
    server: ApiServer, env_home: Path, patients: pd.DataFrame
) -> None:
    """The alias disappearing (e.g. deleted by mistake) keeps the served model in place."""
    client = _client()
    client.delete_registered_model_alias(MODEL_NAME, "champion")
    try:
        with server.client() as http:
            reload = http.post("/admin/reload").json()
            assert reload["changed"] is False and reload["model_version"] == "1"
            assert "champion" in reload["last_error"]
            assert http.post("/predict", json=payload(patients.iloc[0])).status_code == 200
    finally:
        client.set_registered_model_alias(MODEL_NAME, "champion", "1")
