"""Per-patient explanations add up to the served probability, for plain and recalibrated models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stroke_dagster.clinical import explain
from stroke_dagster.clinical.recalibration import compose
from stroke_dagster.core.features import feature_frame
from stroke_dagster.core.schema import FEATURES
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model.training import build_pipeline
from stroke_dagster.simulate.generator import simulate_patients


@pytest.fixture(scope="module")
def fitted() -> tuple[object, pd.DataFrame]:
    df = validate_patients(simulate_patients(1_500, seed=11), require_label=True).valid
    params = {"n_estimators": 20, "max_depth": 5, "min_samples_leaf": 10, "n_jobs": 1}
    pipe = build_pipeline(params).fit(feature_frame(df), df["stroke"])
    return pipe, df.head(60).reset_index(drop=True)


@pytest.mark.parametrize("method", explain.METHODS)
def test_contributions_add_up_to_the_probability(fitted, method: str) -> None:
    pipe, df = fitted
    e = explain.explain(pipe, df, method=method)
    assert list(e.contributions.columns) == list(FEATURES)
    served = pipe.predict_proba(feature_frame(df))[:, 1]
    total = e.base_value + e.contributions.sum(axis=1).to_numpy()
    np.testing.assert_allclose(total, served, atol=1e-6, rtol=0)
    np.testing.assert_allclose(e.probability, served, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", explain.METHODS)
def test_recalibrated_contributions_add_up(fitted, method: str) -> None:
    pipe, df = fitted
    model = compose(pipe, -1.1, 0.7)
    e = explain.explain(model, df, method=method)
    served = model.predict_proba(feature_frame(df))[:, 1]
    total = e.base_value + e.contributions.sum(axis=1).to_numpy()
    np.testing.assert_allclose(total, served, atol=1e-6, rtol=0)
    plain = explain.explain(pipe, df, method=method).contributions
    same_sign = np.sign(plain.to_numpy()) == np.sign(e.contributions.to_numpy())
    assert same_sign[np.abs(plain.to_numpy()) > 1e-9].all()


def test_treeshap_matches_shap_on_the_transformed_columns(fitted) -> None:
    import shap

    pipe, df = fitted
    x = pipe.named_steps["preprocess"].transform(feature_frame(df))
    values = shap.TreeExplainer(pipe.named_steps["model"]).shap_values(x)[..., 1]
    groups = explain.column_groups(pipe.named_steps["preprocess"])
    age = FEATURES.index("age")
    ours = explain.explain(pipe, df).contributions["age"].to_numpy()
    np.testing.assert_allclose(ours, values[:, groups == age].sum(axis=1), atol=1e-12)
    assert set(groups) == set(range(len(FEATURES)))


def test_top_contributions_are_sorted_and_carry_values(fitted) -> None:
    pipe, df = fitted
    records = explain.explanation_records(explain.explain(pipe, df), df, k=3)
    assert len(records) == len(df) and all(len(r) == 3 for r in records)
    sizes = [abs(item["contribution"]) for item in records[0]]
    assert sizes == sorted(sizes, reverse=True)
    first = records[0][0]
    assert first["value"] == _plain(df.iloc[0][first["feature"]])


def _plain(value):
    return None if pd.isna(value) else getattr(value, "item", lambda: value)()


def test_unknown_method_refused(fitted) -> None:
    pipe, df = fitted
    with pytest.raises(ValueError, match="method"):
        explain.explain(pipe, df, method="lime")


def test_explain_patients_from_records(fitted) -> None:
    pipe, df = fitted
    records = feature_frame(df.head(3)).to_dict(orient="records")
    out = explain.explain_patients(pipe, records, k=4)
    served = pipe.predict_proba(feature_frame(df.head(3)))[:, 1]
    assert [len(o["contributions"]) for o in out] == [4, 4, 4]
    np.testing.assert_allclose([o["stroke_probability"] for o in out], served, atol=1e-6)
    full = explain.explain_patients(pipe, records, k=len(FEATURES))
    totals = [o["base_value"] + sum(c["contribution"] for c in o["contributions"]) for o in full]
    np.testing.assert_allclose(totals, served, atol=1e-6)
