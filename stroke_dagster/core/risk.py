"""Risk tiers: probability thresholds chosen at training time and applied at scoring time."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

TIERS: tuple[str, ...] = ("low", "elevated", "high")


@dataclass(frozen=True)
class RiskThresholds:
    """``probability >= high`` is high risk, ``>= elevated`` elevated, anything below low."""

    elevated: float
    high: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.elevated <= self.high <= 1.0:
            raise ValueError(f"thresholds must satisfy 0 <= elevated <= high <= 1, got {self}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RiskThresholds:
        data = json.loads(text)
        return cls(elevated=float(data["elevated"]), high=float(data["high"]))


def tier_index(probabilities: np.ndarray, thresholds: RiskThresholds) -> np.ndarray:
    """The position in ``TIERS`` of each probability's tier (the one tiering rule)."""
    return np.searchsorted([thresholds.elevated, thresholds.high], probabilities, side="right")


def assign_tiers(probabilities: np.ndarray, thresholds: RiskThresholds) -> np.ndarray:
    """Vectorised tier labels (object array of ``TIERS`` values) for an array of probabilities."""
    return np.asarray(TIERS, dtype=object)[tier_index(probabilities, thresholds)]
