"""What a drift check returns: one row per test, plus the day's verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

# kind of check a row reports
FEATURE = "feature"  # distribution of a model input (KS or chi-squared)
MISSINGNESS = "missingness"  # missing-value rate of a model input (two-proportion chi-squared)
PREDICTION = "prediction"  # distribution of the champion's output against its holdout

MISSING_SUFFIX = "_missing_rate"


@dataclass(frozen=True)
class FeatureDrift:
    """One statistical test on one feature: significance, effect size, and the combined verdict."""

    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float
    threshold: float  # corrected significance threshold the p-value is compared with
    effect_metric: str  # wasserstein | psi | abs_rate_diff
    effect_size: float
    effect_floor: float
    psi: float
    wasserstein: float | None  # normalised Wasserstein-1 (numeric features only)
    significant: bool
    is_drift: bool  # significant and effect_size >= effect_floor
    n_reference: int
    n_cohort: int


@dataclass(frozen=True)
class DriftReport:
    """All tests of one cohort against one reference, with the corrected verdict."""

    results: tuple[FeatureDrift, ...]
    backend: str
    correction: str
    alpha: float
    n_cohort: int
    reference_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_drift(self) -> bool:
        return any(r.is_drift for r in self.results)

    @property
    def drifted_features(self) -> list[str]:
        return [r.feature for r in self.results if r.is_drift]

    @property
    def p_values(self) -> dict[str, float | None]:
        return {r.feature: _finite(r.p_value) for r in self.results}

    @property
    def share_drifted(self) -> float:
        tested = [r for r in self.results if not math.isnan(r.p_value)]
        return sum(r.is_drift for r in tested) / len(tested) if tested else 0.0

    def result(self, feature: str) -> FeatureDrift:
        for row in self.results:
            if row.feature == feature:
                return row
        raise KeyError(feature)

    def to_frame(self) -> pd.DataFrame:
        """One row per test (the ``drift_metrics`` columns that do not depend on the day)."""
        columns = list(FeatureDrift.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self.results], columns=columns)

    def summary(self) -> dict[str, Any]:
        """The day's verdict (the ``drift_summary`` columns that do not depend on the day)."""
        tested = [r for r in self.results if not math.isnan(r.p_value)]
        return {
            "is_drift": self.is_drift,
            "n_tests": len(tested),
            "n_drifted": len(self.drifted_features),
            "share_drifted": self.share_drifted,
            "drifted_features": ",".join(self.drifted_features),
            "feature_drift": any(r.is_drift for r in self.results if r.kind == FEATURE),
            "missingness_drift": any(r.is_drift for r in self.results if r.kind == MISSINGNESS),
            "prediction_drift": any(r.is_drift for r in self.results if r.kind == PREDICTION),
            "n_cohort": self.n_cohort,
            "backend": self.backend,
            "correction": self.correction,
            "alpha": self.alpha,
            "reference_model_version": self.reference_version,
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: verdict, p-values, effect sizes (NaN written as null)."""
        return {
            "is_drift": self.is_drift,
            "drifted_features": self.drifted_features,
            "p_values": self.p_values,
            "effect_sizes": {r.feature: _finite(r.effect_size) for r in self.results},
            "thresholds": {r.feature: _finite(r.threshold) for r in self.results},
            "n_cohort": self.n_cohort,
            "backend": self.backend,
            "correction": self.correction,
            "reference_model_version": self.reference_version,
            **self.extra,
        }


def _finite(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return float(value)
