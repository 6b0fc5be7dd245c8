"""Drift-check settings: significance level, multiple-testing correction, effect-size floors.

Every value can be set from the environment, so the same code serves a 500-patient clinic and a
500,000-patient region without edits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

BACKENDS: tuple[str, ...] = ("alibi", "scipy")
CORRECTIONS: tuple[str, ...] = ("bonferroni", "fdr")
NUMERIC_EFFECTS: tuple[str, ...] = ("wasserstein", "psi")


@dataclass(frozen=True)
class DriftConfig:
    """How a check turns p-values and effect sizes into alarms.

    A feature drifts when its test is significant after the correction *and* its effect size
    reaches the floor. The floors sit at about a tenth of a standard deviation: a 0.1-sd location
    shift has a normalised Wasserstein distance of 0.1 and a PSI of about 0.01 (PSI ~ shift² for
    small shifts), so they describe the same "smallest change worth a page" on each scale.
    """

    backend: str = "alibi"
    alpha: float = 0.05
    correction: str = "bonferroni"
    numeric_effect: str = "wasserstein"  # effect size used for numeric features: wasserstein | psi
    wasserstein_floor: float = 0.1  # Wasserstein-1 distance in reference standard deviations
    psi_floor: float = 0.01  # population stability index (categorical features; numeric if psi)
    missing_rate_floor: float = 0.02  # absolute change of a feature's missing-value rate
    # Numeric inputs: KS plus a Mann-Whitney location test (False: KS alone, plain TabularDrift).
    location_test: bool = True
    psi_bins: int = 10  # reference-quantile bins for the PSI of numeric features
    # Categories rarer than this in the reference are pooled for the chi-squared test (its p-value
    # is unreliable when expected counts are tiny: one extra "Other" gender must not page anyone).
    rare_category_share: float = 0.01

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"drift backend must be one of {', '.join(BACKENDS)}: {self.backend!r}"
            )
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
        if self.numeric_effect not in NUMERIC_EFFECTS:
            raise ValueError(f"numeric_effect must be one of {', '.join(NUMERIC_EFFECTS)}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1): {self.alpha}")

    def with_backend(self, backend: str | None) -> DriftConfig:
        return self if backend is None else replace(self, backend=backend)

    @classmethod
    def from_env(cls, **overrides: object) -> DriftConfig:
        """Defaults overridden by ``STROKE_DRIFT_*`` variables, then by keyword arguments."""
        env = os.environ
        values: dict[str, object] = {
            "backend": env.get("STROKE_DRIFT_BACKEND", cls.backend).strip().lower(),
            "alpha": float(env.get("STROKE_DRIFT_ALPHA", cls.alpha)),
            "correction": env.get("STROKE_DRIFT_CORRECTION", cls.correction).strip().lower(),
            "numeric_effect": env.get("STROKE_DRIFT_NUMERIC_EFFECT", cls.numeric_effect).lower(),
            "wasserstein_floor": float(
                env.get("STROKE_DRIFT_WASSERSTEIN_FLOOR", cls.wasserstein_floor)
            ),
            "psi_floor": float(env.get("STROKE_DRIFT_PSI_FLOOR", cls.psi_floor)),
            "missing_rate_floor": float(
                env.get("STROKE_DRIFT_MISSING_FLOOR", cls.missing_rate_floor)
            ),
            "location_test": env.get("STROKE_DRIFT_LOCATION_TEST", "1").strip().lower()
            not in {"0", "false", "no", "off"},
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
