"""Site recalibration: refit the champion's probabilities to a site's labelled patients.

The forest is never retrained. :class:`RecalibratedModel` wraps the same fitted pipeline and maps
its probability ``p`` to ``expit(intercept + slope * logit(p))`` - a monotone map, so the ranking
(ROC AUC) is unchanged and only the level and spread of the risks move.

Method, chosen from the number of events (strokes) in the fit part:

- fewer than ``min_events`` (default 20): no recalibration - the intercept's standard error is
  about ``1/sqrt(events)`` on the logit scale, so with 20 events the O/E ratio is known to about
  +-45 % (95 %); below that a fix could do more harm than good;
- ``min_events`` to ``slope_min_events - 1`` (default 100): intercept only ("recalibration in
  the large"), which corrects a shift in prevalence with one parameter;
- ``slope_min_events`` or more: intercept and slope. A slope needs many more events to be
  estimated usefully (validation guidance asks for at least 100 events, e.g. Riley et al. 2021;
  Van Calster et al. 2016); with fewer, a fitted slope mostly follows noise.

Fair judging. Labelled patients are split by a hash of their id into a fit part and a judge part
(``judge_fraction``); a patient is always on the same side, whatever day they arrive. The
recalibration is fit on the fit part only; :func:`calibration_verdict` compares it with the
champion on the judge part, which neither the forest (trained on the Kaggle data) nor the
recalibration saw.

Gate criterion (:func:`calibration_verdict`): the candidate is promoted when its ROC AUC is not
worse than the champion's beyond the AUC tolerance AND it is *clearly* better in log loss or Brier
score: the 95 % confidence interval of the mean per-patient difference (candidate - champion,
paired, normal approximation) lies entirely below zero. Otherwise it stays a challenger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from stroke_dagster.clinical.calibration import (
    calibration_report,
    expit,
    fit_logistic,
    logit,
    pointwise_log_loss,
)
from stroke_dagster.clinical.stats import auc, mean_ci
from stroke_dagster.core.schema import ID, PATIENT_KEY, TARGET

log = logging.getLogger(__name__)

INTERCEPT = "intercept"
INTERCEPT_SLOPE = "intercept+slope"
RECALIBRATION_TYPE = "stroke_dagster.clinical.recalibration.RecalibratedModel"


@dataclass(frozen=True)
class RecalibrationConfig:
    """When and how to recalibrate, and how to judge the result."""

    min_events: int = 20
    slope_min_events: int = 100
    judge_fraction: float = 0.4
    auc_tolerance: float = 0.01
    salt: str = "recalibration"

    def __post_init__(self) -> None:
        if not 0.0 < self.judge_fraction < 1.0:
            raise ValueError(f"judge_fraction must be in (0, 1), got {self.judge_fraction}")
        if not 1 <= self.min_events <= self.slope_min_events:
            raise ValueError("need 1 <= min_events <= slope_min_events")


class RecalibratedModel(ClassifierMixin, BaseEstimator):
    """``base`` (a fitted binary classifier) with its probability recalibrated on the logit scale.

    ``predict_proba`` returns ``[1 - q, q]`` with ``q = expit(intercept + slope * logit(p))``,
    ``p`` the base model's stroke probability. Saved and loaded by skops like any estimator
    (trusted type :data:`RECALIBRATION_TYPE`).
    """

    def __init__(self, base: Any = None, intercept: float = 0.0, slope: float = 1.0) -> None:
        self.base = base
        self.intercept = intercept
        self.slope = slope

    @property
    def classes_(self) -> np.ndarray:
        return self.base.classes_

    def fit(self, X: Any, y: Any) -> RecalibratedModel:  # noqa: N803 - sklearn naming
        """Fit intercept and slope on ``(X, y)`` with ``base`` left as it is."""
        self.intercept, self.slope = fit_logistic(
            logit(self.base.predict_proba(X)[:, 1]), np.asarray(y), fit_slope=True
        )
        return self

    def transform_probability(self, p: np.ndarray) -> np.ndarray:
        return expit(self.intercept + self.slope * logit(p))

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        q = self.transform_probability(self.base.predict_proba(X)[:, 1])
        return np.column_stack([1.0 - q, q])

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def unwrap(model: Any) -> tuple[Any, float, float]:
    """``(base pipeline, intercept, slope)``; a plain pipeline is ``(model, 0, 1)``."""
    if isinstance(model, RecalibratedModel):
        return model.base, float(model.intercept), float(model.slope)
    return model, 0.0, 1.0


def compose(model: Any, intercept: float, slope: float) -> RecalibratedModel:
    """Recalibrate ``model``'s output; a recalibrated model stays ONE wrapper around its base."""
    base, a1, b1 = unwrap(model)
    return RecalibratedModel(base=base, intercept=intercept + slope * a1, slope=slope * b1)


