"""The tabular drift detector: fit on a model's reference data once, check any number of cohorts.

Tests run per group of columns that share rows (one engine call per group):

* ``features``: every complete model input (numeric: KS + Mann-Whitney; binary and categorical:
  chi-squared on integer codes, categories under 1% of the reference pooled) plus a missing-value
  indicator per nullable input (chi-squared on a 2x2 table, i.e. a two-proportion test);
* one group per nullable numeric input (``bmi``), tested on its observed values only;
* ``predictions`` (optional): ``stroke_probability`` (KS + Mann-Whitney) and ``risk_tier``
  (chi-squared) of the cohort's scores against the champion's holdout predictions.

All p-values of a check form one family corrected with Bonferroni or Benjamini-Hochberg. A row
drifts when it is significant after correction *and* its effect size reaches the configured floor.

What ``fit`` learns is plain data (:meth:`TabularDriftDetector.to_state`): the layout of the tested
columns with their rare-category lookups, and each group's encoded reference matrix. Everything
else (sorted reference, scale, bin edges, shares, the engine's tests) is derived from it, by
``fit`` and by :meth:`TabularDriftDetector.from_state` alike, so a stored detector needs no pickle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.risk import TIERS
from stroke_dagster.core.schema import (
    CATEGORICAL_FIELDS,
    FEATURES,
    FIELDS_BY_NAME,
    NUMERIC_FEATURES,
)
from stroke_dagster.monitoring.drift.backends import (
    CATEGORICAL_TEST,
    NUMERIC_TEST,
    ColumnTests,
    make_column_tests,
)
from stroke_dagster.monitoring.drift.config import DriftConfig
from stroke_dagster.monitoring.drift.report import (
    FEATURE,
    MISSING_SUFFIX,
    MISSINGNESS,
    PREDICTION,
    DriftReport,
    FeatureDrift,
)
from stroke_dagster.monitoring.drift.stats import (
    binned_share,
    category_share,
    corrected_thresholds,
    normalised_wasserstein,
    psi,
    quantile_edges,
)

PROBABILITY = "stroke_probability"
TIER = "risk_tier"
_CATEGORIES = {f.name: f.categories for f in CATEGORICAL_FIELDS}
_SOURCES = {"features": frozenset(FEATURES), "predictions": frozenset((PROBABILITY, TIER))}
_KINDS = frozenset((FEATURE, MISSINGNESS, PREDICTION))
_ENCODINGS = frozenset(("value", "observed", "missing", "codes"))
STATE_COLUMNS = ("group", "column", "value")  # the encoded reference values, one row per value


@dataclass
class _Column:
    """One tested column: how it is read from a frame and what its reference looked like."""

    name: str  # row name in the report
    source: str  # column of the input frame
    kind: str  # FEATURE | MISSINGNESS | PREDICTION
    encoding: str  # value | observed | missing | codes
    categorical: bool
    sorted_reference: np.ndarray = field(default_factory=lambda: np.array([]))
    scale: float = 1.0
    edges: np.ndarray = field(default_factory=lambda: np.array([]))
    reference_share: np.ndarray = field(default_factory=lambda: np.array([]))
    categories: list[int] = field(default_factory=list)
    lookup: np.ndarray | None = None  # raw code -> tested group (rare categories pooled)
    n_reference: int = 0


@dataclass
class _Group:
    """Columns tested together on the same rows by one engine call."""

    source: str  # "features" or "predictions": which input frame the columns come from
    columns: list[_Column]
    tests: ColumnTests | None = None
    reference: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # encoded, by column


def _raw_codes(frame: pd.DataFrame, column: _Column) -> np.ndarray:
    """Integer codes of a categorical column (a value outside the known ones: the last code)."""
    series = frame[column.source]
    categories = TIERS if column.source == TIER else _CATEGORIES.get(column.source)
    if categories:
        codes = pd.Categorical(series.astype(object), categories=list(categories)).codes
        return np.where(codes < 0, len(categories), codes).astype(np.int64)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)  # 0/1 inputs
    return np.where(values == 0, 0, np.where(values == 1, 1, 2)).astype(np.int64)


def _n_codes(column: _Column) -> int:
    categories = TIERS if column.source == TIER else _CATEGORIES.get(column.source)
    return len(categories) + 1 if categories else 3


def _encode(frame: pd.DataFrame, column: _Column) -> np.ndarray:
    """The float vector the tests see for one column (observed values only for ``observed``)."""
    if column.encoding == "missing":
        return frame[column.source].isna().to_numpy(dtype=np.float64)
    if column.encoding == "codes":
        codes = _raw_codes(frame, column)
        return (column.lookup[codes] if column.lookup is not None else codes).astype(np.float64)
    values = pd.to_numeric(frame[column.source], errors="coerce").to_numpy(dtype=np.float64)
    return values[~np.isnan(values)] if column.encoding == "observed" else values


def pool_rare_codes(codes: np.ndarray, n_codes: int, min_share: float) -> np.ndarray:
    """A code -> group lookup that pools the categories rarer than ``min_share`` in ``codes``.

    Rare categories (including ones absent from the reference) form one group; when that group is
    itself rarer than ``min_share`` it joins the least frequent common category. Chi-squared needs
    expected counts of about five per cell: a 1% category in a 500-patient cohort has five.
    """
    lookup = np.arange(n_codes)
    share = np.bincount(codes, minlength=n_codes) / max(codes.size, 1)
    rare = share < min_share
    if not rare.any() or rare.all():
        return lookup
    frequent = np.flatnonzero(~rare)
    if share[rare].sum() >= min_share:
        lookup[rare] = np.flatnonzero(rare)[0]
    else:
        lookup[rare] = frequent[np.argmin(share[frequent])]
    return lookup


class TabularDriftDetector:
    """``fit(reference)`` once, then ``check(cohort)`` as often as needed (thread-safe reads)."""

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        self.backend = self.config.backend
        self.groups: list[_Group] = []
        self.reference_version: str | None = None
        self.n_reference = 0

    # ---------------------------------------------------------------------------------- fit
    def fit(
        self,
        reference: pd.DataFrame,
        reference_predictions: pd.DataFrame | None = None,
        *,
        reference_version: str | None = None,
    ) -> TabularDriftDetector:
        """Fit on the typed reference frame (and optionally the holdout predictions)."""
        _require(reference, FEATURES, "reference")
        if reference.empty:
            raise InputError("reference data is empty")
        self.reference_version = reference_version
        self.n_reference = len(reference)
        nullable = [
            name
            for name in NUMERIC_FEATURES
            if getattr(FIELDS_BY_NAME[name], "nullable", False) or reference[name].isna().any()
        ]
        block = [
            _Column(name, name, FEATURE, "codes", categorical=True)
            if name not in NUMERIC_FEATURES
            else _Column(name, name, FEATURE, "value", categorical=False)
            for name in FEATURES
            if name not in nullable
        ]
        block += [
            _Column(f"{n}{MISSING_SUFFIX}", n, MISSINGNESS, "missing", categorical=True)
            for n in nullable
        ]
        groups = [_Group("features", block)]
        groups += [
            _Group("features", [_Column(n, n, FEATURE, "observed", categorical=False)])
            for n in nullable
        ]
        if reference_predictions is not None and not reference_predictions.empty:
            _require(reference_predictions, (PROBABILITY, TIER), "holdout predictions")
            groups.append(
                _Group(
                    "predictions",
                    [
                        _Column(PROBABILITY, PROBABILITY, PREDICTION, "value", categorical=False),
                        _Column(TIER, TIER, PREDICTION, "codes", categorical=True),
                    ],
                )
            )
        for group in groups:
            frame = reference if group.source == "features" else reference_predictions
            assert frame is not None  # the predictions group exists only when they were given
            self._fit_group(group, frame)
        self.groups = groups
        return self

    def _fit_group(self, group: _Group, frame: pd.DataFrame) -> None:
        for column in group.columns:
            if column.encoding == "codes" and _n_codes(column) > 3:  # not for binary columns
                codes = _raw_codes(frame, column)
                column.lookup = pool_rare_codes(
                    codes, _n_codes(column), self.config.rare_category_share
                )
        self._fit_vectors(group, [_encode(frame, c) for c in group.columns])

    def _fit_vectors(self, group: _Group, vectors: list[np.ndarray]) -> None:
        """Everything else ``fit`` learns, from the group's encoded reference vectors."""
        categories: dict[int, list[int]] = {}
        for i, (column, values) in enumerate(zip(group.columns, vectors, strict=True)):
            column.n_reference = int(values.size)
            if column.categorical:
                column.categories = sorted(int(v) for v in np.unique(values))
                column.reference_share = category_share(values, np.array(column.categories))
                categories[i] = column.categories
            else:
                column.sorted_reference = np.sort(values)
                column.scale = float(np.std(values)) if values.size else 1.0
                column.edges = quantile_edges(values, self.config.psi_bins)
                column.reference_share = binned_share(values, column.edges)
        if min(v.size for v in vectors) == 0:
            raise InputError(f"reference has no observed values for {group.columns[0].name}")
        group.reference = np.column_stack(vectors).astype(np.float64, copy=False)
        group.tests = make_column_tests(self.backend, group.reference, categories)

    # -------------------------------------------------------------------------------- state
    def to_state(self) -> tuple[dict[str, Any], pd.DataFrame]:
        """What ``fit`` learned, as data: ``(layout, values)``.

        ``layout`` (JSON-ready): the reference version and size, and per group its source and
        columns (name, source, kind, encoding, categorical, rare-category lookup). ``values``: the
        encoded reference values, columns :data:`STATE_COLUMNS` (group and column positions, in
        reference row order within each column).
        """
        if not self.groups:
            raise RuntimeError("the drift detector is not fitted")
        groups = [
            {
                "source": group.source,
                "columns": [
                    {
                        "name": c.name,
                        "source": c.source,
                        "kind": c.kind,
                        "encoding": c.encoding,
                        "categorical": c.categorical,
                        "lookup": None if c.lookup is None else [int(v) for v in c.lookup],
                    }
                    for c in group.columns
                ],
            }
            for group in self.groups
        ]
        layout = {
            "reference_version": self.reference_version,
            "n_reference": self.n_reference,
            "groups": groups,
        }
        parts = [
            pd.DataFrame(
                {
                    "group": np.full(group.reference.shape[0], g, dtype=np.int32),
                    "column": np.full(group.reference.shape[0], c, dtype=np.int32),
                    "value": group.reference[:, c],
                }
            )
            for g, group in enumerate(self.groups)
            for c in range(group.reference.shape[1])
        ]
        return layout, pd.concat(parts, ignore_index=True)

    @classmethod
    def from_state(
        cls, layout: dict[str, Any], values: pd.DataFrame, config: DriftConfig | None = None
    ) -> TabularDriftDetector:
        """The detector :meth:`to_state` described, fitted again from its encoded reference.

        Raises ``ValueError`` (or ``KeyError``/``TypeError``) when the state is malformed.
        """
        detector = cls(config)
        version = layout["reference_version"]
        detector.reference_version = None if version is None else str(version)
        detector.n_reference = int(layout["n_reference"])
        group_of = values["group"].to_numpy()
        column_of = values["column"].to_numpy()
        numbers = values["value"].to_numpy(dtype=np.float64)
        used = 0
        for g, spec in enumerate(layout["groups"]):
            source = spec["source"]
            if source not in _SOURCES or not spec["columns"]:
                raise ValueError(f"drift state: bad group {g}")
            group = _Group(source, [_column_from_state(source, c) for c in spec["columns"]])
            vectors = [
                numbers[(group_of == g) & (column_of == c)] for c in range(len(spec["columns"]))
            ]
            if len({v.size for v in vectors}) != 1:
                raise ValueError(f"drift state: columns of group {g} differ in length")
            used += sum(v.size for v in vectors)
            detector._fit_vectors(group, vectors)
            detector.groups.append(group)
        if used != len(values) or not detector.groups:
            raise ValueError("drift state: values outside the layout")
        return detector

    # -------------------------------------------------------------------------------- check
    def check(
        self,
        cohort: pd.DataFrame,
        predictions: pd.DataFrame | None = None,
        *,
        config: DriftConfig | None = None,
    ) -> DriftReport:
        """Test one cohort (typed, valid rows); ``predictions`` adds the prediction-drift rows."""
        if not self.groups:
            raise RuntimeError("the drift detector is not fitted")
        config = config or self.config
        _require(cohort, FEATURES, "cohort")
        if cohort.empty:
            raise InputError("cohort has no valid rows to check for drift")
        pending: list[dict] = []
        for group in self.groups:
            frame = cohort if group.source == "features" else predictions
            if frame is None or frame.empty:
                continue
            if group.source == "predictions":
                _require(frame, (PROBABILITY, TIER), "predictions")
            pending += self._check_group(group, frame, config)
        p_values = np.array([row["p_value"] for row in pending], dtype=float)
        thresholds = corrected_thresholds(p_values, config.alpha, config.correction)
        results = []
        for row, threshold in zip(pending, thresholds, strict=True):
            significant = not math.isnan(row["p_value"]) and row["p_value"] < threshold
            big_enough = (
                not math.isnan(row["effect_size"]) and row["effect_size"] >= row["effect_floor"]
            )
            results.append(
                FeatureDrift(
                    **row,
                    threshold=float(threshold),
                    significant=bool(significant),
                    is_drift=bool(significant and big_enough),
                )
            )
        order = {FEATURE: 0, MISSINGNESS: 1, PREDICTION: 2}
        position = {name: i for i, name in enumerate(FEATURES)}
        results.sort(key=lambda r: (order[r.kind], position.get(r.feature, 0)))
        return DriftReport(
            results=tuple(results),
            backend=self.backend,
            correction=config.correction,
            alpha=config.alpha,
            n_cohort=len(cohort),
            reference_version=self.reference_version,
        )

    def _check_group(self, group: _Group, frame: pd.DataFrame, config: DriftConfig) -> list[dict]:
        vectors = [_encode(frame, c) for c in group.columns]
        if min(v.size for v in vectors) == 0:  # e.g. a cohort whose bmi is entirely missing
            p_values = statistics = np.full(len(vectors), np.nan)
        else:
            assert group.tests is not None
            p_values, statistics = group.tests.score(
                np.column_stack(vectors), location=config.location_test
            )
        return [
            self._row(column, values, float(p), float(s), config)
            for column, values, p, s in zip(
                group.columns, vectors, p_values, statistics, strict=True
            )
        ]

    def _row(
        self,
        column: _Column,
        values: np.ndarray,
        p_value: float,
        statistic: float,
        config: DriftConfig,
    ) -> dict:
        wasserstein: float | None = None
        if column.categorical:
            seen = np.union1d(column.categories, np.unique(values)).astype(int)
            ref_share = np.array(
                [
                    column.reference_share[column.categories.index(c)]
                    if c in column.categories
                    else 0.0
                    for c in seen
                ]
            )
            psi_value = psi(ref_share, category_share(values, seen))
        else:
            psi_value = psi(column.reference_share, binned_share(values, column.edges))
            wasserstein = normalised_wasserstein(column.sorted_reference, values, column.scale)
        if column.encoding == "missing":
            ref_rate = (
                column.reference_share[column.categories.index(1)]
                if 1 in column.categories
                else 0.0
            )
            metric, effect, floor = (
                "abs_rate_diff",
                abs(float(values.mean()) - ref_rate),
                config.missing_rate_floor,
            )
        elif wasserstein is not None and config.numeric_effect == "wasserstein":
            metric, effect, floor = "wasserstein", wasserstein, config.wasserstein_floor
        else:
            metric, effect, floor = "psi", psi_value, config.psi_floor
        return {
            "feature": column.name,
            "kind": column.kind,
            "test": CATEGORICAL_TEST
            if column.categorical
            else (NUMERIC_TEST if config.location_test else "ks"),
            "statistic": statistic,
            "p_value": p_value,
            "effect_metric": metric,
            "effect_size": float(effect),
            "effect_floor": float(floor),
            "psi": float(psi_value),
            "wasserstein": None if wasserstein is None else float(wasserstein),
            "n_reference": column.n_reference,
            "n_cohort": int(values.size),
        }


def _column_from_state(group_source: str, spec: dict[str, Any]) -> _Column:
    """One tested column of a stored layout, checked against what ``fit`` can produce."""
    column = _Column(
        name=str(spec["name"]),
        source=spec["source"],
        kind=spec["kind"],
        encoding=spec["encoding"],
        categorical=spec["categorical"],
    )
    if (
        column.source not in _SOURCES[group_source]
        or column.kind not in _KINDS
        or column.encoding not in _ENCODINGS
        or not isinstance(column.categorical, bool)
    ):
        raise ValueError(f"drift state: bad column {column.name!r}")
    lookup = spec["lookup"]
    if lookup is not None:
        n_codes = _n_codes(column)
        if column.encoding != "codes" or len(lookup) != n_codes:
            raise ValueError(f"drift state: bad lookup for {column.name!r}")
        if not all(isinstance(v, int) and 0 <= v < n_codes for v in lookup):
            raise ValueError(f"drift state: bad lookup for {column.name!r}")
        column.lookup = np.asarray(lookup, dtype=np.int64)
    return column


def _require(frame: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what} is missing column(s): {', '.join(missing)}")
