"""The audit trail: one chained record per API prediction, audited batch slices, and
``stroke audit verify`` catching a rewritten or a deleted record (real app, real warehouse)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake
from starlette.testclient import TestClient

from stroke_dagster.audit import records as audit
from stroke_dagster.audit import rowhash
from stroke_dagster.cli import main
from stroke_dagster.core.schema import FEATURES, ID
from stroke_dagster.core.settings import load_settings
from stroke_dagster.warehouse import store as warehouse

DAY = "2026-01-05"


def records_of(df: Any) -> list[dict[str, Any]]:
    """Patients as the API sees them (missing as None, ids as text)."""
    out = []
    for row in df.to_dict(orient="records"):
        record = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        record[ID] = str(record[ID])
        out.append({k: record[k] for k in (ID, *FEATURES)})
    return out


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    df = simulate_patients(400, seed=11, with_label=False)
    return write_patients(df, tmp_path / f"{DAY}.csv")


def score_day(cohort: Path, **values: Any) -> dict[str, Any]:
    from stroke_dagster.model.store import load_model
    from stroke_dagster.scoring.batch import score_file

    settings = load_settings()
    if values:
        settings = settings.replace(**values)
    summary = score_file(
        cohort, load_model("champion", settings=settings), cohort_date=DAY, settings=settings
    )
    return summary.to_dict()


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", "verify", *args])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def rewrite_day(table: str, day: str, change: Any) -> None:
    """Rewrite one day of a warehouse table (as a tamperer with write access would)."""
    wh = warehouse.of(load_settings())
    rows = wh.table(table).to_pyarrow_table(
        filters=[("cohort_date", "=", dt.date.fromisoformat(day))]
    )
    write_deltalake(
        wh.table_uri(table),
        change(rows),
        mode="overwrite",
        predicate=f"cohort_date = '{day}'",
    )


def test_api_and_batch_hash_the_same_features() -> None:
    from stroke_dagster.simulate.generator import simulate_patients

    df = simulate_patients(300, seed=4, with_label=False)
    df.loc[[3, 7], "bmi"] = np.nan
    batch = rowhash.sha256_rows(audit.features_messages(pa.Table.from_pandas(df)))
    records = records_of(df)
    for i in (0, 3, 7, 299):
        assert bytes(rowhash.to_hex(batch[i : i + 1])[0]).decode() == audit.features_sha256(
            records[i]
        )
    # from pandas as well, and the kernel is SHA-256 itself
    assert (rowhash.sha256_rows(audit.features_messages(df)) == batch).all()
    message = audit.features_message(records[0])
    assert bytes(batch[0]) == hashlib.sha256(message).digest()
    # another value is another hash
    assert audit.features_sha256({**records[0], "age": records[0]["age"] + 0.5}) != (
        audit.features_sha256(records[0])
    )


def test_rowhash_matches_hashlib_for_every_length() -> None:
    rng = np.random.default_rng(0)
    lengths = np.arange(rowhash.MAX_PAYLOAD + 1).repeat(3)
    payload = np.zeros((len(lengths), rowhash.MAX_PAYLOAD), np.uint8)
    for i, n in enumerate(lengths):
        payload[i, :n] = rng.integers(0, 256, n)
    digests = rowhash.sha256_rows(rowhash.pad(payload, lengths))
    for i, n in enumerate(lengths):
        assert bytes(digests[i]) == hashlib.sha256(payload[i, :n].tobytes()).digest()


def test_batch_slice_is_audited_and_tampering_is_caught(
    champion_home: Path, cohort: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    score_day(cohort)
    score_day(cohort, audit={"code_version": "9.9.9"})  # a second slice replaces the first
    code, out = verify(capsys)
    assert code == 0, out
    wh = warehouse.of(load_settings())
    current = wh.query_df("SELECT * FROM score_audit WHERE is_current")
    assert len(current) == 400
    assert current["slice_seq"].tolist() == [1] * 400  # the second link of the day's chain
    assert set(current["code_version"]) == {"9.9.9"}
    assert set(current["requester"]) == {"cli"}
    assert current["thresholds"].str.contains("elevated").all()
    assert sorted(current["row_in_slice"]) == list(range(400))
    chain = wh.query_df("SELECT * FROM prediction_audit WHERE kind = 'slice' ORDER BY seq")
    assert list(chain["seq"]) == [0, 1] and list(chain["n_rows"]) == [400, 400]
    assert chain["prev_hash"][1] == chain["record_hash"][0]

    # one patient's probability rewritten: named
    victim = current.sort_values("row_in_slice")["patient_id"].iloc[17]

    def raise_one(table: pa.Table) -> pa.Table:
        hit = pc.and_(pc.equal(table["patient_id"], victim), table["is_current"])
        probability = pc.if_else(hit, 0.999, table["stroke_probability"])
        return table.set_column(
            table.schema.get_field_index("stroke_probability"), "stroke_probability", probability
        )

    rewrite_day("score_history", DAY, raise_one)
    code, out = verify(capsys)
    assert code == 1 and f"patient {victim}" in out and DAY in out, out

    # scored again (a clean slice), then one row deleted: the slice is named
    score_day(cohort)
    assert verify(capsys)[0] == 0
    rewrite_day(
        "score_history",
        DAY,
        lambda t: t.filter(pc.invert(pc.and_(pc.equal(t["patient_id"], victim), t["is_current"]))),
    )
    code, out = verify(capsys)
    assert code == 1 and "399 rows" in out and "slice v1:" in out, out


def test_slices_without_audit_have_no_audit_columns(champion_home: Path, cohort: Path) -> None:
    score_day(cohort, audit={"enabled": False})
    wh = warehouse.of(load_settings())
    current = wh.query_df("SELECT * FROM score_audit WHERE is_current")
    assert current["row_hash"].isna().all() and current["code_version"].isna().all()
    assert current["features_sha256"].isna().all()
    assert wh.query_df("SELECT count(*) AS n FROM prediction_audit")["n"][0] == 0


@pytest.fixture
def client(champion_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("STROKE_API_KEY", "audit-test-key")
    monkeypatch.setenv("STROKE_API_RELOAD_SECONDS", "0")
    from stroke_dagster.api.app import create_app

    with TestClient(create_app()) as http:
        http.headers["Authorization"] = "Bearer audit-test-key"
        deadline = time.monotonic() + 120
        while http.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield http


def test_api_predictions_are_chained_and_tampering_is_caught(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    from stroke_dagster.simulate.generator import simulate_patients

    patients = records_of(simulate_patients(5, seed=21, with_label=False))
    one = client.post("/predict", json=patients[0])
    many = client.post("/predict/batch", json=patients[1:])
    assert one.status_code == many.status_code == 200
    client.app.state.telemetry.flush()  # type: ignore[attr-defined]
    client.post("/predict", json=patients[0])
    client.app.state.telemetry.flush()  # type: ignore[attr-defined]

    wh = warehouse.of(load_settings())
    records = wh.query_df("SELECT * FROM prediction_audit ORDER BY seq")
    assert list(records["seq"]) == list(range(6))
    assert records["chain_id"].nunique() == 1 and records["chain_id"][0].startswith("api:")
    first = records.iloc[0]
    assert first["request_id"] == one.headers["X-Request-Id"]
    assert first["features_sha256"] == audit.features_sha256(patients[0])
    assert first["stroke_probability"] == one.json()["stroke_probability"]
    expected_key = "key:" + hashlib.sha256(b"audit-test-key").hexdigest()[:12]
    assert set(records["requester"]) == {expected_key}
    batch = records[records["request_id"] == many.headers["X-Request-Id"]]
    assert list(batch["patient_id"]) == [p[ID] for p in patients[1:]]
    assert records["model_run_id"].notna().all() and records["code_version"].notna().all()
    day = str(records["cohort_date"][0])[:10]
    assert verify(capsys)[0] == 0

    # a rewritten tier is named by its request id
    target = records.iloc[2]

    def retier(table: pa.Table) -> pa.Table:
        hit = pc.equal(table["seq"], int(target["seq"]))
        tier = pc.if_else(
            hit, "low" if target["risk_tier"] != "low" else "high", table["risk_tier"]
        )
        return table.set_column(table.schema.get_field_index("risk_tier"), "risk_tier", tier)

    rewrite_day(audit.AUDIT_TABLE, day, retier)
    code, out = verify(capsys, "--days", "1")
    assert code == 1 and f"request {target['request_id']}" in out and "seq 2" in out, out

    # put it back, then delete a record: the gap is named
    rewrite_day(
        audit.AUDIT_TABLE,
        day,
        lambda t: pa.Table.from_pylist(
            [
                r if r["seq"] != 2 else {**r, "risk_tier": target["risk_tier"]}
                for r in t.to_pylist()
            ],
            schema=t.schema,
        ),
    )
    assert verify(capsys)[0] == 0
    rewrite_day(audit.AUDIT_TABLE, day, lambda t: t.filter(pc.not_equal(t["seq"], 4)))
    code, out = verify(capsys)
    assert code == 1 and "seq 4 missing" in out, out


def test_audit_can_be_turned_off(champion_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROKE_AUDIT", "0")
    monkeypatch.setenv("STROKE_API_RELOAD_SECONDS", "0")
    from stroke_dagster.api.app import create_app
    from stroke_dagster.api.models import EXAMPLE_PATIENT

    with TestClient(create_app()) as http:
        while http.get("/ready").status_code != 200:
            time.sleep(0.1)
        assert http.post("/predict", json=EXAMPLE_PATIENT).status_code == 200
        assert http.app.state.audit is None  # type: ignore[attr-defined]
    wh = warehouse.of(load_settings())
    assert wh.query_df("SELECT count(*) AS n FROM prediction_audit")["n"][0] == 0


def test_retention_deletes_old_audit_days(champion_home: Path) -> None:
    settings = load_settings().replace(audit={"retention_days": 30})
    wh = warehouse.of(settings)
    log = audit.AuditLog(lambda t: wh.append(audit.AUDIT_TABLE, t), code_version="1", requester="x")

    class Model:
        name, version = "StrokeRF", "1"
        model = None
        thresholds = type("T", (), {"to_json": staticmethod(lambda: "{}")})

    rows = []
    for ts in (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC)):
        rows += log.prediction_rows(
            ts=ts,
            request_id=ts.isoformat(),
            records=[{}],
            probabilities=[0.1],
            tiers=["low"],
            model=Model(),
        )
    log.write(log.link(rows))
    done = wh.maintain(now=dt.datetime(2026, 3, 5, tzinfo=dt.UTC))
    assert done["audit_expired_rows"] == 1
    left = wh.query_df("SELECT cohort_date FROM prediction_audit")
    assert [str(d)[:10] for d in left["cohort_date"]] == ["2026-03-01"]


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], stroke_home: Path) -> None:
    code, out = verify(capsys, "--days", "0")
    assert code == 2 and out.strip().count("\n") == 0 and "--days" in out
