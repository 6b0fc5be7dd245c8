"""For whom does the model work? Discrimination and calibration per patient subgroup.

Subgroups: sex (``gender``), age band (<45, 45-64, >=65), residence type and work type. Per
group: ROC AUC with a 95 % DeLong confidence interval, calibration-in-the-large (O/E ratio, mean
difference) and sensitivity / specificity at the ``elevated`` and ``high`` tier thresholds.

A group with fewer than ``min_events`` events or ``min_non_events`` non-events is reported with
its counts and ``status = "too small"`` and no figures (a stable AUC needs both classes in
number); it is never dropped from the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.clinical.stats import auc_ci
from stroke_dagster.core.risk import RiskThresholds

AGE_BANDS = ("<45", "45-64", ">=65")
SUBGROUP_COLUMNS = ("gender", "age_band", "Residence_type", "work_type")
OK = "ok"
TOO_SMALL = "too small"


@dataclass(frozen=True)
class SubgroupConfig:
    """When a group is too small, and when a group's figures deserve a warning."""

    min_events: int = 10
    min_non_events: int = 10
    auc_margin: float = 0.10
    oe_ratio_limit: float = 1.5


def age_band(age: pd.Series) -> pd.Series:
    values = pd.to_numeric(age, errors="coerce")
    band = np.where(values < 45, AGE_BANDS[0], np.where(values < 65, AGE_BANDS[1], AGE_BANDS[2]))
    return pd.Series(band, index=age.index, dtype=object)


def _rates(y: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    pos, neg = y == 1, y == 0
    return float(flagged[pos].mean()), float((~flagged[neg]).mean())


def group_metrics(
    y: np.ndarray, p: np.ndarray, thresholds: RiskThresholds, config: SubgroupConfig
) -> dict[str, Any]:
    """One group's row: counts always, figures only when the group is large enough."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    events = int(y.sum())
    row: dict[str, Any] = {
        "n": len(y),
        "n_events": events,
        "observed_rate": float(y.mean()) if len(y) else None,
        "mean_predicted": float(p.mean()) if len(p) else None,
    }
    if events < config.min_events or len(y) - events < config.min_non_events:
        row["status"] = TOO_SMALL
        return row
    auc, low, high = auc_ci(y, p)
    sens_e, spec_e = _rates(y, p >= thresholds.elevated)
    sens_h, spec_h = _rates(y, p >= thresholds.high)
    row.update(
        {
            "status": OK,
            "roc_auc": auc,
            "roc_auc_low": low,
            "roc_auc_high": high,
            "oe_ratio": float(y.sum() / p.sum()) if p.sum() > 0 else None,
            "mean_difference": float(p.mean() - y.mean()),
            "sensitivity_elevated": sens_e,
            "specificity_elevated": spec_e,
            "sensitivity_high": sens_h,
            "specificity_high": spec_h,
        }
    )
    return row


def subgroup_table(
    features: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    thresholds: RiskThresholds,
    config: SubgroupConfig | None = None,
) -> pd.DataFrame:
    """One row for the whole population, then one per group of every subgroup column."""
    config = config or SubgroupConfig()
    frame = features.reset_index(drop=True)
    groups = pd.DataFrame(
        {
            "gender": frame["gender"].astype(object),
            "age_band": age_band(frame["age"]),
            "Residence_type": frame["Residence_type"].astype(object),
            "work_type": frame["work_type"].astype(object),
        }
    )
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    rows = [{"subgroup": "all", "group": "all", **group_metrics(y, p, thresholds, config)}]
    for column in SUBGROUP_COLUMNS:
        values = groups[column]
        for value in sorted(values.dropna().unique(), key=str):
            mask = (values == value).to_numpy()
            rows.append(
                {
                    "subgroup": column,
                    "group": str(value),
                    **group_metrics(y[mask], p[mask], thresholds, config),
                }
            )
    return pd.DataFrame(rows)


def subgroup_warnings(table: pd.DataFrame, config: SubgroupConfig | None = None) -> list[str]:
    """Groups whose AUC is more than ``auc_margin`` below the population's or whose O/E ratio
    is off by more than ``oe_ratio_limit`` (either way)."""
    config = config or SubgroupConfig()
    whole = table[table["subgroup"] == "all"].iloc[0]
    out: list[str] = []
    population_auc = whole.get("roc_auc")
    for _, row in table[(table["subgroup"] != "all") & (table["status"] == OK)].iterrows():
        name = f"{row['subgroup']}={row['group']}"
        if (
            population_auc is not None
            and pd.notna(population_auc)
            and row["roc_auc"] < population_auc - config.auc_margin
        ):
            out.append(
                f"{name}: ROC AUC {row['roc_auc']:.3f} is more than {config.auc_margin:.2f} "
                f"below the population's {population_auc:.3f}"
            )
        oe = row.get("oe_ratio")
        if (
            oe is not None
            and pd.notna(oe)
            and oe > 0
            and (oe > config.oe_ratio_limit or oe < 1.0 / config.oe_ratio_limit)
        ):
            out.append(
                f"{name}: observed/expected {oe:.2f} is off by more than "
                f"x{config.oe_ratio_limit:.2f}"
            )
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """The subgroup table as Markdown (too-small groups shown with their counts)."""
    lines = [
        "| subgroup | group | n | events | ROC AUC (95% CI) | O/E | sens/spec elevated "
        "| sens/spec high |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for _, r in table.iterrows():
        if r["status"] != OK:
            figures = f"{TOO_SMALL} | | | "
        else:
            oe = "n/a" if pd.isna(r["oe_ratio"]) else f"{r['oe_ratio']:.2f}"
            figures = (
                f"{r['roc_auc']:.3f} ({r['roc_auc_low']:.3f}-{r['roc_auc_high']:.3f}) | {oe} | "
                f"{r['sensitivity_elevated']:.2f}/{r['specificity_elevated']:.2f} | "
                f"{r['sensitivity_high']:.2f}/{r['specificity_high']:.2f}"
            )
        lines.append(f"| {r['subgroup']} | {r['group']} | {r['n']} | {r['n_events']} | {figures} |")
    return "\n".join(lines)
