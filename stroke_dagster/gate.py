"""The champion gate: may a new version replace the champion?

Fairness. Each version's holdout is fixed per patient (:func:`stroke_dagster.features.is_holdout`,
a hash of the id), and the ids it trained on and was held out on are stored with it. Champion and
candidate are compared only on the candidate's holdout patients that the champion did not train
on (:func:`unseen_patients`): neither model has seen them. For a champion stored without its
training ids (older versions) the shared set is the intersection of both holdouts.

Decision. :func:`judge` evaluates an ordered tuple of criteria on the same patients; the new
version becomes ``champion`` only when every criterion passes, else ``challenger``. The default
criteria are :func:`auc_floor_criterion` (candidate ROC AUC above the floor) and
:func:`auc_tolerance_criterion` (candidate ROC AUC >= champion's - tolerance, the point
estimate; the paired DeLong 95 % CI of the difference is recorded with it) and
:func:`calibration_criterion` (not clearly worse calibrated: paired 95 % CIs of the per-patient
log-loss and Brier differences). A site recalibration is judged by :data:`RECALIBRATION_CRITERIA`,
which also asks for :func:`calibration_gain_criterion` (clearly better calibrated).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.settings import GateSettings, Settings

log = logging.getLogger(__name__)

Z_95 = 1.959963984540054
# Fewer unseen events than this and the two AUCs are not compared (the CI would be meaningless).
MIN_UNSEEN_EVENTS = 5
CANDIDATE_MINUS_CHAMPION_TRAIN = "candidate holdout minus champion training ids"
HOLDOUT_INTERSECTION = "intersection of both holdouts"
CHAMPION = "champion"
CHALLENGER = "challenger"


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


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """AUCs and DeLong structural components of ``scores`` (models x patients)."""
    from scipy.stats import rankdata

    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    aucs, v10, v01 = [], [], []
    for k in range(scores.shape[0]):
        tx, ty = rankdata(pos[k]), rankdata(neg[k])
        tz = rankdata(np.concatenate([pos[k], neg[k]]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    return np.array(aucs), np.array(v10), np.array(v01)


def paired_auc_difference(
    y: np.ndarray, p_candidate: np.ndarray, p_champion: np.ndarray
) -> tuple[float, float, float, float, float]:
    """``(candidate AUC, champion AUC, difference, CI low, CI high)``: DeLong's paired test.

    The 95 % CI of candidate - champion ROC AUC on the same patients (DeLong, DeLong &
    Clarke-Pearson 1988, in the fast form of Sun & Xu 2014).
    """
    y = np.asarray(y, dtype=int)
    scores = np.vstack([np.asarray(p_candidate, float), np.asarray(p_champion, float)])
    m, n = int(y.sum()), int((1 - y).sum())
    if m < 2 or n < 2:
        raise ValueError("the paired AUC difference needs at least two patients of each class")
    aucs, v10, v01 = _delong_components(y, scores)
    cov = np.cov(v10) / m + np.cov(v01) / n
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    half = Z_95 * math.sqrt(max(variance, 0.0))
    return float(aucs[0]), float(aucs[1]), diff, diff - half, diff + half


@dataclass(frozen=True)
class Evidence:
    """What the criteria judge: both models' probabilities on the same unseen patients."""

    y: np.ndarray = field(repr=False)
    p_candidate: np.ndarray = field(repr=False)
    p_champion: np.ndarray | None = field(repr=False)  # None: there is no other champion
    settings: GateSettings
    candidate_version: str
    champion_version: str | None
    rule: str = CANDIDATE_MINUS_CHAMPION_TRAIN

    @property
    def n_patients(self) -> int:
        return len(self.y)

    @property
    def n_events(self) -> int:
        return int(np.sum(self.y))


@dataclass(frozen=True)
class Criterion:
    """One criterion's outcome: its name, whether it passed, why, and its figures."""

    name: str
    passed: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


CriterionFn = Callable[[Evidence], Criterion]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < int(np.sum(y)) < len(y) else float("nan")


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


