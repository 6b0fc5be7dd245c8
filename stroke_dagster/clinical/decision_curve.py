"""Decision-curve analysis: is acting on the model better than treating everyone or no one?

Net benefit at threshold probability ``t`` (Vickers & Elkin 2006) of a policy that treats the
flagged patients: ``TP/n - FP/n * t / (1 - t)``. The model's curve flags ``p >= t``; treat-all
flags everyone (``prevalence - (1 - prevalence) * t / (1 - t)``); treat-none is 0. The tier
policies flag a fixed set (``p >= elevated`` or ``p >= high``) whatever ``t`` is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.core.risk import RiskThresholds

# Threshold probabilities a stroke-prevention decision plausibly uses: 1 % to 30 %.
DEFAULT_THRESHOLDS = np.round(np.arange(0.01, 0.301, 0.005), 4)


def net_benefit(y: np.ndarray, flagged: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Net benefit of treating ``flagged`` patients at threshold probability ``t``."""
    y = np.asarray(y, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    n = len(y)
    tp = np.sum(flagged & y) / n
    fp = np.sum(flagged & ~y) / n
    t = np.asarray(t, dtype=float)
    return tp - fp * t / (1.0 - t)


@dataclass
class DecisionCurve:
    """Net benefit per threshold probability of the model, treat-all, treat-none and the tiers."""

    table: pd.DataFrame
    useful_ranges: list[tuple[float, float]]
    tier_net_benefit: dict[str, float]
    prevalence: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "useful_ranges": [list(r) for r in self.useful_ranges],
            "tier_net_benefit": self.tier_net_benefit,
            "prevalence": self.prevalence,
        }

    def describe_ranges(self) -> str:
        if not self.useful_ranges:
            return "at no threshold probability in the range examined"
        return ", ".join(f"{lo:.1%} to {hi:.1%}" for lo, hi in self.useful_ranges)


def decision_curve(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: RiskThresholds | None = None,
    grid: np.ndarray | None = None,
) -> DecisionCurve:
    """Net-benefit table over ``grid`` and the threshold ranges where the model adds value.

    The model adds value at ``t`` when its net benefit is above both treat-all and treat-none.
    ``tier_net_benefit`` is the net benefit of acting on each tier at its own threshold.
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    grid = DEFAULT_THRESHOLDS if grid is None else np.asarray(grid, dtype=float)
    prevalence = float(y.mean())
    rows: dict[str, Any] = {
        "threshold": grid,
        "model": np.array([float(net_benefit(y, p >= t, t)) for t in grid]),
        "treat_all": prevalence - (1.0 - prevalence) * grid / (1.0 - grid),
        "treat_none": np.zeros(len(grid)),
    }
    tier_nb: dict[str, float] = {}
    if thresholds is not None:
        for tier in ("elevated", "high"):
            cut = getattr(thresholds, tier)
            rows[f"act_on_{tier}"] = net_benefit(y, p >= cut, grid)
            tier_nb[tier] = float(net_benefit(y, p >= cut, min(cut, 0.999)))
    table = pd.DataFrame(rows)
    best_default = np.maximum(table["treat_all"], table["treat_none"])
    useful = (table["model"] > best_default + 1e-12).to_numpy()
    return DecisionCurve(
        table=table,
        useful_ranges=_ranges(grid, useful),
        tier_net_benefit=tier_nb,
        prevalence=prevalence,
    )


def _ranges(grid: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    start = None
    for i, ok in enumerate(mask):
        if ok and start is None:
            start = i
        if start is not None and (not ok or i == len(mask) - 1):
            end = i if ok else i - 1
            out.append((float(grid[start]), float(grid[end])))
            start = None
    return out


def decision_curve_plot(curve: DecisionCurve, title: str = "Decision curve") -> bytes:
    """Net benefit vs threshold probability (PNG bytes)."""
    from stroke_dagster.clinical.calibration import figure, png_bytes

    t = curve.table
    fig, ax = figure((6.0, 4.5))
    ax.plot(t["threshold"], t["model"], label="model (treat if p >= t)", linewidth=2)
    ax.plot(t["threshold"], t["treat_all"], label="treat all", color="grey")
    ax.plot(t["threshold"], t["treat_none"], label="treat none", color="black", linewidth=1)
    for tier, style in (("elevated", ":"), ("high", "--")):
        if f"act_on_{tier}" in t:
            ax.plot(t["threshold"], t[f"act_on_{tier}"], linestyle=style, label=f"act on {tier}+")
    low = min(-0.005, float(t["model"].min()))
    ax.set_ylim(max(low, -curve.prevalence), max(curve.prevalence * 1.1, 0.005))
    ax.set_xlabel("Threshold probability")
    ax.set_ylabel("Net benefit")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return png_bytes(fig)
