"""The champion gate: may a new version replace the champion?

Fairness. Each version's holdout is fixed per patient
(:func:`stroke_dagster.core.features.holdout_mask`
of the patient key: a patient seen on several labelled days is on one side), and the rows and
patients it trained on and was held out on are stored with it. Champion and candidate are compared
only on the candidate's holdout patients that the champion did not train on, on any day
(:func:`unseen_patients`): neither model has seen them. For a champion stored without patient keys
the comparison goes by row id; without its training ids (older versions) the shared set is the
intersection of both holdouts.

Decision by non-inferiority. A retrain on the same data is as good as the champion, give or take
noise; what the gate must keep out is a version that is *worse by a clinically relevant amount*.
So each comparison with the champion is a non-inferiority test against a margin
(:class:`~stroke_dagster.core.settings.GateSettings`), decided by the 95 % confidence bound, never
by
the point estimate, and has three outcomes (:data:`PASS`, :data:`FAIL`, :data:`INCONCLUSIVE`):

- pass: the bound shows the candidate is no worse than the margin (the whole 95 % CI is on the
  acceptable side of it);
- fail: the bound shows it is worse (the whole 95 % CI is beyond the margin);
- inconclusive: the CI straddles the margin (the data cannot tell), or there are fewer than
  ``min_events`` events, below which the normal-approximation bounds are not trusted.

The default criteria (:data:`DEFAULT_CRITERIA`) are

- :func:`auc_floor_criterion`: candidate ROC AUC above ``auc_floor`` (a sanity floor, pass/fail);
- :func:`auc_non_inferiority_criterion`: candidate - champion ROC AUC on the same patients
  (DeLong's paired 95 % CI); pass when its lower bound is >= -``tolerance`` (0.02);
- :func:`calibration_criterion`: the ratio of the candidate's to the champion's mean log loss on
  the same patients (paired, delta-method 95 % CI); pass when its upper bound is
  <= 1 + ``log_loss_margin`` (1.05); the Brier ratio is recorded with it;
- :func:`calibration_in_the_large_criterion`: how much further from 1 the candidate's
  observed:expected ratio is than the champion's, ``|ln O:E(candidate)| - |ln O:E(champion)|``
  (95 % CI from the Poisson error of the observed count); pass when its upper bound is
  <= ln ``oe_margin`` (1.2).

:func:`judge` gives a :class:`GateVerdict` whose ``outcome`` is ``"promote"`` when every criterion
passes (the version becomes ``champion``), ``"refuse"`` when one fails and ``"inconclusive"``
otherwise (both leave it ``challenger``, with the reason). An inconclusive challenger can be
judged again with more paired evidence: labelled live days on which both models scored the same
patients (:func:`pool_evidence`, ``judge(..., live_days=...)``) are pooled with the holdout, so the
bounds narrow as days accrue.

A site recalibration is judged by :data:`RECALIBRATION_CRITERIA`: the default criteria (it must
not be worse) plus :func:`calibration_gain_criterion` (it must be *clearly better* calibrated:
pass when the 95 % CI of the log-loss or Brier difference lies below zero, fail when neither can
be better (both CIs' lower bounds at or above zero), inconclusive otherwise).

Why these margins (see :class:`~stroke_dagster.core.settings.GateSettings` for the reasoning) and
how
often they promote an equivalent or a worse candidate at 50, 200 and 1,000 events:
``benchmarks/gate_power.py``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.clinical.stats import Z_95, auc, mean_ci, paired_auc_difference, paired_ratio
from stroke_dagster.core.settings import GateSettings, Settings

log = logging.getLogger(__name__)

CANDIDATE_MINUS_CHAMPION_TRAIN = "candidate holdout minus champion training ids"
HOLDOUT_INTERSECTION = "intersection of both holdouts"
CHAMPION = "champion"
CHALLENGER = "challenger"

# A criterion's outcome.
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
CRITERION_OUTCOMES = (PASS, FAIL, INCONCLUSIVE)
# A verdict's outcome (INCONCLUSIVE is shared).
PROMOTE, REFUSE = "promote", "refuse"
# The columns of a labelled live day given to :func:`pool_evidence` (``id`` optional).
LIVE_COLUMNS = ("y", "p_champion", "p_candidate")


def _ids(values: Iterable[Any]) -> set[str]:
    return {str(v) for v in values}


def unseen_patients(
    candidate_holdout: pd.DataFrame,
    *,
    champion_train_ids: Iterable[Any] | None,
    champion_holdout_ids: Iterable[Any] | None = None,
    id_column: str = "id",
) -> tuple[pd.DataFrame, str]:
    """The rows of ``candidate_holdout`` neither model trained on, and how they were chosen.

    With the champion's training ids: the candidate's holdout minus them. Without (a version
    stored before ids were kept): the candidate's holdout patients also in the champion's holdout.
    """
    ids = candidate_holdout[id_column].astype(str)
    if champion_train_ids is not None:
        keep = ~ids.isin(_ids(champion_train_ids))
        rule = CANDIDATE_MINUS_CHAMPION_TRAIN
    elif champion_holdout_ids is not None:
        keep = ids.isin(_ids(champion_holdout_ids))
        rule = HOLDOUT_INTERSECTION
    else:
        raise ValueError("the champion's training or holdout ids are needed")
    return candidate_holdout.loc[keep.to_numpy()].reset_index(drop=True), rule


def not_trained_on(patients: pd.DataFrame, split: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``patients`` minus every patient a version's stored ``split`` trained on, and the rule.

    By patient key: a patient the version saw on any day is not unseen on another. A split
    stored before patient keys were kept is compared by row id.
    """
    from stroke_dagster.core.features import patient_keys
    from stroke_dagster.core.schema import ID, PATIENT_KEY

    trained = split.loc[split["split"] == "train"]
    if PATIENT_KEY not in split.columns:
        return unseen_patients(patients, champion_train_ids=trained[ID])
    keyed = patients.assign(**{PATIENT_KEY: patient_keys(patients)})
    return unseen_patients(keyed, champion_train_ids=trained[PATIENT_KEY], id_column=PATIENT_KEY)