def auc_tolerance_criterion(evidence: Evidence) -> Criterion:
    """Candidate ROC AUC >= champion's - ``settings.tolerance`` on the same unseen patients."""
    tol = evidence.settings.tolerance
    if evidence.p_champion is None:
        return Criterion("auc_vs_champion", True, "no other champion to compare with")
    champion = f"champion v{evidence.champion_version}"
    if evidence.n_events < MIN_UNSEEN_EVENTS or evidence.n_patients - evidence.n_events < 2:
        return Criterion(
            "auc_vs_champion",
            False,
            f"only {evidence.n_patients} patients ({evidence.n_events} events) unseen by both "
            f"it and {champion}: too few to compare (need {MIN_UNSEEN_EVENTS} events)",
            {"n_unseen": float(evidence.n_patients), "n_unseen_events": float(evidence.n_events)},
        )
    cand, champ, diff, low, high = paired_auc_difference(
        evidence.y, evidence.p_candidate, evidence.p_champion
    )
    passed = diff >= -tol
    relation = "within" if passed else "beyond"
    reason = (
        f"ROC AUC {cand:.4f} vs {champion}'s {champ:.4f} on {evidence.n_patients} patients "
        f"neither trained on ({evidence.n_events} events): difference {diff:+.4f} "
        f"(95% CI {low:+.4f}..{high:+.4f}) {relation} tolerance {tol:.4f}"
    )
    return Criterion(
        "auc_vs_champion",
        passed,
        reason,
        {
            "candidate_auc": cand,
            "champion_auc": champ,
            "auc_difference": diff,
            "auc_difference_ci_low": low,
            "auc_difference_ci_high": high,
            "tolerance": tol,
        },
    )


def _calibration(evidence: Evidence) -> Any:
    from stroke_dagster.recalibration import calibration_verdict

    return calibration_verdict(
        evidence.y, evidence.p_champion, evidence.p_candidate, evidence.settings.tolerance
    )


def _calibration_figures(verdict: Any) -> dict[str, float]:
    return {
        "candidate_log_loss": verdict.candidate["log_loss"],
        "champion_log_loss": verdict.champion["log_loss"],
        "log_loss_difference_ci_low": verdict.log_loss_diff_ci[0],
        "log_loss_difference_ci_high": verdict.log_loss_diff_ci[1],
        "candidate_brier": verdict.candidate["brier"],
        "champion_brier": verdict.champion["brier"],
        "brier_difference_ci_low": verdict.brier_diff_ci[0],
        "brier_difference_ci_high": verdict.brier_diff_ci[1],
    }


def calibration_criterion(evidence: Evidence) -> Criterion:
    """Not clearly worse calibrated than the champion on the same unseen patients: fails when
    the paired 95 % CIs of the per-patient log-loss AND Brier differences both lie above zero."""
    if evidence.p_champion is None or evidence.n_patients < 2:
        return Criterion("calibration_vs_champion", True, "no other champion to compare with")
    verdict = _calibration(evidence)
    worse = verdict.log_loss_diff_ci[0] > 0 and verdict.brier_diff_ci[0] > 0
    c, k = verdict.candidate, verdict.champion
    reason = (
        f"log loss {c['log_loss']:.5f} vs champion v{evidence.champion_version}'s "
        f"{k['log_loss']:.5f}, Brier {c['brier']:.5f} vs {k['brier']:.5f}: "
        + ("clearly worse calibrated" if worse else "not clearly worse calibrated")
    )
    return Criterion("calibration_vs_champion", not worse, reason, _calibration_figures(verdict))


def calibration_gain_criterion(evidence: Evidence) -> Criterion:
    """Clearly better calibrated than the champion (what a recalibration must show): the paired
    95 % CI of the per-patient log-loss or Brier difference lies entirely below zero."""
    if evidence.p_champion is None or evidence.n_patients < 2:
        return Criterion("calibration_gain", True, "no other champion to compare with")
    verdict = _calibration(evidence)
    better = verdict.log_loss_diff_ci[1] < 0 or verdict.brier_diff_ci[1] < 0
    ll, br = verdict.log_loss_diff_ci, verdict.brier_diff_ci
    reason = (
        ("clearly better" if better else "not clearly better")
        + f" calibrated than champion v{evidence.champion_version}: log loss "
        f"{verdict.candidate['log_loss']:.5f} vs {verdict.champion['log_loss']:.5f} (95% CI of "
        f"difference {ll[0]:+.5f}..{ll[1]:+.5f}), Brier {verdict.candidate['brier']:.5f} vs "
        f"{verdict.champion['brier']:.5f} ({br[0]:+.6f}..{br[1]:+.6f}) on {evidence.n_patients} "
        f"patients ({evidence.n_events} events)"
    )
    return Criterion("calibration_gain", better, reason, _calibration_figures(verdict))


DEFAULT_CRITERIA: tuple[CriterionFn, ...] = (
    auc_floor_criterion,
    auc_tolerance_criterion,
    calibration_criterion,
)
# A recalibration keeps the ranking; it must earn its place by calibration.
RECALIBRATION_CRITERIA: tuple[CriterionFn, ...] = (*DEFAULT_CRITERIA, calibration_gain_criterion)


