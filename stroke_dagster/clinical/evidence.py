"""The evidence every model version carries: calibration, subgroups and decision value on holdout.

:func:`compute_evidence` is plain computation on outcomes, probabilities and patient features;
:func:`log_evidence` writes it to an MLflow run (metrics, plots, tables) by run id, so it works on
a run that is still active or one that has finished.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.clinical.calibration import (
    CalibrationReport,
    calibration_report,
    reliability_plot,
)
from stroke_dagster.clinical.decision_curve import (
    DecisionCurve,
    decision_curve,
    decision_curve_plot,
)
from stroke_dagster.clinical.stats import auc_ci
from stroke_dagster.clinical.subgroups import (
    SubgroupConfig,
    subgroup_table,
    subgroup_warnings,
)
from stroke_dagster.core.risk import RiskThresholds

RELIABILITY_PNG = "evidence/reliability.png"
DECISION_PNG = "evidence/decision_curve.png"
DECISION_TABLE = "evidence/decision_curve.parquet"
SUBGROUP_TABLE = "evidence/subgroups.parquet"
SUMMARY_JSON = "evidence/summary.json"


@dataclass
class Evidence:
    """Holdout evidence of one version."""

    n: int
    n_events: int
    roc_auc: float | None
    roc_auc_ci: tuple[float, float] | None
    calibration: CalibrationReport
    subgroups: pd.DataFrame | None
    warnings: list[str]
    decision: DecisionCurve
    reliability_png: bytes = field(repr=False, default=b"")
    decision_png: bytes = field(repr=False, default=b"")

    def metrics(self, prefix: str = "holdout_") -> dict[str, float]:
        out = self.calibration.metrics(prefix)
        if self.roc_auc_ci is not None:
            out[f"{prefix}roc_auc_ci_low"], out[f"{prefix}roc_auc_ci_high"] = self.roc_auc_ci
        for tier, value in self.decision.tier_net_benefit.items():
            out[f"{prefix}net_benefit_{tier}"] = value
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_events": self.n_events,
            "roc_auc": self.roc_auc,
            "roc_auc_ci": list(self.roc_auc_ci) if self.roc_auc_ci else None,
            "calibration": self.calibration.to_dict(),
            "subgroup_warnings": self.warnings,
            "decision_curve": self.decision.summary(),
        }


def compute_evidence(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: RiskThresholds,
    features: pd.DataFrame | None = None,
    subgroup_config: SubgroupConfig | None = None,
    plots: bool = True,
) -> Evidence:
    """Calibration, discrimination with CI, subgroups (when ``features`` given), decision curve."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    auc = ci = None
    if 0 < y.sum() < len(y):
        auc, low, high = auc_ci(y, p)
        ci = (low, high)
    table = warnings = None
    if features is not None:
        table = subgroup_table(features, y, p, thresholds, subgroup_config)
        warnings = subgroup_warnings(table, subgroup_config)
    curve = decision_curve(y, p, thresholds)
    return Evidence(
        n=len(y),
        n_events=int(y.sum()),
        roc_auc=auc,
        roc_auc_ci=ci,
        calibration=calibration_report(y, p),
        subgroups=table,
        warnings=warnings or [],
        decision=curve,
        reliability_png=reliability_plot(y, p) if plots else b"",
        decision_png=decision_curve_plot(curve) if plots else b"",
    )


def log_evidence(run_id: str, evidence: Evidence, prefix: str = "holdout_") -> None:
    """Metrics, plots and tables of ``evidence`` into MLflow run ``run_id``."""
    import mlflow

    client = mlflow.MlflowClient()
    for key, value in evidence.metrics(prefix).items():
        if np.isfinite(value):
            client.log_metric(run_id, key, float(value))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files: dict[str, bytes | pd.DataFrame | str] = {
            RELIABILITY_PNG: evidence.reliability_png,
            DECISION_PNG: evidence.decision_png,
            DECISION_TABLE: evidence.decision.table,
            SUMMARY_JSON: json.dumps(evidence.summary(), indent=2, default=str),
        }
        if evidence.subgroups is not None:
            files[SUBGROUP_TABLE] = evidence.subgroups
        for name, content in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, pd.DataFrame):
                content.to_parquet(target, index=False)
            elif isinstance(content, str):
                target.write_text(content)
            elif content:
                target.write_bytes(content)
        client.log_artifacts(run_id, str(root))