def oe_excess(
    y: np.ndarray, p_candidate: np.ndarray, p_champion: np.ndarray
) -> tuple[float, float, float, float, float]:
    """``(candidate O:E, champion O:E, excess, CI low, CI high)`` of calibration-in-the-large.

    The excess is ``|ln O:E(candidate)| - |ln O:E(champion)|``: how much further from 1 (on the
    log scale) the candidate's observed:expected ratio is than the champion's on the same
    patients. Both share the observed count O, whose uncertainty (SE of ln O about
    sqrt(1/O - 1/n), as for an O:E ratio) is the only random part given the patients; the excess
    is monotone in ln O, so its 95 % CI is its value at the two ends of ln O's CI. It lies
    within +-|ln(E_candidate / E_champion)| whatever O is.
    """
    from stroke_dagster.clinical.calibration import EPS

    y = np.asarray(y, dtype=float)
    n, observed = len(y), float(np.sum(y))
    e1 = float(np.sum(np.clip(np.asarray(p_candidate, float), EPS, 1 - EPS)))
    e0 = float(np.sum(np.clip(np.asarray(p_champion, float), EPS, 1 - EPS)))
    if observed <= 0 or n < 2:
        raise ValueError("observed:expected ratios need at least one event")

    def excess(log_o: float) -> float:
        return abs(log_o - math.log(e1)) - abs(log_o - math.log(e0))

    log_o = math.log(observed)
    half = Z_95 * math.sqrt(max(1.0 / observed - 1.0 / n, 0.0))
    ends = (excess(log_o - half), excess(log_o + half))
    return observed / e1, observed / e0, excess(log_o), min(ends), max(ends)


def non_inferiority(low: float, high: float, margin: float, *, higher_is_better: bool) -> str:
    """:data:`PASS`, :data:`FAIL` or :data:`INCONCLUSIVE` for a statistic's 95 % CI and margin.

    Higher is better (an AUC difference, margin e.g. -0.02): pass when ``low >= margin``, fail
    when ``high < margin``. Lower is better (a loss ratio, margin e.g. 1.05): pass when
    ``high <= margin``, fail when ``low > margin``. Otherwise the CI straddles the margin.
    """
    if any(math.isnan(v) for v in (low, high, margin)):
        return INCONCLUSIVE
    if higher_is_better:
        return PASS if low >= margin else FAIL if high < margin else INCONCLUSIVE
    return PASS if high <= margin else FAIL if low > margin else INCONCLUSIVE