@dataclass(frozen=True)
class GateVerdict:
    """Which alias the new version gets, and the evidence for it."""

    version: str
    alias: str
    champion_version: str | None  # the champion it was compared with (None: there was none)
    criteria: tuple[Criterion, ...]
    n_unseen: int
    n_unseen_events: int
    rule: str

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {'pass' if c.passed else 'FAIL'}: {c.reason}" for c in self.criteria]

    @property
    def reason(self) -> str:
        """One line: the first failed criterion's reason, or every reason when promoted."""
        failed = [c.reason for c in self.criteria if not c.passed]
        # each phrase once: criteria that pass for the same reason ("no other champion") say it once
        return failed[0] if failed else "; ".join(dict.fromkeys(c.reason for c in self.criteria))

    def metrics(self) -> dict[str, float]:
        """Every criterion's figures plus the shared set's size (for MLflow and metadata)."""
        out: dict[str, float] = {
            "n_unseen": float(self.n_unseen),
            "n_unseen_events": float(self.n_unseen_events),
        }
        for criterion in self.criteria:
            out.update(criterion.metrics)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update({"promoted": self.promoted, "reason": self.reason, "metrics": self.metrics()})
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


def judge(evidence: Evidence, criteria: Sequence[CriterionFn] = DEFAULT_CRITERIA) -> GateVerdict:
    """Evaluate every criterion on ``evidence``: champion when all pass, else challenger."""
    results = tuple(criterion(evidence) for criterion in criteria)
    alias = CHAMPION if all(c.passed for c in results) else CHALLENGER
    return GateVerdict(
        version=evidence.candidate_version,
        alias=alias,
        champion_version=evidence.champion_version,
        criteria=results,
        n_unseen=evidence.n_patients,
        n_unseen_events=evidence.n_events,
        rule=evidence.rule,
    )


def _candidate_evidence(
    version: str,
    pipeline: Any,
    holdout_df: pd.DataFrame,
    settings: Settings,
) -> Evidence:
    """Evidence for ``version``: against the current champion on the patients neither saw."""
    from stroke_dagster import registry
    from stroke_dagster.features import feature_frame
    from stroke_dagster.schema import ID, TARGET

    previous = registry.resolve_alias(CHAMPION, settings=settings)
    if previous is None or previous == str(version):
        y = holdout_df[TARGET].to_numpy(dtype=int)
        p = pipeline.predict_proba(feature_frame(holdout_df))[:, 1]
        rule = "own holdout (no other champion)"
        return Evidence(y, p, None, settings.gate, str(version), None, rule)
    champion = registry.load_model(previous, settings=settings)
    split = champion.split_ids()
    if split is not None:
        unseen, rule = unseen_patients(
            holdout_df, champion_train_ids=split.loc[split["split"] == "train", ID]
        )
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
    return Evidence(y, p_candidate, p_champion, settings.gate, str(version), previous, rule)


def record_verdict(verdict: GateVerdict, settings: Settings) -> None:
    """The verdict in MLflow: metrics ``gate_*`` and tags on the version's run, the whole verdict
    as ``gate/verdict.json``, and the figures as tags of the model version."""
    from stroke_dagster import registry
    from stroke_dagster.settings import MODEL_NAME

    client = registry.client(settings)
    run_id = client.get_model_version(MODEL_NAME, verdict.version).run_id
    metrics = {f"gate_{k}": v for k, v in verdict.metrics().items() if not math.isnan(v)}
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    client.set_tag(run_id, "gate_decision", verdict.alias)
    client.set_tag(run_id, "gate_rule", verdict.rule)
    client.log_text(run_id, verdict.to_json(), "gate/verdict.json")
    for key in ("gate_candidate_auc", "gate_champion_auc", "gate_auc_difference"):
        if key in metrics:
            client.set_model_version_tag(MODEL_NAME, verdict.version, key, f"{metrics[key]:.6f}")


def gate_version(
    version: str,
    pipeline: Any,
    holdout_df: pd.DataFrame,
    settings: Settings,
    criteria: Sequence[CriterionFn] = DEFAULT_CRITERIA,
) -> GateVerdict:
    """Judge a newly registered ``version`` against the champion; set its alias; record why.

    ``pipeline`` is the candidate (anything with ``predict_proba`` on the feature columns);
    ``holdout_df`` its labelled holdout patients (with ``id``); ``settings`` the platform's
    settings (its ``gate`` section and its MLflow store).
    """

    def decide() -> GateVerdict:
        return judge(_candidate_evidence(version, pipeline, holdout_df, settings), criteria)

    verdict = move_alias(decide, settings)
    record_verdict(verdict, settings)
    return verdict


MAX_REJUDGE = 5


def move_alias(decide: Callable[[], GateVerdict], settings: Settings) -> GateVerdict:
    """Make a decision with ``decide`` and record its alias by compare-and-set: if the champion
    moved meanwhile (another gate, a recalibration, a rollback), decide again against the new
    champion, up to :data:`MAX_REJUDGE` times."""
    from stroke_dagster import registry

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
