"""Drift monitoring: is today's cohort still the population the champion was trained on?

``DriftDetector`` is the small interface the pipeline, the CLI and the benchmark use;
:class:`TabularDriftDetector` implements it on two interchangeable engines (alibi-detect by default,
SciPy with ``STROKE_DRIFT_BACKEND=scipy``). Fitted detectors are stored per model version
(:mod:`stroke_dagster.monitoring.drift.store`). Nothing here imports alibi-detect until a detector
is fitted.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from stroke_dagster.monitoring.drift.config import DriftConfig
from stroke_dagster.monitoring.drift.detector import TabularDriftDetector
from stroke_dagster.monitoring.drift.report import DriftReport, FeatureDrift


class DriftDetector(Protocol):
    """Fit once on reference data; check cohorts against it."""

    backend: str

    def fit(
        self,
        reference: pd.DataFrame,
        reference_predictions: pd.DataFrame | None = None,
        *,
        reference_version: str | None = None,
    ) -> DriftDetector: ...

    def check(
        self,
        cohort: pd.DataFrame,
        predictions: pd.DataFrame | None = None,
        *,
        config: DriftConfig | None = None,
    ) -> DriftReport: ...


__all__ = [
    "DriftConfig",
    "DriftDetector",
    "DriftReport",
    "FeatureDrift",
    "TabularDriftDetector",
]