@dataclass(frozen=True)
class Evidence:
    """What the criteria judge: both models' probabilities on the same unseen patients.

    ``ids`` (optional) are the patients' ids, used to drop repeats when live days are pooled in
    (:func:`pool_evidence`); ``n_live_*`` count the pooled live patients, events and days.
    """

    y: np.ndarray = field(repr=False)
    p_candidate: np.ndarray = field(repr=False)
    p_champion: np.ndarray | None = field(repr=False)  # None: there is no other champion
    settings: GateSettings
    candidate_version: str
    champion_version: str | None
    rule: str = CANDIDATE_MINUS_CHAMPION_TRAIN
    ids: np.ndarray | None = field(default=None, repr=False)
    n_live_patients: int = 0
    n_live_events: int = 0
    n_live_days: int = 0

    @property
    def n_patients(self) -> int:
        return len(self.y)

    @property
    def n_events(self) -> int:
        return int(np.sum(self.y))

    @property
    def where(self) -> str:
        """``"on N patients neither trained on (E events)"``, with the live share when live
        days were pooled."""
        live = ""
        if self.n_live_days:
            live = (
                f"; {self.n_live_patients} patients ({self.n_live_events} events) of them from "
                f"{self.n_live_days} labelled live days"
            )
        return f"on {self.n_patients} patients neither trained on ({self.n_events} events{live})"


@dataclass(frozen=True)
class Criterion:
    """One criterion's outcome: its name, whether it passed, why, and its figures.

    ``outcome`` is :data:`PASS`, :data:`FAIL` or :data:`INCONCLUSIVE`; left blank it follows
    ``passed`` (pass or fail), so a two-outcome criterion is written as before. ``passed`` is
    true exactly when the outcome is a pass.
    """

    name: str
    passed: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    outcome: str = ""

    def __post_init__(self) -> None:
        if not self.outcome:
            object.__setattr__(self, "outcome", PASS if self.passed else FAIL)
        if self.outcome not in CRITERION_OUTCOMES:
            raise ValueError(f"outcome must be one of {CRITERION_OUTCOMES}, got {self.outcome!r}")
        if bool(self.passed) != (self.outcome == PASS):
            raise ValueError(f"passed={self.passed} contradicts outcome {self.outcome!r}")


def _criterion(name: str, outcome: str, reason: str, metrics: dict[str, float]) -> Criterion:
    return Criterion(name, outcome == PASS, reason, metrics, outcome)


CriterionFn = Callable[[Evidence], Criterion]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    value = auc(y, p)
    return float("nan") if value is None else value


def auc_floor_criterion(evidence: Evidence) -> Criterion:
    """The candidate's ROC AUC on the unseen patients is above ``settings.auc_floor``."""
    floor = evidence.settings.auc_floor
    auc = _auc(evidence.y, evidence.p_candidate)
    passed = bool(auc > floor)
    verb = "is above" if passed else "is not above"
    return Criterion(
        "auc_floor",
        passed,
        f"ROC AUC {auc:.4f} {verb} the floor {floor:.4f}",
        {"candidate_auc": auc, "auc_floor": floor},
    )


def _size(evidence: Evidence) -> dict[str, float]:
    return {
        "n_unseen": float(evidence.n_patients),
        "n_unseen_events": float(evidence.n_events),
        "min_events": float(evidence.settings.min_events),
    }


def _too_few(evidence: Evidence) -> str | None:
    """Why the evidence is too small to compare the two models, or None."""
    need = evidence.settings.min_events
    events, non_events = evidence.n_events, evidence.n_patients - evidence.n_events
    if min(events, non_events) >= need:
        return None
    return (
        f"only {evidence.n_patients} patients ({events} events) shared with champion "
        f"v{evidence.champion_version}: too few to compare (need {need} events and {need} "
        "non-events): inconclusive"
    )


def _decision(
    outcome: str,
    low: float,
    high: float,
    margin_text: str,
    *,
    higher_is_better: bool,
    fmt: str,
    worse: str,
) -> str:
    """The clause saying how the 95 % CI relates to the margin (``margin_text``)."""
    if outcome == PASS:
        which, bound, side = ("lower", low, ">=") if higher_is_better else ("upper", high, "<=")
        return f"{which} bound {bound:{fmt}} {side} margin {margin_text}: non-inferior"
    if outcome == FAIL:
        which, bound = ("upper", high) if higher_is_better else ("lower", low)
        return (
            f"whole 95% CI beyond the margin {margin_text} ({which} bound {bound:{fmt}}): {worse}"
        )
    return f"95% CI straddles the margin {margin_text}: inconclusive"


