"""The drift detector (both engines), its persistence per model version, and ``stroke drift``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import load_settings
from stroke_dagster.monitoring.drift import DriftConfig, TabularDriftDetector
from stroke_dagster.monitoring.drift.detector import pool_rare_codes
from stroke_dagster.monitoring.drift.stats import corrected_thresholds, normalised_wasserstein, psi
from stroke_dagster.simulate.generator import simulate_patients, write_patients

BACKENDS = ("alibi", "scipy")


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return simulate_patients(3000, seed=1)


@pytest.fixture(scope="module")
def detectors(reference: pd.DataFrame) -> dict[str, TabularDriftDetector]:
    return {b: TabularDriftDetector(DriftConfig(backend=b)).fit(reference) for b in BACKENDS}


def _cohort(seed: int, n: int = 500) -> pd.DataFrame:
    return simulate_patients(n, seed=seed, with_label=False)


def _shift(df: pd.DataFrame, column: str, sds: float, reference: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out[column] = out[column] + sds * reference[column].std()
    return out


@pytest.mark.parametrize("shifted", [False, True], ids=["unshifted", "shifted"])
def test_backends_agree_on_verdict_and_p_values(detectors, reference, shifted: bool) -> None:
    cohort = _cohort(seed=21)
    if shifted:
        cohort = _shift(cohort, "avg_glucose_level", 0.5, reference)
    reports = {b: d.check(cohort) for b, d in detectors.items()}
    alibi, scipy = reports["alibi"], reports["scipy"]
    assert alibi.is_drift == scipy.is_drift == shifted
    assert alibi.drifted_features == scipy.drifted_features
    assert (alibi.drifted_features == ["avg_glucose_level"]) if shifted else not alibi.is_drift
    for feature, p in scipy.p_values.items():  # alibi-detect keeps p-values as float32
        assert alibi.p_values[feature] == pytest.approx(p, rel=1e-4, abs=1e-30)
    assert [r.statistic for r in alibi.results] == pytest.approx(
        [r.statistic for r in scipy.results], rel=1e-4
    )


def test_report_rows_carry_test_threshold_and_effect(detectors, reference) -> None:
    report = detectors["scipy"].check(_shift(_cohort(seed=22), "age", 0.5, reference))
    frame = report.to_frame()
    assert list(frame["feature"])[:10] == [
        "gender", "age", "hypertension", "heart_disease", "ever_married", "work_type",
        "Residence_type", "avg_glucose_level", "bmi", "smoking_status",
    ]  # fmt: skip
    assert "bmi_missing_rate" in set(frame["feature"])
    age = report.result("age")
    assert age.test == "ks+mwu" and age.effect_metric == "wasserstein"
    assert age.wasserstein == pytest.approx(0.5, abs=0.12)  # a 0.5-sd shift, in sd units
    assert age.threshold == pytest.approx(0.05 / 11)  # Bonferroni over the 11 tests
    assert age.is_drift and age.significant and age.p_value < age.threshold
    gender = report.result("gender")
    assert gender.test == "chi2" and gender.effect_metric == "psi" and gender.wasserstein is None
    assert report.summary()["n_tests"] == 11


def test_missing_rate_is_monitored_on_its_own(detectors) -> None:
    cohort = _cohort(seed=23)
    rng = np.random.default_rng(0)
    cohort.loc[rng.random(len(cohort)) < 0.30, "bmi"] = np.nan  # bmi goes ~30% missing
    for detector in detectors.values():
        report = detector.check(cohort)
        assert report.drifted_features == ["bmi_missing_rate"]
        row = report.result("bmi_missing_rate")
        assert row.kind == "missingness" and row.effect_metric == "abs_rate_diff"
        assert row.effect_size > 0.2
        assert not report.result("bmi").is_drift  # the observed values did not change


def test_cohort_with_no_observed_bmi_still_checks(detectors) -> None:
    cohort = _cohort(seed=24).assign(bmi=np.nan)
    report = detectors["scipy"].check(cohort)
    assert report.p_values["bmi"] is None  # nothing to compare: outside the family
    assert "bmi_missing_rate" in report.drifted_features
    assert report.summary()["n_tests"] == 10


def test_effect_floor_blocks_trivial_shift_at_large_n() -> None:
    """At 200,000 rows a 0.03-sd shift is 'significant' yet trivial; 0.25 sd still alarms."""
    reference = simulate_patients(200_000, seed=2)
    detector = TabularDriftDetector(DriftConfig(backend="scipy")).fit(reference)
    cohort = simulate_patients(200_000, seed=3, with_label=False)
    trivial = detector.check(_shift(cohort, "age", 0.03, reference))
    age = trivial.result("age")
    assert age.significant and age.effect_size < age.effect_floor
    assert not trivial.is_drift
    real = detector.check(_shift(cohort, "age", 0.25, reference))
    assert real.drifted_features == ["age"]
    # the same floor lets a 0.25-sd shift through at 500 rows
    small = detector.check(_shift(cohort.iloc[:500], "age", 0.25, reference))
    assert "age" in small.drifted_features


def test_rare_categories_are_pooled_for_chi_squared() -> None:
    codes = np.array([0] * 600 + [1] * 395 + [2] * 5)  # category 2 is 0.5% of the reference
    lookup = pool_rare_codes(codes, n_codes=4, min_share=0.01)
    assert lookup[2] == lookup[3] == 1  # rare + unseen join the smallest common category
    assert lookup[0] == 0 and lookup[1] == 1
    # two rare categories that together pass the share form one group of their own
    codes = np.array([0] * 500 + [1] * 488 + [2] * 6 + [3] * 6)  # 0.6% each, 1.2% together
    lookup = pool_rare_codes(codes, n_codes=5, min_share=0.01)
    assert lookup[2] == lookup[3] == lookup[4] == 2


def test_one_rare_category_patient_does_not_alarm(detectors) -> None:
    cohort = _cohort(seed=25)
    cohort.loc[:2, "gender"] = "Other"  # 3 of 500 vs ~0.02% in the reference
    report = detectors["alibi"].check(cohort)
    assert not report.result("gender").is_drift


def test_corrections_and_effect_sizes() -> None:
    p = np.array([0.001, 0.008, 0.02, 0.5, np.nan])
    assert corrected_thresholds(p, 0.05, "bonferroni") == pytest.approx([0.0125] * 5)
    # BH: 0.008 < 2 * 0.05 / 4 = 0.025, 0.02 < 3 * 0.05 / 4 = 0.0375, 0.5 > 0.05
    assert corrected_thresholds(p, 0.05, "fdr") == pytest.approx([0.0375] * 5)
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    ref = np.sort(np.random.default_rng(0).normal(size=20_000))
    assert normalised_wasserstein(ref, ref + 0.25, 1.0) == pytest.approx(0.25, abs=1e-9)


def test_prediction_drift_against_holdout(reference) -> None:
    rng = np.random.default_rng(0)
    holdout = pd.DataFrame({"stroke_probability": rng.beta(1, 15, 800)})
    holdout["risk_tier"] = np.where(holdout.stroke_probability > 0.15, "high", "low")
    detector = TabularDriftDetector(DriftConfig(backend="alibi")).fit(reference, holdout)
    cohort = _cohort(seed=26)
    same = pd.DataFrame({"stroke_probability": rng.beta(1, 15, 500)})
    same["risk_tier"] = np.where(same.stroke_probability > 0.15, "high", "low")
    riskier = same.assign(stroke_probability=np.clip(same.stroke_probability * 2.5, 0, 1))
    riskier["risk_tier"] = np.where(riskier.stroke_probability > 0.15, "high", "low")
    assert not detector.check(cohort, same).is_drift
    report = detector.check(cohort, riskier)
    assert {"stroke_probability", "risk_tier"} <= set(report.drifted_features)
    assert report.summary()["prediction_drift"] and not report.summary()["feature_drift"]
    assert report.result("risk_tier").kind == "prediction"


def test_bad_input_raises_input_error(detectors) -> None:
    with pytest.raises(InputError, match="missing column"):
        detectors["scipy"].check(_cohort(seed=27).drop(columns=["age"]))
    with pytest.raises(InputError, match="no valid rows"):
        detectors["scipy"].check(_cohort(seed=27).iloc[:0])


def test_config_from_settings() -> None:
    from stroke_dagster.core.settings import SettingsError, load_settings

    environ = {
        "STROKE_DRIFT_BACKEND": "scipy",
        "STROKE_DRIFT_CORRECTION": "fdr",
        "STROKE_DRIFT_WASSERSTEIN_FLOOR": "0.2",
    }
    config = load_settings(environ).drift
    assert isinstance(config, DriftConfig)
    assert (config.backend, config.correction, config.wasserstein_floor) == ("scipy", "fdr", 0.2)
    assert config.with_backend("alibi").backend == "alibi"
    with pytest.raises(SettingsError, match="^STROKE_DRIFT_BACKEND must be one of alibi, scipy"):
        load_settings({"STROKE_DRIFT_BACKEND": "evidently"})


# ------------------------------------------------------------------ persistence per version
def test_detector_is_fitted_once_per_model_version(champion_home: Path) -> None:
    from stroke_dagster.monitoring.drift.store import detector_for_model, detector_path

    config = DriftConfig(backend="scipy")
    first = detector_for_model(config=config, settings=load_settings())
    assert first.fitted_now and first.version == "1"
    assert (
        first.path
        == detector_path("1", "scipy", settings=load_settings())
        == champion_home / "models/1/drift_scipy.parquet"
    )
    assert first.path.is_file()
    stamp = first.path.stat().st_mtime_ns
    second = detector_for_model(
        config=DriftConfig(backend="scipy", alpha=0.01), settings=load_settings()
    )
    assert not second.fitted_now and second.path.stat().st_mtime_ns == stamp
    assert second.detector.config.alpha == 0.01  # check-time settings follow the caller
    # the holdout predictions were fitted too: prediction drift is available
    assert any(g.source == "predictions" for g in second.detector.groups)
    first.path.write_bytes(b"not parquet")  # unreadable -> refitted, not a failure
    assert detector_for_model(config=config, settings=load_settings()).fitted_now


# ---------------------------------------------------------------------------------- CLI
def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict], str]:
    from stroke_dagster.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_cli_two_inputs_one_shifted(
    champion_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = write_patients(_cohort(seed=36), tmp_path / "iid.csv")
    shifted_df = _cohort(seed=32)
    shifted_df["age"] = (shifted_df["age"] + 12).clip(upper=120)
    shifted = write_patients(shifted_df, tmp_path / "shifted.parquet")
    for backend in BACKENDS:
        code, lines, _ = _run_cli(
            ["drift", "--input", str(iid), "--input", str(shifted), "--backend", backend], capsys
        )
        assert code == 0
        assert [line["input"] for line in lines] == [str(iid), str(shifted)]
        assert [line["is_drift"] for line in lines] == [False, True]
        assert "age" in lines[1]["drifted_features"] and lines[0]["drifted_features"] == []
        assert set(lines[0]["p_values"]) >= {"age", "bmi", "gender", "bmi_missing_rate"}
        assert lines[1]["p_values"]["age"] < 1e-6 and lines[1]["backend"] == backend


def test_cli_many_inputs_one_line_each(
    champion_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(write_patients(_cohort(seed=33), tmp_path / "c.csv"))
    _run_cli(["drift", "--input", path, "--backend", "scipy"], capsys)  # fits and stores
    code, lines, _ = _run_cli(["drift", *["--input", path] * 21, "--backend", "scipy"], capsys)
    assert code == 0 and len(lines) == 21
    assert {line["input"] for line in lines} == {path}
    assert len({json.dumps(line["p_values"], sort_keys=True) for line in lines}) == 1


def test_cli_bad_input_exits_2(
    champion_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = _run_cli(["drift", "--input", str(tmp_path / "nope.csv")], capsys)
    assert code == 2 and lines == [] and "not found" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("id,age\n1,50\n")
    code, _, err = _run_cli(["drift", "--input", str(bad), "--backend", "scipy"], capsys)
    assert code == 2 and "missing required column" in err
    good = str(write_patients(_cohort(seed=34), tmp_path / "g.csv"))
    code, _, err = _run_cli(
        ["drift", "--input", good, "--input", good, "--cohort-date", "2026-02-01"], capsys
    )
    assert code == 2 and "exactly one --input" in err


def test_cli_cohort_date_writes_warehouse(
    champion_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stroke_dagster.warehouse import store as warehouse

    path = str(write_patients(_cohort(seed=36), tmp_path / "c.csv"))
    argv = ["drift", "--input", path, "--cohort-date", "2026-02-03", "--backend", "scipy"]
    for _ in range(2):  # re-running replaces the day
        code, lines, _ = _run_cli(argv, capsys)
        assert code == 0 and lines[0]["cohort_date"] == "2026-02-03"
    metrics = warehouse.query_df("SELECT * FROM drift_metrics", settings=load_settings())
    assert len(metrics) == 11 and set(metrics["reference_model_version"]) == {"1"}
    assert set(metrics["backend"]) == {"scipy"}
    summary = warehouse.query_df("SELECT * FROM drift_summary", settings=load_settings())
    assert len(summary) == 1 and not summary["is_drift"][0] and summary["run_id"].isna()[0]


# ------------------------------------------------------------------------------ real data
@pytest.mark.real_data
def test_real_data_iid_quiet_and_shift_detected(real_csv: Path) -> None:
    from stroke_dagster.io.readers import read_patient_file
    from stroke_dagster.io.validation import validate_patients

    data = validate_patients(read_patient_file(real_csv), require_label=True).valid
    alarms, detected = 0, 0
    for split in range(10):
        order = np.random.default_rng([7, split]).permutation(len(data))
        cut = int(0.7 * len(data))
        ref, rest = data.iloc[order[:cut]], data.iloc[order[cut:]]
        detector = TabularDriftDetector(DriftConfig(backend="scipy")).fit(ref)
        rng = np.random.default_rng([8, split])
        cohort = rest.iloc[rng.choice(len(rest), 500, replace=False)].reset_index(drop=True)
        alarms += detector.check(cohort).is_drift
        detected += detector.check(_shift(cohort, "bmi", 0.25, ref)).is_drift
    assert alarms <= 2 and detected >= 9


def test_location_test_can_be_switched_off(detectors, reference) -> None:
    """Without Mann-Whitney, numeric p-values are TabularDrift's own KS p-values."""
    from scipy.stats import ks_2samp

    cohort = _shift(_cohort(seed=28), "age", 0.2, reference)
    config = DriftConfig(backend="alibi", location_test=False)
    age = detectors["alibi"].check(cohort, config=config).result("age")
    expected = ks_2samp(reference["age"], cohort["age"], method="asymp").pvalue
    assert age.test == "ks" and age.p_value == pytest.approx(expected, rel=1e-4)
    combined = detectors["alibi"].check(cohort).result("age")
    assert combined.test == "ks+mwu" and combined.p_value < age.p_value  # a location shift