def id_fraction(ids: pd.Series | list[str], salt: str = "recalibration") -> np.ndarray:
    """A stable number in [0, 1) per patient id (SHA-256 of ``salt`` and the id)."""
    out = np.empty(len(ids), dtype=float)
    for i, value in enumerate(pd.Series(ids).astype(str).str.strip()):
        digest = hashlib.sha256(f"{salt}:{value}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0**64
    return out


def split_fit_judge(
    df: pd.DataFrame, judge_fraction: float, salt: str = "recalibration", id_column: str = ID
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled patients split by id hash into ``(fit part, judge part)``."""
    judge = id_fraction(df[id_column], salt) < judge_fraction
    return df.loc[~judge].reset_index(drop=True), df.loc[judge].reset_index(drop=True)


def choose_method(n_events: int, config: RecalibrationConfig) -> str | None:
    """``None`` (too few events), :data:`INTERCEPT` or :data:`INTERCEPT_SLOPE`."""
    if n_events < config.min_events:
        return None
    return INTERCEPT_SLOPE if n_events >= config.slope_min_events else INTERCEPT


def fit_recalibration(p: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    """``(intercept, slope)`` of the recalibration of probabilities ``p`` to outcomes ``y``."""
    if method not in (INTERCEPT, INTERCEPT_SLOPE):
        raise ValueError(f"unknown recalibration method {method!r}")
    return fit_logistic(logit(p), np.asarray(y), fit_slope=method == INTERCEPT_SLOPE)


@dataclass(frozen=True)
class CalibrationVerdict:
    """Calibration comparison of a candidate with the champion on the same patients."""

    promote: bool
    reason: str
    n_patients: int
    n_events: int
    champion: dict[str, float]
    candidate: dict[str, float]
    log_loss_diff_ci: tuple[float, float]
    brier_diff_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    report = calibration_report(y, p)
    roc_auc = auc(y, p)
    out = {"roc_auc": roc_auc if roc_auc is not None else float("nan")}
    out.update(
        {
            "log_loss": report.log_loss,
            "brier": report.brier,
            "oe_ratio": report.oe_ratio if report.oe_ratio is not None else float("nan"),
            "mean_predicted": report.mean_predicted,
            "observed_rate": report.observed_rate,
        }
    )
    return out


def calibration_verdict(
    y: np.ndarray,
    p_champion: np.ndarray,
    p_candidate: np.ndarray,
    auc_tolerance: float = 0.01,
) -> CalibrationVerdict:
    """Promote the candidate when it is no worse in AUC and clearly better in log loss or Brier.

    All three arrays describe the same patients, unseen by both models' fits.
    """
    y = np.asarray(y, dtype=float)
    p0, p1 = np.asarray(p_champion, dtype=float), np.asarray(p_candidate, dtype=float)
    if not len(y) == len(p0) == len(p1) or len(y) < 2:
        raise ValueError("y and both probability arrays must have the same length (>= 2)")
    champ, cand = _figures(y, p0), _figures(y, p1)
    ll_ci = mean_ci(pointwise_log_loss(y, p1) - pointwise_log_loss(y, p0))[1:]
    br_ci = mean_ci((p1 - y) ** 2 - (p0 - y) ** 2)[1:]
    n_events = int(y.sum())
    auc0, auc1 = champ["roc_auc"], cand["roc_auc"]
    where = f"on {len(y)} unseen labelled patients ({n_events} events)"
    if np.isnan(auc0) or np.isnan(auc1):
        promote, why = False, f"ROC AUC undefined {where}: both classes needed"
    elif auc1 < auc0 - auc_tolerance:
        promote = False
        why = f"ROC AUC {auc1:.4f} worse than champion's {auc0:.4f} beyond {auc_tolerance:.4f}"
    elif ll_ci[1] < 0 or br_ci[1] < 0:
        promote = True
        better = "log loss" if ll_ci[1] < 0 else "Brier"
        why = (
            f"ROC AUC {auc1:.4f} vs champion's {auc0:.4f} (tolerance {auc_tolerance:.4f}) and "
            f"clearly better {better}: log loss {cand['log_loss']:.5f} vs {champ['log_loss']:.5f} "
            f"(95% CI of difference {ll_ci[0]:+.5f}..{ll_ci[1]:+.5f}), Brier {cand['brier']:.5f} "
            f"vs {champ['brier']:.5f} ({br_ci[0]:+.6f}..{br_ci[1]:+.6f})"
        )
    else:
        promote = False
        verdict = "worse" if ll_ci[0] > 0 and br_ci[0] > 0 else "not clearly better"
        why = (
            f"{verdict} calibrated: log loss {cand['log_loss']:.5f} vs "
            f"{champ['log_loss']:.5f} (95% CI of difference {ll_ci[0]:+.5f}..{ll_ci[1]:+.5f}), "
            f"Brier {cand['brier']:.5f} vs {champ['brier']:.5f} "
            f"({br_ci[0]:+.6f}..{br_ci[1]:+.6f})"
        )
    return CalibrationVerdict(
        promote=promote,
        reason=f"{why} {where}",
        n_patients=len(y),
        n_events=n_events,
        champion=champ,
        candidate=cand,
        log_loss_diff_ci=ll_ci,
        brier_diff_ci=br_ci,
    )


@dataclass
class RecalibrationFit:
    """A fitted recalibration of one model on one site's labelled patients."""

    model: RecalibratedModel
    method: str
    intercept: float
    slope: float
    n_fit: int
    n_fit_events: int
    n_judge: int
    n_judge_events: int
    verdict: CalibrationVerdict
    step_intercept: float = 0.0
    step_slope: float = 1.0
    judge: pd.DataFrame | None = field(repr=False, default=None)
    fit_ids: list[str] = field(repr=False, default_factory=list)
    fit_patients: list[str] = field(repr=False, default_factory=list)  # their patient keys

    def step(self, p: np.ndarray) -> np.ndarray:
        """The fitted map alone: the recalibrated model's probability from the original's."""
        return expit(self.step_intercept + self.step_slope * logit(p))

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "intercept": round(self.intercept, 6),
            "slope": round(self.slope, 6),
            "n_fit": self.n_fit,
            "n_fit_events": self.n_fit_events,
            "n_judge": self.n_judge,
            "n_judge_events": self.n_judge_events,
        }


def _site_ids(df: pd.DataFrame, id_column: str) -> list[str]:
    ids = df[id_column].astype(str)
    return (df["day"].astype(str) + "/" + ids).tolist() if "day" in df else ids.tolist()


def _patients(df: pd.DataFrame) -> list[str]:
    from stroke_dagster.core.features import patient_keys

    return patient_keys(df).tolist() if len(df) else []


class NotEnoughEvents(Exception):
    """Too few labelled events in the fit part to recalibrate."""


def recalibrate(
    model: Any,
    labelled: pd.DataFrame,
    config: RecalibrationConfig | None = None,
    id_column: str = ID,
) -> RecalibrationFit:
    """Fit a recalibration of ``model`` (pipeline or :class:`RecalibratedModel`) and judge it.

    ``labelled`` holds validated patients (features, ``stroke``, ``id_column``). Raises
    :class:`NotEnoughEvents` when the fit part has fewer than ``config.min_events`` strokes.
    """
    from stroke_dagster.core.features import feature_frame

    config = config or RecalibrationConfig()
    if id_column == ID and PATIENT_KEY in labelled.columns:
        id_column = PATIENT_KEY  # a patient seen on several days stays on one side
    fit_part, judge_part = split_fit_judge(labelled, config.judge_fraction, config.salt, id_column)
    y_fit = fit_part[TARGET].to_numpy(dtype=int)
    method = choose_method(int(y_fit.sum()), config)
    if method is None:
        raise NotEnoughEvents(
            f"{int(y_fit.sum())} events among {len(fit_part)} labelled patients in the fit part; "
            f"recalibration needs at least {config.min_events}"
        )
    p_fit = model.predict_proba(feature_frame(fit_part))[:, 1]
    intercept, slope = fit_recalibration(p_fit, y_fit, method)
    candidate = compose(model, intercept, slope)
    y_judge = judge_part[TARGET].to_numpy(dtype=int)
    x_judge = feature_frame(judge_part)
    verdict = calibration_verdict(
        y_judge,
        model.predict_proba(x_judge)[:, 1],
        candidate.predict_proba(x_judge)[:, 1],
        config.auc_tolerance,
    )
    return RecalibrationFit(
        model=candidate,
        method=method,
        intercept=float(candidate.intercept),
        slope=float(candidate.slope),
        n_fit=len(fit_part),
        n_fit_events=int(y_fit.sum()),
        n_judge=len(judge_part),
        n_judge_events=int(y_judge.sum()),
        verdict=verdict,
        step_intercept=intercept,
        step_slope=slope,
        judge=judge_part,
        fit_ids=_site_ids(fit_part, ID),
        fit_patients=_patients(fit_part),
    )


def labelled_patients(settings: Any, days: list[str] | None = None) -> tuple[pd.DataFrame, int]:
    """Validated labelled cohort patients of ``days`` (default: every labelled day).

    :func:`stroke_dagster.io.labels.labelled_cohort` of each day (a day lacking its files
    raises), validated. Returns the patients (schema columns plus ``day`` and ``patient_key``)
    and the number of rows rejected by validation or label.
    """
    from stroke_dagster.io.labels import labelled_cohort, labelled_days
    from stroke_dagster.io.validation import validate_patients

    if days is None:
        days = labelled_days(settings)
    frames, rejected = [], 0
    for day in days:
        dt.date.fromisoformat(day)
        result = validate_patients(labelled_cohort(day, settings), require_label=True)
        rejected += len(result.quarantine)
        frames.append(result.valid.assign(day=day))
    if not frames:
        return pd.DataFrame(), rejected
    return pd.concat(frames, ignore_index=True), rejected
