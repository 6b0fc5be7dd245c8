"""The two test engines behind the drift detector: alibi-detect (default) and plain SciPy.

Both run the same univariate tests on the same encoded matrix:

* numeric columns: the two-sample Kolmogorov-Smirnov test (asymptotic p-value; any change of
  shape) combined with the Mann-Whitney U test (a change of location, where KS is weak on wide,
  flat distributions such as age). The column's p-value is ``min(1, 2 * min(p_ks, p_mwu))``
  (Bonferroni over the two tests), reported as test ``ks+mwu``;
* categorical columns: a chi-squared contingency test over the union of reference and cohort codes.

alibi-detect runs KS and chi-squared through ``TabularDrift``; it has no location test, so both
engines take Mann-Whitney from SciPy. alibi-detect is licensed under the Business Source License
1.1 (production use needs a licence from Seldon); the SciPy engine is the Apache-compatible
alternative (``STROKE_DRIFT_BACKEND=scipy``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

NUMERIC_TEST = "ks+mwu"
CATEGORICAL_TEST = "chi2"


class ColumnTests(Protocol):
    """Fitted per-column tests for one reference matrix."""

    def score(self, x: np.ndarray, location: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(p_values, statistics)``, one per column of ``x`` (statistic: KS D or chi-squared).

        ``location=False`` leaves numeric columns to KS alone (plain ``TabularDrift``).
        """
        ...


def _with_location_test(
    x_ref: np.ndarray, x: np.ndarray, numeric: list[int], p_values: np.ndarray
) -> np.ndarray:
    """Combine each numeric column's KS p-value with its Mann-Whitney U p-value."""
    from scipy.stats import mannwhitneyu

    combined = np.asarray(p_values, dtype=float).copy()
    for f in numeric:
        p_mwu = mannwhitneyu(x_ref[:, f], x[:, f]).pvalue
        combined[f] = min(1.0, 2.0 * min(float(combined[f]), float(p_mwu)))
    return combined


class AlibiColumnTests:
    """alibi-detect ``TabularDrift`` (KS for numeric, chi-squared for categorical columns).

    The reference is passed already encoded (``x_ref_preprocessed=True``) as a float matrix, and the
    categorical columns with the integer codes seen in the reference (``categories_per_feature``).
    Only ``score`` is used: the correction is applied by the detector over every test of the day.
    """

    def __init__(self, x_ref: np.ndarray, categories: dict[int, list[int]]) -> None:
        from alibi_detect.cd import TabularDrift  # slow import (seconds): only when fitting

        x_ref = np.ascontiguousarray(x_ref, dtype=np.float64)
        self.numeric = [f for f in range(x_ref.shape[1]) if f not in categories]
        self.detector = TabularDrift(
            x_ref,
            p_val=0.05,
            categories_per_feature={int(k): [int(c) for c in v] for k, v in categories.items()},
            x_ref_preprocessed=True,
        )

    def score(self, x: np.ndarray, location: bool = True) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        p_values, statistics = self.detector.score(x)
        if location:
            p_values = _with_location_test(self.detector.x_ref, x, self.numeric, p_values)
        return np.asarray(p_values, dtype=float), np.asarray(statistics, dtype=float)


class ScipyColumnTests:
    """The same tests with ``ks_2samp``, ``chi2_contingency`` and ``mannwhitneyu`` from SciPy."""

    def __init__(self, x_ref: np.ndarray, categories: dict[int, list[int]]) -> None:
        self.x_ref = np.ascontiguousarray(x_ref, dtype=np.float64)
        self.categories = {int(k): [int(c) for c in v] for k, v in categories.items()}
        self.numeric = [f for f in range(self.x_ref.shape[1]) if f not in self.categories]

    def score(self, x: np.ndarray, location: bool = True) -> tuple[np.ndarray, np.ndarray]:
        from scipy.stats import chi2_contingency, ks_2samp

        x = np.asarray(x, dtype=np.float64)
        n_columns = self.x_ref.shape[1]
        p_values, statistics = np.zeros(n_columns), np.zeros(n_columns)
        for f in range(n_columns):
            if f in self.categories:
                seen = sorted(set(self.categories[f]) | set(np.unique(x[:, f]).tolist()))
                table = np.array(
                    [[(col == v).sum() for v in seen] for col in (self.x_ref[:, f], x[:, f])]
                )
                result = chi2_contingency(table)
            else:
                result = ks_2samp(self.x_ref[:, f], x[:, f], method="asymp")
            statistics[f], p_values[f] = result.statistic, result.pvalue
        if location:
            p_values = _with_location_test(self.x_ref, x, self.numeric, p_values)
        return p_values, statistics


def make_column_tests(
    backend: str, x_ref: np.ndarray, categories: dict[int, list[int]]
) -> ColumnTests:
    if backend == "alibi":
        return AlibiColumnTests(x_ref, categories)
    if backend == "scipy":
        return ScipyColumnTests(x_ref, categories)
    raise ValueError(f"unknown drift backend {backend!r}")