def auc_non_inferiority_criterion(evidence: Evidence) -> Criterion:
    """Candidate ROC AUC no worse than the champion's by ``settings.tolerance`` (the margin),
    shown by the lower bound of DeLong's paired 95 % CI of the difference on the same patients."""
    name = "auc_vs_champion"
    if evidence.p_champion is None:
        return Criterion(name, True, "no other champion to compare with")
    margin = -evidence.settings.tolerance
    figures = {**_size(evidence), "auc_difference_margin": margin}
    too_few = _too_few(evidence)
    if min(evidence.n_events, evidence.n_patients - evidence.n_events) < 2:
        return _criterion(name, INCONCLUSIVE, str(too_few), figures)
    cand, champ, diff, low, high = paired_auc_difference(
        evidence.y, evidence.p_candidate, evidence.p_champion
    )
    figures.update(
        {
            "candidate_auc": cand,
            "champion_auc": champ,
            "auc_difference": diff,
            "auc_difference_ci_low": low,
            "auc_difference_ci_high": high,
        }
    )
    outcome = non_inferiority(low, high, margin, higher_is_better=True)
    figures_text = (
        f"ROC AUC {cand:.4f} vs champion v{evidence.champion_version}'s {champ:.4f} "
        f"{evidence.where}: difference {diff:+.4f} (95% CI {low:+.4f}..{high:+.4f})"
    )
    if too_few is not None:
        return _criterion(name, INCONCLUSIVE, f"{figures_text}; {too_few}", figures)
    decision = _decision(
        outcome, low, high, f"{margin:+.4f}", higher_is_better=True, fmt="+.4f", worse="worse"
    )
    return _criterion(name, outcome, f"{figures_text}: {decision}", figures)


# The name it had when the point estimate decided (kept for callers composing criteria).
auc_tolerance_criterion = auc_non_inferiority_criterion


def _losses(evidence: Evidence) -> dict[str, Any]:
    """Per-patient log loss and Brier of both models, their paired differences and ratios."""
    from stroke_dagster.clinical.calibration import pointwise_log_loss

    assert evidence.p_champion is not None
    y = np.asarray(evidence.y, dtype=float)
    p1 = np.asarray(evidence.p_candidate, dtype=float)
    p0 = np.asarray(evidence.p_champion, dtype=float)
    l1, l0 = pointwise_log_loss(y, p1), pointwise_log_loss(y, p0)
    b1, b0 = (p1 - y) ** 2, (p0 - y) ** 2
    ll_diff, br_diff = mean_ci(l1 - l0), mean_ci(b1 - b0)
    nan3 = (float("nan"),) * 3
    ll_ratio = paired_ratio(l1, l0) if np.mean(l0) > 0 else nan3
    br_ratio = paired_ratio(b1, b0) if np.mean(b0) > 0 else nan3
    return {
        "candidate_log_loss": float(np.mean(l1)),
        "champion_log_loss": float(np.mean(l0)),
        "log_loss_difference_ci_low": ll_diff[1],
        "log_loss_difference_ci_high": ll_diff[2],
        "log_loss_ratio": ll_ratio[0],
        "log_loss_ratio_ci_low": ll_ratio[1],
        "log_loss_ratio_ci_high": ll_ratio[2],
        "candidate_brier": float(np.mean(b1)),
        "champion_brier": float(np.mean(b0)),
        "brier_difference_ci_low": br_diff[1],
        "brier_difference_ci_high": br_diff[2],
        "brier_ratio": br_ratio[0],
        "brier_ratio_ci_low": br_ratio[1],
        "brier_ratio_ci_high": br_ratio[2],
    }


def _loss_text(evidence: Evidence, f: dict[str, Any]) -> str:
    return (
        f"log loss {f['candidate_log_loss']:.5f} vs champion v{evidence.champion_version}'s "
        f"{f['champion_log_loss']:.5f} (ratio {f['log_loss_ratio']:.3f}, 95% CI "
        f"{f['log_loss_ratio_ci_low']:.3f}..{f['log_loss_ratio_ci_high']:.3f}), Brier "
        f"{f['candidate_brier']:.5f} vs {f['champion_brier']:.5f} (ratio {f['brier_ratio']:.3f}, "
        f"{f['brier_ratio_ci_low']:.3f}..{f['brier_ratio_ci_high']:.3f}) {evidence.where}"
    )


