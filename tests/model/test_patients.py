"""Patients, not rows: a patient seen on several labelled days stays on one side of every split.

Labelled cohort rows are ``<day>/<id>``; the patient behind them is ``patient_key`` (the cohort's
id). The holdout, the tuning folds, the recalibration's fit/judge split and the stored split of
a version all go by it, through training in Dagster too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from stroke_dagster.clinical.recalibration import labelled_patients, split_fit_judge
from stroke_dagster.core.features import holdout_mask, patient_keys, split_train_holdout
from stroke_dagster.core.schema import ID, PATIENT_KEY, TARGET
from stroke_dagster.core.settings import load_settings
from stroke_dagster.io.labels import labelled_cohorts
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model.training.cv import folds
from stroke_dagster.simulate.generator import simulate_patients, write_patients

DAYS = ("2026-03-01", "2026-03-02", "2026-03-03")


def _recurring_days(home: Path, n: int = 600) -> pd.DataFrame:
    """Three labelled days; each patient is seen on two of them (features drift a little)."""
    patients = simulate_patients(n, seed=31, id_start=10_000)
    (home / "incoming").mkdir(parents=True, exist_ok=True)
    (home / "labels").mkdir(parents=True, exist_ok=True)
    for k, day in enumerate(DAYS):
        seen = patients[patients["id"].astype(int) % 3 != k].copy()
        seen["age"] = (seen["age"] + k * 0.1).clip(upper=120)
        write_patients(seen.drop(columns=TARGET), home / "incoming" / f"{day}.csv")
        seen[["id", TARGET]].to_csv(home / "labels" / f"{day}.csv", index=False)
    return patients


def _sides(frame: pd.DataFrame, part: pd.Series) -> pd.Series:
    """How many sides each patient's rows fell on."""
    return (
        pd.DataFrame({"patient": patient_keys(frame), "side": part})
        .groupby("patient")["side"]
        .nunique()
    )


def test_a_recurring_patient_is_on_one_side_of_the_holdout(stroke_home: Path) -> None:
    _recurring_days(stroke_home)
    rows = labelled_cohorts(load_settings())
    assert rows[ID].is_unique and not rows[PATIENT_KEY].is_unique  # rows per day, patients recur
    valid = validate_patients(rows, require_label=True).valid
    assert valid[PATIENT_KEY].tolist() == rows[PATIENT_KEY].tolist()  # carried through validation
    train, holdout = split_train_holdout(valid, 0.2)
    assert not set(patient_keys(train)) & set(patient_keys(holdout))
    # Hashing the row ids (the old rule) would have put patients on both sides: the test can fail.
    by_row = pd.Series(holdout_mask(valid[ID], 0.2))
    assert (_sides(valid, by_row) > 1).sum() > 50


def test_tuning_folds_never_validate_on_a_patient_they_trained_on(stroke_home: Path) -> None:
    _recurring_days(stroke_home)
    valid = validate_patients(labelled_cohorts(load_settings()), require_label=True).valid
    keys = patient_keys(valid).to_numpy()
    for fit_rows, val_rows in folds(valid, cv_folds=4, seed=0):
        assert not set(keys[fit_rows]) & set(keys[val_rows])
        assert valid[TARGET].iloc[val_rows].sum() > 0  # still stratified: events in each fold


def test_recalibration_fit_and_judge_parts_share_no_patient(stroke_home: Path) -> None:
    _recurring_days(stroke_home)
    labelled, rejected = labelled_patients(load_settings())
    assert rejected == 0 and not labelled[PATIENT_KEY].is_unique
    fit_part, judge_part = split_fit_judge(labelled, 0.5, id_column=PATIENT_KEY)
    assert not set(fit_part[PATIENT_KEY]) & set(judge_part[PATIENT_KEY])
    assert len(fit_part) and len(judge_part)


def test_a_site_patient_identifier_column_is_the_key(stroke_home: Path, monkeypatch) -> None:
    patients = simulate_patients(40, seed=5, id_start=1)
    patients["mrn"] = "M" + (patients["id"].astype(int) % 20).astype(str)  # two visits each
    (stroke_home / "incoming").mkdir()
    (stroke_home / "labels").mkdir()
    write_patients(patients.drop(columns=TARGET), stroke_home / "incoming" / f"{DAYS[0]}.csv")
    patients[["id", TARGET]].to_csv(stroke_home / "labels" / f"{DAYS[0]}.csv", index=False)
    monkeypatch.setenv("STROKE_PATIENT_KEY_COLUMN", "mrn")
    rows = labelled_cohorts(load_settings())
    assert rows[PATIENT_KEY].nunique() == 20 and rows[PATIENT_KEY].str.startswith("M").all()


@pytest.mark.slow
def test_training_in_dagster_stores_each_patient_on_one_side(
    stroke_home: Path, synthetic_train_csv: Path
) -> None:
    from stroke_dagster.defs.training_command import run_training
    from stroke_dagster.model import registry

    _recurring_days(stroke_home)
    summary = run_training(synthetic_train_csv, settings=load_settings(), n_trials=2, seed=0)
    model = registry.load_model(summary["version"], settings=load_settings())
    split = model.split_ids()
    assert {ID, PATIENT_KEY, "split"} <= set(split.columns)
    site = split[split[ID].str.contains("/")]
    assert len(site) == 2 * 600  # every labelled row, each patient on two days
    assert (site.groupby(PATIENT_KEY)["split"].nunique() == 1).all()
    assert set(site["split"]) == {"train", "holdout"}


@pytest.mark.slow
def test_a_retraining_recalibrates_the_new_forest_and_the_gate_judges_that(
    champion_home: Path, synthetic_train_csv: Path
) -> None:
    """Retrain -> recalibrate the candidate -> gate, as one path: the new forest is recalibrated
    on site patients it never trained on, and the recalibrated version is judged against the
    champion on site patients none of them saw."""
    from stroke_dagster.defs.training_command import run_training
    from stroke_dagster.model import registry

    _recurring_days(champion_home, n=3000)
    settings = load_settings()
    champion = registry.resolve_alias("champion", settings=settings)
    summary = run_training(synthetic_train_csv, settings=settings, n_trials=2, seed=1)
    assert summary["recalibrated"] is True
    forest_version, candidate = summary["forest_version"], summary["version"]
    assert int(candidate) == int(forest_version) + 1
    client = registry.client(settings)
    recal = client.get_model_version(registry.MODEL_NAME, candidate)
    assert recal.tags["recalibrated_from"] == forest_version
    forest = client.get_model_version(registry.MODEL_NAME, forest_version)
    assert forest.tags["recalibrated_as"] == candidate
    assert summary["previous_champion"] == champion  # judged against the champion
    forest_split = registry.load_model(forest_version, settings=settings).split_ids()
    trained = set(forest_split.loc[forest_split["split"] == "train", PATIENT_KEY])
    recal_split = registry.load_model(candidate, settings=settings).split_ids()
    # The recalibration's fit rows: training rows of the new version the forest held out.
    forest_train_ids = set(forest_split.loc[forest_split["split"] == "train", ID])
    fit_rows = recal_split[
        (recal_split["split"] == "train") & ~recal_split[ID].isin(forest_train_ids)
    ]
    held_out = set(forest_split.loc[forest_split["split"] == "holdout", PATIENT_KEY])
    assert len(fit_rows) and fit_rows[ID].str.contains("/").all()  # site rows only
    assert set(fit_rows[PATIENT_KEY]) <= held_out  # fit on patients the forest never saw
    assert not set(fit_rows[PATIENT_KEY]) & trained
    assert summary["gate_n_unseen"] > 0
