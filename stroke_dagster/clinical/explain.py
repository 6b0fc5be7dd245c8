"""Why this risk? Per-patient signed feature contributions that add up to the probability.

Two exact additive decompositions of the forest's probability (a random forest's
``predict_proba`` is the mean of its trees' leaf class fractions, so both work in probability
space directly):

- ``"treeshap"`` (default): exact Shapley values by ``shap.TreeExplainer`` (path-dependent
  TreeSHAP) - every feature gets its average marginal contribution over feature orderings;
- ``"path"``: the tree-path decomposition (Saabas): along a patient's path in each tree, the
  change in the node's stroke fraction at each split is credited to the split's feature. Exact
  in sum, much cheaper, but credits features by the order the trees happen to split on them.

Either way ``base_value + sum(contributions) == probability`` (to float rounding). Contributions of
the model's transformed columns (the bmi "was missing" indicator, one-hot levels) are summed back
to the patient's original feature. A recalibrated version (:class:`RecalibratedModel`) maps the
forest's probability ``p`` to ``q``; its contributions are the forest's scaled by
``(q - q0) / (p - p0)`` (``p0``/``q0`` the base values), which keeps their signs and ranks and
makes them add up to ``q`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.core.features import feature_frame
from stroke_dagster.core.schema import FEATURES

METHODS = ("treeshap", "path")


@dataclass
class Explanation:
    """Contributions (rows = patients, columns = schema features) and the base value."""

    base_value: np.ndarray
    contributions: pd.DataFrame
    probability: np.ndarray

    def top(self, i: int, k: int = 5, values: pd.DataFrame | None = None) -> list[dict[str, Any]]:
        """Patient ``i``'s ``k`` largest contributions by size, signed, with the feature value."""
        row = self.contributions.iloc[i]
        order = row.abs().sort_values(ascending=False, kind="stable").index[:k]
        out = []
        for name in order:
            item: dict[str, Any] = {"feature": name, "contribution": float(row[name])}
            if values is not None:
                value = values.iloc[i][name]
                item["value"] = None if pd.isna(value) else _plain(value)
            out.append(item)
        return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def split_model(model: Any) -> tuple[Any, Any, Any]:
    """``(preprocess, forest, recalibration or None)`` of a registered model."""
    from stroke_dagster.clinical.recalibration import RecalibratedModel

    recal = None
    if isinstance(model, RecalibratedModel):
        recal, model = model, model.base
    return model.named_steps["preprocess"], model.named_steps["model"], recal


def column_groups(preprocess: Any) -> np.ndarray:
    """For each transformed column, the index in ``FEATURES`` of the feature it came from."""
    names = preprocess.get_feature_names_out()
    owners = []
    for name in names:
        _, _, column = name.partition("__")
        column = column.removeprefix("missingindicator_")
        match = [f for f in FEATURES if column == f or column.startswith(f"{f}_")]
        if not match:
            raise ValueError(f"cannot map model column {name!r} to a patient feature")
        owners.append(FEATURES.index(max(match, key=len)))
    return np.asarray(owners)


def path_contributions(forest: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Tree-path (Saabas) contributions of transformed columns and the base value (class 1)."""
    from scipy import sparse

    n, d = x.shape
    total = np.zeros((n, d))
    base = 0.0
    for tree in forest.estimators_:
        t = tree.tree_
        value = t.value[:, 0, :]
        frac = value[:, 1] / value.sum(axis=1)
        parent = np.full(t.node_count, -1)
        for side in (t.children_left, t.children_right):
            inner = side >= 0
            parent[side[inner]] = np.nonzero(inner)[0]
        child = np.nonzero(parent >= 0)[0]
        delta = sparse.csr_matrix(
            (frac[child] - frac[parent[child]], (child, t.feature[parent[child]])),
            shape=(t.node_count, d),
        )
        total += (tree.decision_path(x.astype(np.float32)) @ delta).toarray()
        base += frac[0]
    k = len(forest.estimators_)
    return total / k, base / k


def treeshap_contributions(forest: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact TreeSHAP values of transformed columns and the base value (class 1)."""
    import shap

    explainer = shap.TreeExplainer(forest)
    values = explainer.shap_values(x, check_additivity=False)
    values = values[..., 1] if np.ndim(values) == 3 else values[1]
    return np.asarray(values), float(np.ravel(explainer.expected_value)[1])


def explain(model: Any, df: pd.DataFrame, method: str = "treeshap") -> Explanation:
    """Signed per-feature contributions for each patient of ``df`` (raw feature columns)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    preprocess, forest, recal = split_model(model)
    x = np.asarray(preprocess.transform(feature_frame(df)), dtype=float)
    fn = treeshap_contributions if method == "treeshap" else path_contributions
    raw, base = fn(forest, x)
    groups = column_groups(preprocess)
    summed = np.zeros((len(x), len(FEATURES)))
    np.add.at(summed.T, groups, raw.T)
    p = base + summed.sum(axis=1)
    if recal is None:
        base_values = np.full(len(x), base)
        prob = p
    else:
        q0 = float(recal.transform_probability(np.asarray([base]))[0])
        q = recal.transform_probability(p)
        dp = p - base
        small = np.abs(dp) < 1e-9
        derivative = recal.slope * q0 * (1 - q0) / max(base * (1 - base), 1e-12)
        scale = np.where(small, derivative, (q - q0) / np.where(small, 1.0, dp))
        summed = summed * scale[:, None]
        base_values = np.full(len(x), q0)
        prob = q0 + summed.sum(axis=1)
    frame = pd.DataFrame(summed, columns=list(FEATURES), index=df.index)
    return Explanation(base_value=base_values, contributions=frame, probability=prob)


def explanation_records(
    explanation: Explanation, df: pd.DataFrame, k: int = 5
) -> list[list[dict[str, Any]]]:
    """Each patient's top ``k`` contributions (for JSON responses and the warehouse table)."""
    values = feature_frame(df)
    return [explanation.top(i, k, values) for i in range(len(df))]


def explain_patients(
    model: Any, records: list[dict[str, Any]], k: int = 5, method: str = "treeshap"
) -> list[dict[str, Any]]:
    """For each patient record (raw feature fields): base value, probability and top ``k``
    signed contributions - what ``POST /predict`` with ``"explain": true`` returns."""
    df = pd.DataFrame.from_records(records, columns=list(FEATURES))
    e = explain(model, df, method=method)
    tops = explanation_records(e, df, k)
    return [
        {
            "base_value": float(e.base_value[i]),
            "stroke_probability": float(e.probability[i]),
            "method": method,
            "contributions": tops[i],
        }
        for i in range(len(df))
    ]


def explain_one(model: Any, record: dict[str, Any]) -> dict[str, Any]:
    """One patient's explanation as ``POST /predict`` answers it: every feature, largest first."""
    (answer,) = explain_patients(model, [record], k=len(FEATURES))
    answer.pop("stroke_probability")
    return answer