def test_cli_checks_live_traffic_recorded_by_the_api(
    champion_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from _api_server import ApiServer, wait_for

    from stroke_dagster.warehouse.telemetry import request_cohort

    today = dt.datetime.now(dt.UTC).date().isoformat()
    code, _, err = _run_cli(["drift", "--online-date", today], capsys)
    assert code == 2 and "STROKE_TELEMETRY_FEATURES=1" in err  # nothing kept by default

    older = _cohort(seed=41, n=400)
    older["age"] = (older["age"] + 15).clip(upper=120)  # an older population reaches the API
    patients = json.loads(older.drop(columns="id").to_json(orient="records"))
    server = ApiServer(champion_home, wait_ready=True, STROKE_TELEMETRY_FEATURES="1")
    try:
        with server.client() as client:
            for start in range(0, len(patients), 100):
                response = client.post("/predict/batch", json=patients[start : start + 100])
                assert response.status_code == 200
        # flushed in background
        assert wait_for(lambda: len(request_cohort(load_settings(), today)) == 400)
    finally:
        server.stop()

    code, lines, _ = _run_cli(["drift", "--online-date", today, "--backend", "scipy"], capsys)
    assert code == 0 and len(lines) == 1
    assert lines[0]["input"] == f"online:{today}" and lines[0]["rows_in"] == 400
    assert lines[0]["is_drift"] and "age" in lines[0]["drifted_features"]