def calibration_criterion(evidence: Evidence) -> Criterion:
    """Its probabilities are no worse than the champion's by ``settings.log_loss_margin``: the
    upper bound of the paired 95 % CI of the log-loss ratio (candidate / champion) on the same
    patients is at most ``1 + log_loss_margin``; fails ("clearly worse calibrated") when the
    lower bound is above it. The Brier figures are recorded with it."""
    name = "calibration_vs_champion"
    if evidence.p_champion is None or evidence.n_patients < 2:
        return Criterion(name, True, "no other champion to compare with")
    margin = 1.0 + evidence.settings.log_loss_margin
    figures = {**_size(evidence), **_losses(evidence), "log_loss_ratio_margin": margin}
    text = _loss_text(evidence, figures)
    too_few = _too_few(evidence)
    if too_few is not None:
        return _criterion(name, INCONCLUSIVE, f"{text}; {too_few}", figures)
    low, high = figures["log_loss_ratio_ci_low"], figures["log_loss_ratio_ci_high"]
    outcome = non_inferiority(low, high, margin, higher_is_better=False)
    decision = _decision(
        outcome,
        low,
        high,
        f"{margin:.3f}",
        higher_is_better=False,
        fmt=".3f",
        worse="clearly worse calibrated",
    )
    return _criterion(name, outcome, f"{text}: log-loss ratio {decision}", figures)


def calibration_in_the_large_criterion(evidence: Evidence) -> Criterion:
    """Its observed:expected ratio is no further from 1 than the champion's by more than a factor
    ``settings.oe_margin``: the upper 95 % bound of ``|ln O:E(candidate)| - |ln O:E(champion)|``
    (:func:`oe_excess`) is at most ``ln(oe_margin)``; fails when the lower bound is above it."""
    name = "calibration_in_the_large_vs_champion"
    if evidence.p_champion is None or evidence.n_patients < 2:
        return Criterion(name, True, "no other champion to compare with")
    margin = math.log(evidence.settings.oe_margin)
    figures = {**_size(evidence), "oe_excess_margin": margin}
    too_few = _too_few(evidence)
    if evidence.n_events < 1:
        return _criterion(name, INCONCLUSIVE, str(too_few), figures)
    o1, o0, excess, low, high = oe_excess(evidence.y, evidence.p_candidate, evidence.p_champion)
    figures.update(
        {
            "candidate_oe_ratio": o1,
            "champion_oe_ratio": o0,
            "oe_excess": excess,
            "oe_excess_ci_low": low,
            "oe_excess_ci_high": high,
        }
    )
    text = (
        f"observed:expected {o1:.3f} vs champion v{evidence.champion_version}'s {o0:.3f} "
        f"{evidence.where}: |ln O:E| excess {excess:+.3f} (95% CI {low:+.3f}..{high:+.3f})"
    )
    if too_few is not None:
        return _criterion(name, INCONCLUSIVE, f"{text}; {too_few}", figures)
    outcome = non_inferiority(low, high, margin, higher_is_better=False)
    decision = _decision(
        outcome,
        low,
        high,
        f"ln {evidence.settings.oe_margin:g} = {margin:+.3f}",
        higher_is_better=False,
        fmt="+.3f",
        worse="clearly worse calibrated in the large",
    )
    return _criterion(name, outcome, f"{text}: {decision}", figures)


def calibration_gain_criterion(evidence: Evidence) -> Criterion:
    """Clearly better calibrated than the champion (what a recalibration must show): passes when
    the paired 95 % CI of the per-patient log-loss or Brier difference lies entirely below zero;
    fails when neither can be better (both CIs' lower bounds at or above zero); inconclusive
    otherwise, and below ``settings.min_events``."""
    name = "calibration_gain"
    if evidence.p_champion is None or evidence.n_patients < 2:
        return Criterion(name, True, "no other champion to compare with")
    figures = {**_size(evidence), **_losses(evidence)}
    ll = figures["log_loss_difference_ci_low"], figures["log_loss_difference_ci_high"]
    br = figures["brier_difference_ci_low"], figures["brier_difference_ci_high"]
    if ll[1] < 0 or br[1] < 0:
        outcome, verdict = PASS, "clearly better"
    elif ll[0] >= 0 and br[0] >= 0:
        outcome, verdict = FAIL, "not clearly better (no gain)"
    else:
        outcome, verdict = INCONCLUSIVE, "not clearly better (inconclusive)"
    too_few = _too_few(evidence)
    if too_few is not None:
        outcome, verdict = INCONCLUSIVE, "not clearly better (too few events)"
    reason = (
        f"{verdict} calibrated than champion v{evidence.champion_version}: log loss "
        f"{figures['candidate_log_loss']:.5f} vs {figures['champion_log_loss']:.5f} (95% CI of "
        f"difference {ll[0]:+.5f}..{ll[1]:+.5f}), Brier {figures['candidate_brier']:.5f} vs "
        f"{figures['champion_brier']:.5f} ({br[0]:+.6f}..{br[1]:+.6f}) {evidence.where}"
    )
    return _criterion(name, outcome, reason + (f"; {too_few}" if too_few else ""), figures)


