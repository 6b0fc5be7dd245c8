"""``POST /predict`` with ``"explain": true`` against a real uvicorn server and champion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _api_server import ApiServer, copy_home

from stroke_dagster.core.schema import FEATURES, ID
from stroke_dagster.simulate.generator import simulate_patients


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, _champion_home: Path) -> Iterator[ApiServer]:
    home = copy_home(_champion_home, tmp_path_factory.mktemp("explain") / "home")
    srv = ApiServer(home, wait_ready=True)
    yield srv
    srv.stop()


def _payload(row) -> dict:  # noqa: ANN001
    out = {}
    for key in (ID, *FEATURES):
        value = row[key]
        out[key] = None if value != value else (value.item() if hasattr(value, "item") else value)
    out[ID] = str(out[ID])
    return out


def test_explanations_add_up_to_the_answered_probability(server: ApiServer) -> None:
    patients = simulate_patients(8, seed=31, with_label=False)
    patients.loc[patients.index[0], "bmi"] = np.nan
    with server.client() as http:
        for i in range(len(patients)):
            payload = _payload(patients.iloc[i])
            plain = http.post("/predict", json=payload).json()
            assert "explanation" not in plain
            answer = http.post("/predict", json={**payload, "explain": True})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["stroke_probability"] == pytest.approx(plain["stroke_probability"])
            e = body["explanation"]
            assert e["method"] == "treeshap"
            features = [c["feature"] for c in e["contributions"]]
            assert sorted(features) == sorted(FEATURES)
            sizes = [abs(c["contribution"]) for c in e["contributions"]]
            assert sizes == sorted(sizes, reverse=True)
            total = e["base_value"] + sum(c["contribution"] for c in e["contributions"])
            assert total == pytest.approx(body["stroke_probability"], abs=1e-6)
            bmi = next(c for c in e["contributions"] if c["feature"] == "bmi")
            assert bmi["value"] == payload["bmi"]
        bad = http.post("/predict", json={**_payload(patients.iloc[0]), "explain": "maybe"})
        assert bad.status_code == 422
