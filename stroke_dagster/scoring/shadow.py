"""Silent (shadow) scoring: versions that score every live day beside the champion, unseen.

A challenger that is registered and then forgotten never meets a live patient; the silent-trial
literature (DECIDE-AI) shows why that matters: models that looked good retrospectively lose
much of their discrimination when first deployed. So the versions *in shadow*

* the latest challenger (alias ``challenger``; ``scoring.shadow_challenger``, on by default),
* and the version with the alias ``shadow`` (set by hand: ``stroke alias``-style MLflow call),

never the champion, score each live day's validated cohort into their own slices of
``score_history`` (``role = 'shadow'``): never current, never shown in ``scores``, never alerting.

When the day's labels arrive, :func:`compare_day` pairs each shadow version with the champion on
the same labelled patients (AUC difference with DeLong's 95% CI, observed:expected, net benefit at
the champion's tier thresholds) into ``shadow_comparison``. Pooled over the labelled days (a
patient counted once, on its first labelled day: :func:`live_days`), the pairs are live evidence
for the gate: :func:`rejudge` judges an inconclusive challenger again on them, with the gate's
non-inferiority criteria, and promotes it when the evidence has become sufficient.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stroke_dagster.core.errors import InputError, RegistryUnavailableError
from stroke_dagster.core.schema import ID, TARGET
from stroke_dagster.io.labels import day_labels, labelled_days, labels_file

if TYPE_CHECKING:
    from stroke_dagster.core.settings import Settings
    from stroke_dagster.model.gate import GateVerdict
    from stroke_dagster.scoring.batch import CohortSummary, ScoreSummary

log = logging.getLogger(__name__)

SHADOW_ALIAS = "shadow"
CHALLENGER_ALIAS = "challenger"
TABLE = "shadow_comparison"


def shadow_versions(settings: Settings) -> list[str]:
    """The versions in shadow now (ascending), the champion excluded."""
    from stroke_dagster.model import registry

    champion = registry.resolve_alias(registry.CHAMPION, settings=settings)
    aliases = [SHADOW_ALIAS]
    if settings.scoring.shadow_challenger:
        aliases.insert(0, CHALLENGER_ALIAS)
    found = {registry.resolve_alias(alias, settings=settings) for alias in aliases}
    return sorted((v for v in found if v is not None and v != champion), key=int)


@dataclass
class ShadowRun:
    """What one day's shadow scoring did: a summary per version scored, an error per failed one."""

    day: str
    scored: dict[str, ScoreSummary] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    # every failure is of the version itself (unloadable, unusable thresholds): a retry would
    # fail the same way; storage or the registry away (OSError, RegistryUnavailableError) is not
    permanent: bool = True


def score_day(settings: Settings, cohort: CohortSummary, *, run_id: str | None = None) -> ShadowRun:
    """Score ``cohort`` (a validated day) with every version in shadow, each as its own slice.

    One version failing does not stop the others; its error is returned (the caller decides
    whether the run fails). The champion's scoring of the day is never touched.
    """
    from stroke_dagster.model import registry
    from stroke_dagster.scoring import batch as scoring
    from stroke_dagster.warehouse import store as warehouse

    result = ShadowRun(cohort.cohort_date)
    for version in shadow_versions(settings):
        provenance = warehouse.Provenance(
            run_id=run_id,
            input_file=cohort.source_file if cohort.source_sha256 else cohort.path,
            input_sha256=cohort.source_sha256,
        )
        try:
            model = registry.load_model(version, settings=settings)
            with settings.files.local_copy(cohort.path) as cohort_file:
                result.scored[version] = scoring.score_file(
                    cohort_file,
                    model,
                    cohort_date=cohort.cohort_date,
                    quarantine_source=None,
                    provenance=provenance,
                    role=warehouse.SHADOW_ROLE,
                    settings=settings,
                )
        except (InputError, OSError, RuntimeError, ValueError) as exc:
            log.warning("shadow v%s could not score %s: %s", version, cohort.cohort_date, exc)
            result.failed[version] = f"{type(exc).__name__}: {exc}"
            result.permanent &= not isinstance(exc, OSError | RegistryUnavailableError)
    return result


# -- pairing with labels ---------------------------------------------------------------------