DEFAULT_CRITERIA: tuple[CriterionFn, ...] = (
    auc_floor_criterion,
    auc_non_inferiority_criterion,
    calibration_criterion,
    calibration_in_the_large_criterion,
)
# A recalibration keeps the ranking; it must not be worse (the default criteria) and must earn
# its place by calibration (clearly better: calibration_gain_criterion).
RECALIBRATION_CRITERIA: tuple[CriterionFn, ...] = (*DEFAULT_CRITERIA, calibration_gain_criterion)


def _live_frame(day: pd.DataFrame, k: int) -> pd.DataFrame:
    missing = [c for c in LIVE_COLUMNS if c not in day.columns]
    if missing:
        raise ValueError(f"live day {k} lacks the column(s) {', '.join(missing)}")
    columns = [*LIVE_COLUMNS, *(["id"] if "id" in day.columns else [])]
    frame = day[columns].copy()
    if frame[list(LIVE_COLUMNS)].isna().any().any():
        raise ValueError(f"live day {k} has missing labels or probabilities")
    if "id" not in frame.columns:
        frame["id"] = None
    frame["id"] = [None if v is None or v != v else str(v) for v in frame["id"]]
    return frame.assign(day=k)


def pool_evidence(
    evidence: Evidence,
    live_days: Iterable[pd.DataFrame],
    *,
    exclude_ids: Iterable[Any] | None = None,
) -> Evidence:
    """``evidence`` with labelled live days pooled in: more paired patients, narrower bounds.

    Each live day is a frame of the same patients scored by both models: columns ``y`` (the
    observed outcome, 0/1), ``p_champion``, ``p_candidate`` (the probabilities of the champion
    being compared and of the candidate) and, optionally, ``id``. Patients are pooled, not days:
    the paired DeLong difference and the paired loss differences are computed on the union, as
    on one larger sample of the population the models serve (both models see exactly the same
    patients, so a day's case mix affects both alike). A patient counts once: a live row whose id
    is already in the evidence (or in an earlier day, or in ``exclude_ids``, e.g. patients either
    model trained on) is dropped; rows without an id are taken as distinct patients.
    """
    if evidence.p_champion is None:
        raise ValueError("live days pair the candidate with a champion; there is none")
    frames = [_live_frame(day, k) for k, day in enumerate(live_days)]
    if not frames:
        return evidence
    live = pd.concat(frames, ignore_index=True)
    n = evidence.n_patients
    base_ids = evidence.ids if evidence.ids is not None else np.full(n, None, dtype=object)
    seen = {str(v) for v in base_ids if v is not None and v == v}
    seen |= _ids(exclude_ids) if exclude_ids is not None else set()
    has_id = live["id"].notna()
    repeat = has_id & (live["id"].isin(seen) | (live["id"].duplicated(keep="first") & has_id))
    live = live.loc[~repeat.to_numpy()]
    if live.empty:  # nothing new
        return evidence
    y_live = live["y"].to_numpy(dtype=int)
    if not set(np.unique(y_live)) <= {0, 1}:
        raise ValueError("live outcomes y must be 0 or 1")
    n_days = int(live["day"].nunique())
    return replace(
        evidence,
        y=np.concatenate([np.asarray(evidence.y, dtype=int), y_live]),
        p_candidate=np.concatenate(
            [np.asarray(evidence.p_candidate, float), live["p_candidate"].to_numpy(float)]
        ),
        p_champion=np.concatenate(
            [np.asarray(evidence.p_champion, float), live["p_champion"].to_numpy(float)]
        ),
        ids=np.concatenate([np.asarray(base_ids, dtype=object), live["id"].to_numpy(object)]),
        rule=f"{evidence.rule} + {n_days} labelled live days",
        n_live_patients=evidence.n_live_patients + len(live),
        n_live_events=evidence.n_live_events + int(y_live.sum()),
        n_live_days=evidence.n_live_days + n_days,
    )


