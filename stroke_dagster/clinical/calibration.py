"""Do the model's probabilities mean what they say? Calibration metrics and the reliability plot.

All functions take observed outcomes ``y`` (0/1) and predicted probabilities ``p`` and know
nothing of MLflow, Dagster or the warehouse.

- calibration-in-the-large: observed/expected ratio (``sum(y) / sum(p)``) and the difference of the
  means (``mean(p) - mean(y)``; positive = over-prediction);
- calibration intercept (``a`` in ``logit P(y) = a + logit(p)``, slope fixed at 1) and calibration
  slope (``b`` in ``logit P(y) = a' + b * logit(p)``): 0 and 1 when calibrated, a slope below 1
  means predictions too extreme;
- expected calibration error over quantile bins (equal-count bins: with a rare outcome most
  equal-width bins would be empty);
- Brier score and log loss.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Probabilities are clipped to [EPS, 1 - EPS] before taking logits or logs.
EPS = 1e-6
DEFAULT_BINS = 10


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def expit(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit as _expit

    return _expit(np.asarray(z, dtype=float))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    *,
    fit_slope: bool = True,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[float, float]:
    """Maximum-likelihood ``(intercept, slope)`` of ``logit P(y=1) = intercept + slope * x``.

    With ``fit_slope=False`` the slope is fixed at 1 (``x`` is an offset) and only the intercept is
    fit. Newton-Raphson; a tiny ridge keeps it finite when the classes separate.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError("x and y must be 1-d arrays of the same, non-zero length")
    beta = np.array([0.0, 1.0])
    if fit_slope:
        design = np.column_stack([np.ones_like(x), x])
        for _ in range(max_iter):
            mu = expit(design @ beta)
            w = mu * (1.0 - mu)
            grad = design.T @ (y - mu) - 1e-8 * beta
            hess = design.T @ (design * w[:, None]) + 1e-8 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            beta = beta + step
            if np.max(np.abs(step)) < tol:
                break
    else:
        for _ in range(max_iter):
            mu = expit(beta[0] + x)
            grad = float(np.sum(y - mu)) - 1e-8 * beta[0]
            hess = float(np.sum(mu * (1.0 - mu))) + 1e-8
            step = grad / hess
            beta[0] += step
            if abs(step) < tol:
                break
    return float(beta[0]), float(beta[1])


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    return float(np.mean((p - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(pointwise_log_loss(y, p)))


def pointwise_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-patient log loss (clipped probabilities)."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)
    return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Quantile bins of ``p``: per bin count, mean predicted and observed rate (lists)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, len(p))) if len(b)]
    return {
        "n": [int(len(b)) for b in bins],
        "predicted": [float(p[b].mean()) for b in bins],
        "observed": [float(y[b].mean()) for b in bins],
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Count-weighted mean |observed - predicted| over quantile bins."""
    table = reliability_table(y, p, n_bins)
    n = np.asarray(table["n"], dtype=float)
    gap = np.abs(np.asarray(table["observed"]) - np.asarray(table["predicted"]))
    return float(np.sum(n * gap) / np.sum(n))


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration figures of one set of predictions (``None`` where undefined)."""

    n: int
    n_events: int
    observed_rate: float
    mean_predicted: float
    oe_ratio: float | None
    mean_difference: float
    calibration_intercept: float | None
    calibration_slope: float | None
    ece: float
    brier: float
    log_loss: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Numeric figures for MLflow / asset metadata (undefined ones left out)."""
        return {
            f"{prefix}{k}": float(v)
            for k, v in asdict(self).items()
            if v is not None and k not in ("n", "n_events")
        }


def calibration_report(
    y: np.ndarray, p: np.ndarray, n_bins: int = DEFAULT_BINS
) -> CalibrationReport:
    """Every calibration figure of predictions ``p`` against outcomes ``y``."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0 or len(y) != len(p):
        raise ValueError("y and p must be non-empty and of the same length")
    events = int(y.sum())
    intercept = slope = None
    if 0 < events < len(y):
        z = logit(p)
        intercept, _ = fit_logistic(z, y, fit_slope=False)
        _, slope = fit_logistic(z, y, fit_slope=True)
    return CalibrationReport(
        n=len(y),
        n_events=events,
        observed_rate=float(y.mean()),
        mean_predicted=float(p.mean()),
        oe_ratio=float(y.sum() / p.sum()) if p.sum() > 0 else None,
        mean_difference=float(p.mean() - y.mean()),
        calibration_intercept=intercept,
        calibration_slope=slope,
        ece=expected_calibration_error(y, p, n_bins),
        brier=brier(y, p),
        log_loss=log_loss(y, p),
    )


def figure(size: tuple[float, float] = (4.5, 4.5)) -> tuple[Any, Any]:
    """A headless matplotlib figure and axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def png_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def reliability_plot(
    y: np.ndarray, p: np.ndarray, n_bins: int = DEFAULT_BINS, title: str = "Reliability diagram"
) -> bytes:
    """Reliability diagram (quantile bins, point size by count) with the metrics in the legend."""
    table = reliability_table(y, p, n_bins)
    report = calibration_report(y, p, n_bins)
    fig, ax = figure()
    top = max(max(table["predicted"]), max(table["observed"]), 0.05) * 1.1
    ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="perfect")
    oe = "n/a" if report.oe_ratio is None else f"{report.oe_ratio:.2f}"
    slope = "n/a" if report.calibration_slope is None else f"{report.calibration_slope:.2f}"
    ax.plot(
        table["predicted"],
        table["observed"],
        marker="o",
        label=f"O/E {oe}, slope {slope}, ECE {report.ece:.4f}",
    )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("Mean predicted stroke probability")
    ax.set_ylabel("Observed stroke rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return png_bytes(fig)