def paired_scores(settings: Settings, day: str) -> pd.DataFrame:
    """The day's labelled patients scored by the champion and by a shadow version, paired.

    Columns ``patient_id, y, p_champion, p_shadow, champion_version, shadow_version``; one row
    per patient and shadow version. A shadow slice pairs with the champion's current slice when
    it scored the same input file (same ``input_sha256``). Empty without labels or shadow slices.
    """
    from stroke_dagster.warehouse import store as warehouse

    labels = day_labels(day, settings)
    columns = ["patient_id", "y", "p_champion", "p_shadow", "champion_version", "shadow_version"]
    if labels is None:
        return pd.DataFrame(columns=columns)
    pairs = warehouse.query_df(
        """
        SELECT c.patient_id, c.stroke_probability AS p_champion,
               s.stroke_probability AS p_shadow, c.model_version AS champion_version,
               s.model_version AS shadow_version
        FROM score_history AS c
        JOIN score_history AS s
          ON s.cohort_date = c.cohort_date AND s.patient_id = c.patient_id
         AND s.role = 'shadow' AND s.model_version <> c.model_version
         AND s.input_sha256 IS NOT DISTINCT FROM c.input_sha256
        WHERE c.cohort_date = ? AND c.is_current
        """,
        [dt.date.fromisoformat(day)],
        settings=settings,
    )
    joined = pairs.merge(labels, left_on="patient_id", right_on=ID)
    joined["y"] = joined[TARGET].astype(int)
    return joined[columns].reset_index(drop=True)


def _net_benefit(y: np.ndarray, p: np.ndarray, t: float) -> float:
    from stroke_dagster.clinical.decision_curve import net_benefit

    return float(net_benefit(y, p >= t, t)) if 0.0 < t < 1.0 else float("nan")


def _oe(y: np.ndarray, p: np.ndarray) -> float | None:
    expected = float(np.sum(p))
    return float(np.sum(y)) / expected if expected > 0 and np.sum(y) > 0 else None


def compare(
    y: np.ndarray, p_shadow: np.ndarray, p_champion: np.ndarray, thresholds: Any
) -> dict[str, Any]:
    """The paired figures of one shadow version against the champion on the same patients."""
    from stroke_dagster.clinical.stats import paired_auc_difference

    y = np.asarray(y, dtype=int)
    p_shadow, p_champion = np.asarray(p_shadow, float), np.asarray(p_champion, float)
    row: dict[str, Any] = {"n_patients": len(y), "n_events": int(y.sum())}
    aucs: tuple[float | None, ...]
    try:
        aucs = paired_auc_difference(y, p_shadow, p_champion)
    except ValueError:  # fewer than two patients of a class
        aucs = (None,) * 5
    auc_s, auc_c, diff, low, high = aucs
    row.update(
        shadow_auc=auc_s,
        champion_auc=auc_c,
        auc_difference=diff,
        auc_difference_low=low,
        auc_difference_high=high,
        shadow_oe=_oe(y, p_shadow),
        champion_oe=_oe(y, p_champion),
        threshold_elevated=float(thresholds.elevated),
        threshold_high=float(thresholds.high),
    )
    for tier in ("elevated", "high"):
        t = float(getattr(thresholds, tier))
        row[f"shadow_net_benefit_{tier}"] = _net_benefit(y, p_shadow, t) if len(y) else None
        row[f"champion_net_benefit_{tier}"] = _net_benefit(y, p_champion, t) if len(y) else None
    return row


def compare_day(settings: Settings, day: str) -> pd.DataFrame | None:
    """Write the day's ``shadow_comparison`` rows (one per shadow version); ``None`` when the
    day has no labels yet. A day with labels but no shadow slice writes no rows."""
    from stroke_dagster.model import registry
    from stroke_dagster.warehouse import store as warehouse

    if labels_file(day, settings) is None:
        return None
    pairs = paired_scores(settings, day)
    rows = []
    for (shadow, champion), group in pairs.groupby(["shadow_version", "champion_version"]):
        thresholds = registry.load_model(str(champion), settings=settings).thresholds
        row = compare(
            group["y"].to_numpy(),
            group["p_shadow"].to_numpy(),
            group["p_champion"].to_numpy(),
            thresholds,
        )
        rows.append({"shadow_version": str(shadow), "champion_version": str(champion), **row})
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    frame["computed_at"] = dt.datetime.now(dt.UTC)
    warehouse.replace_partition(TABLE, day, frame, settings=settings)
    return frame


_COLUMNS = [
    "shadow_version",
    "champion_version",
    "n_patients",
    "n_events",
    "shadow_auc",
    "champion_auc",
    "auc_difference",
    "auc_difference_low",
    "auc_difference_high",
    "shadow_oe",
    "champion_oe",
    "threshold_elevated",
    "threshold_high",
    "shadow_net_benefit_elevated",
    "champion_net_benefit_elevated",
    "shadow_net_benefit_high",
    "champion_net_benefit_high",
]


# -- pooled evidence and the gate ----------------------------------------------------------------