@dataclass(frozen=True)
class GateVerdict:
    """Which alias the new version gets, and the evidence for it.

    ``outcome`` is ``"promote"`` (every criterion passed: champion), ``"refuse"`` (one failed) or
    ``"inconclusive"`` (none failed, but one could not tell): challenger for both.
    """

    version: str
    alias: str
    champion_version: str | None  # the champion it was compared with (None: there was none)
    criteria: tuple[Criterion, ...]
    n_unseen: int
    n_unseen_events: int
    rule: str
    n_live_patients: int = 0  # of n_unseen, how many came from labelled live days
    n_live_days: int = 0

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    @property
    def outcome(self) -> str:
        outcomes = {c.outcome for c in self.criteria}
        return REFUSE if FAIL in outcomes else INCONCLUSIVE if INCONCLUSIVE in outcomes else PROMOTE

    @property
    def reasons(self) -> list[str]:
        label = {PASS: "pass", FAIL: "FAIL", INCONCLUSIVE: "INCONCLUSIVE"}
        return [f"{c.name}: {label[c.outcome]}: {c.reason}" for c in self.criteria]

    @property
    def reason(self) -> str:
        """One line: the first failed criterion's reason, else the first inconclusive one's, or
        every reason when promoted."""
        for outcome in (FAIL, INCONCLUSIVE):
            held = [c.reason for c in self.criteria if c.outcome == outcome]
            if held:
                return held[0]
        # each phrase once: criteria that pass for the same reason ("no other champion") say it once
        return "; ".join(dict.fromkeys(c.reason for c in self.criteria))

    def metrics(self) -> dict[str, float]:
        """Every criterion's figures plus the shared set's size (for MLflow and metadata)."""
        out: dict[str, float] = {
            "n_unseen": float(self.n_unseen),
            "n_unseen_events": float(self.n_unseen_events),
        }
        if self.n_live_days:
            out["n_live_patients"] = float(self.n_live_patients)
            out["n_live_days"] = float(self.n_live_days)
        for criterion in self.criteria:
            out.update(criterion.metrics)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            {
                "promoted": self.promoted,
                "outcome": self.outcome,
                "reason": self.reason,
                "metrics": self.metrics(),
            }
        )
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


def judge(
    evidence: Evidence,
    criteria: Sequence[CriterionFn] = DEFAULT_CRITERIA,
    *,
    live_days: Iterable[pd.DataFrame] | None = None,
    exclude_ids: Iterable[Any] | None = None,
) -> GateVerdict:
    """Evaluate every criterion on ``evidence``: champion when all pass, else challenger.

    ``live_days`` (optional): labelled live days on which both models scored the same patients,
    pooled with the holdout evidence first (:func:`pool_evidence`; ``exclude_ids`` are dropped
    from them), so a challenger found inconclusive can be judged again as days accrue.
    """
    if live_days is not None:
        evidence = pool_evidence(evidence, live_days, exclude_ids=exclude_ids)
    results = tuple(criterion(evidence) for criterion in criteria)
    alias = CHAMPION if all(c.outcome == PASS for c in results) else CHALLENGER
    return GateVerdict(
        version=evidence.candidate_version,
        alias=alias,
        champion_version=evidence.champion_version,
        criteria=results,
        n_unseen=evidence.n_patients,
        n_unseen_events=evidence.n_events,
        rule=evidence.rule,
        n_live_patients=evidence.n_live_patients,
        n_live_days=evidence.n_live_days,
    )