def live_days(settings: Settings, version: str, champion: str) -> list[pd.DataFrame]:
    """Every labelled day on which ``version`` (in shadow) and ``champion`` (current) scored the
    same patients, as the gate's live frames (``y, p_champion, p_candidate, id``), oldest first.

    ``id`` is the patient key (:data:`stroke_dagster.core.schema.PATIENT_KEY` when the site sets
    one), so :func:`stroke_dagster.model.gate.pool_evidence` counts a recurring patient once.
    """
    days = []
    for day in labelled_days(settings):
        pairs = paired_scores(settings, day)
        pairs = pairs[
            (pairs["shadow_version"].astype(str) == str(version))
            & (pairs["champion_version"].astype(str) == str(champion))
        ]
        if pairs.empty:
            continue
        ids = _patient_keys(settings, day, pairs["patient_id"])
        days.append(
            pd.DataFrame(
                {
                    "y": pairs["y"].to_numpy(int),
                    "p_champion": pairs["p_champion"].to_numpy(float),
                    "p_candidate": pairs["p_shadow"].to_numpy(float),
                    "id": ids,
                }
            )
        )
    return days


def _patient_keys(settings: Settings, day: str, patient_ids: pd.Series) -> np.ndarray:
    """The patient key of each scored row id of ``day`` (the id itself by default)."""
    column = settings.scoring.patient_key_column
    ids = patient_ids.astype(str).to_numpy(object)
    if column == ID:
        return ids
    from stroke_dagster.scoring import batch as scoring

    try:
        cohort = scoring.read_cohort(settings, scoring.current_cohort(settings, day))
    except InputError:
        return ids
    if column not in cohort.columns:
        return ids
    keys = dict(zip(cohort[ID].astype(str), cohort[column].astype(str), strict=True))
    return np.asarray([keys.get(i, i) for i in ids], dtype=object)


def pooled(settings: Settings, version: str, champion: str) -> dict[str, Any]:
    """The figures of ``version`` against ``champion`` over every labelled live day (pooled)."""
    from stroke_dagster.model import registry

    days = live_days(settings, version, champion)
    if not days:
        return {"n_days": 0, "n_patients": 0, "n_events": 0}
    live = pd.concat(days, ignore_index=True).drop_duplicates(subset=["id"], keep="first")
    thresholds = registry.load_model(champion, settings=settings).thresholds
    figures = compare(
        live["y"].to_numpy(),
        live["p_candidate"].to_numpy(),
        live["p_champion"].to_numpy(),
        thresholds,
    )
    return {"n_days": len(days), **figures}


def rejudge(settings: Settings, version: str) -> GateVerdict | None:
    """Judge an inconclusive challenger again on its pooled live pairs with the champion.

    Only a version whose last gate outcome was ``inconclusive`` is judged again (one refused on
    its holdout stays refused; it still scores in shadow so its live figures are known). The
    evidence is the live days alone: prospective, on this site's patients, paired with the
    champion that was shown. The gate's non-inferiority criteria decide; on ``promote`` the
    champion alias moves by compare-and-set (:func:`stroke_dagster.model.gate.move_alias`), and the
    verdict is recorded on the version. ``None`` when the version is not judged.
    """
    from stroke_dagster.core.settings import MODEL_NAME
    from stroke_dagster.model import gate, registry

    client = registry.client(settings)
    tags = client.get_model_version(MODEL_NAME, str(version)).tags or {}
    if tags.get("gate_outcome") != gate.INCONCLUSIVE:
        return None
    if registry.resolve_alias(CHALLENGER_ALIAS, settings=settings) != str(version):
        return None

    def days_against(champion: str) -> list[pd.DataFrame]:
        """The live days against ``champion``, read once per champion (a re-decision after the
        champion moved reads them again, against the new one)."""
        if champion not in read:
            read[champion] = live_days(settings, version, champion)
        return read[champion]

    def decide() -> GateVerdict:
        champion = registry.resolve_alias(registry.CHAMPION, settings=settings)
        if champion is None:
            raise InputError("no champion to compare the challenger with")
        empty = np.array([], dtype=float)
        evidence = gate.Evidence(
            np.array([], dtype=int),
            empty,
            empty,
            settings.gate,
            str(version),
            champion,
            rule="labelled live days in shadow",
            ids=np.array([], dtype=object),
        )
        return gate.judge(evidence, live_days=days_against(champion))

    read: dict[str, list[pd.DataFrame]] = {}
    champion = registry.resolve_alias(registry.CHAMPION, settings=settings)
    if champion is None or not days_against(champion):
        return None
    verdict = gate.move_alias(decide, settings)
    gate.record_verdict(verdict, settings)
    return verdict