def _candidate_evidence(
    version: str,
    pipeline: Any,
    holdout_df: pd.DataFrame,
    settings: Settings,
) -> Evidence:
    """Evidence for ``version``: against the current champion on the patients neither saw."""
    from stroke_dagster.core.features import feature_frame
    from stroke_dagster.core.schema import ID, TARGET
    from stroke_dagster.model import registry

    previous = registry.resolve_alias(CHAMPION, settings=settings)
    if previous is None or previous == str(version):
        y = holdout_df[TARGET].to_numpy(dtype=int)
        p = pipeline.predict_proba(feature_frame(holdout_df))[:, 1]
        rule = "own holdout (no other champion)"
        return Evidence(y, p, None, settings.gate, str(version), None, rule)
    champion = registry.load_model(previous, settings=settings)
    split = champion.split_ids()
    if split is not None:
        unseen, rule = not_trained_on(holdout_df, split)
    else:
        unseen, rule = unseen_patients(
            holdout_df,
            champion_train_ids=None,
            champion_holdout_ids=champion.holdout_predictions()[ID],
        )
    features = feature_frame(unseen)
    p_candidate = pipeline.predict_proba(features)[:, 1] if len(unseen) else np.array([])
    p_champion = champion.predict_proba(unseen) if len(unseen) else np.array([])
    y = unseen[TARGET].to_numpy(dtype=int)
    ids = unseen[ID].astype(str).to_numpy(dtype=object)
    return Evidence(
        y, p_candidate, p_champion, settings.gate, str(version), previous, rule, ids=ids
    )


def record_verdict(verdict: GateVerdict, settings: Settings) -> None:
    """The verdict in MLflow: metrics ``gate_*`` and tags on the version's run, the whole verdict
    as ``gate/verdict.json``, and the figures as tags of the model version."""
    from stroke_dagster.core.settings import MODEL_NAME
    from stroke_dagster.model import registry

    client = registry.client(settings)
    run_id = client.get_model_version(MODEL_NAME, verdict.version).run_id
    metrics = {f"gate_{k}": v for k, v in verdict.metrics().items() if not math.isnan(v)}
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    client.set_tag(run_id, "gate_decision", verdict.alias)
    client.set_tag(run_id, "gate_outcome", verdict.outcome)
    client.set_tag(run_id, "gate_rule", verdict.rule)
    client.log_text(run_id, verdict.to_json(), "gate/verdict.json")
    for key in ("gate_candidate_auc", "gate_champion_auc", "gate_auc_difference"):
        if key in metrics:
            client.set_model_version_tag(MODEL_NAME, verdict.version, key, f"{metrics[key]:.6f}")
    client.set_model_version_tag(MODEL_NAME, verdict.version, "gate_outcome", verdict.outcome)


def gate_version(
    version: str,
    pipeline: Any,
    holdout_df: pd.DataFrame,
    settings: Settings,
    criteria: Sequence[CriterionFn] = DEFAULT_CRITERIA,
    live_days: Callable[[str], Iterable[pd.DataFrame]] | None = None,
) -> GateVerdict:
    """Judge a newly registered ``version`` against the champion; set its alias; record why.

    ``pipeline`` is the candidate (anything with ``predict_proba`` on the feature columns);
    ``holdout_df`` its labelled holdout patients (with ``id``); ``settings`` the platform's
    settings (its ``gate`` section and its MLflow store). ``live_days`` (optional) is called
    with the champion version being judged against and returns the labelled live days on which
    that champion and this version scored the same patients (see :func:`pool_evidence`); they
    are pooled with the holdout. (A function, because the champion may move and the gate then
    judges again, against the new one.)
    """

    def decide() -> GateVerdict:
        evidence = _candidate_evidence(version, pipeline, holdout_df, settings)
        days = None
        if live_days is not None and evidence.champion_version is not None:
            days = live_days(evidence.champion_version)
        return judge(evidence, criteria, live_days=days)

    verdict = move_alias(decide, settings)
    record_verdict(verdict, settings)
    return verdict


MAX_REJUDGE = 5


def move_alias(decide: Callable[[], GateVerdict], settings: Settings) -> GateVerdict:
    """Make a decision with ``decide`` and record its alias by compare-and-set: if the champion
    moved meanwhile (another gate, a recalibration, a rollback), decide again against the new
    champion, up to :data:`MAX_REJUDGE` times."""
    from stroke_dagster.model import registry

    for _ in range(MAX_REJUDGE):
        verdict = decide()
        try:
            registry.set_alias(
                verdict.version,
                verdict.alias,
                verdict.reason,
                settings=settings,
                expected_champion=verdict.champion_version,
            )
            return verdict
        except registry.ChampionChangedError as exc:
            log.warning("v%s: %s", verdict.version, exc)
    raise RuntimeError(f"the champion kept moving: no decision after {MAX_REJUDGE} attempts")
