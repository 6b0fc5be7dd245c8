"""A generated model card per version, structured on the TRIPOD+AI items that apply.

:func:`render_model_card` turns a :class:`CardInputs` (facts about the version) and its holdout
:class:`~stroke_dagster.evidence.Evidence` into Markdown. Nothing in a card is written by hand per
version; the fixed text (intended use, outcome definition, limitations) lives here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from stroke_dagster.evidence import DECISION_PNG, RELIABILITY_PNG, Evidence
from stroke_dagster.risk import RiskThresholds
from stroke_dagster.schema import CATEGORICAL_FIELDS, FEATURES, FIELDS_BY_NAME
from stroke_dagster.subgroups import to_markdown

CARD_ARTIFACT = "model_card.md"
KAGGLE_ROWS = 5110


@dataclass
class CardInputs:
    """What the card states about one version besides its holdout evidence."""

    model_name: str
    version: str
    thresholds: RiskThresholds
    data_source: str = "unknown"
    n_train: int | None = None
    n_holdout: int | None = None
    train_prevalence: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    cv_roc_auc: float | None = None
    gate_reason: str | None = None
    alias: str | None = None
    recalibration: dict[str, Any] | None = None
    drift_reference_rows: int | None = None
    evaluated_on: str = "holdout"
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _predictors() -> list[str]:
    lines = []
    for name in FEATURES:
        f = FIELDS_BY_NAME[name]
        if f in CATEGORICAL_FIELDS:
            detail = "categorical: " + ", ".join(f.categories)  # type: ignore[union-attr]
        else:
            detail = getattr(f, "description", "") or "numeric"
        lines.append(f"- `{name}` - {detail}")
    return lines


def render_model_card(card: CardInputs, evidence: Evidence | None) -> str:
    """The version's model card (Markdown)."""
    t = card.thresholds
    out: list[str] = [
        f"# Model card: {card.model_name} version {card.version}",
        "",
        f"Generated {card.created} from the registry and the version's {card.evaluated_on} "
        "predictions. Sections follow the TRIPOD+AI items that apply to a deployed risk model.",
        "",
        "## 1. Intended use and users (TRIPOD+AI 3, 5)",
        "- Purpose: estimate a patient's probability of stroke from routinely recorded "
        "demographics and comorbidities, and sort patients into `low`, `elevated` and "
        "`high` risk tiers for preventive follow-up.",
        "- Users: care teams and population-health staff prioritising outreach (blood pressure, "
        "glucose and lifestyle review). Not for diagnosing an acute stroke, not for emergency "
        "triage, not a substitute for clinical judgement.",
        f"- Tiers: `elevated` when the probability is >= {t.elevated:.4f}, `high` when >= "
        f"{t.high:.4f}.",
        "",
        "## 2. Source data and population (TRIPOD+AI 6, 20)",
        f"- Training source: `{card.data_source}`.",
        f"- Patients: {card.n_train if card.n_train is not None else 'n/a'} for training, "
        f"{card.n_holdout if card.n_holdout is not None else 'n/a'} held out (fixed per patient "
        f"by a hash of the id); stroke rate {_pct(card.train_prevalence)}.",
        "- The public Kaggle *Stroke Prediction Dataset* (5,110 patients, about 4.9 % strokes) "
        "is the only real data the forest has seen; its collection site, period and selection "
        "are undocumented.",
        "",
        "## 3. Outcome (TRIPOD+AI 7)",
        "- `stroke` (1 = stroke recorded, 0 = not), as recorded in the source data; the source "
        "defines no time horizon, so the probability is not an n-year risk.",
        "",
        "## 4. Predictors (TRIPOD+AI 8)",
        *_predictors(),
        "",
        "## 5. Missing data (TRIPOD+AI 9)",
        "- Rows failing the patient schema (missing required value, out of range, unknown "
        "category, duplicate id) are quarantined with their reason, never scored or trained on.",
        '- `bmi` may be missing: it is median-imputed and a 0/1 "bmi was missing" indicator is '
        "added (missingness is informative in the source data).",
        "",
        "## 6. Model and tuning (TRIPOD+AI 10, 12)",
        "- scikit-learn pipeline: median imputation + scaling of numeric and 0/1 columns, one-hot "
        "encoding of categories, random forest.",
    ]
    if card.params:
        params = ", ".join(f"{k}={v}" for k, v in sorted(card.params.items()))
        out.append(f"- Hyper-parameters: {params}.")
    out.append(
        "- Tuned by Optuna on stratified cross-validation ROC AUC, a trial counting only when its "
        "Brier score is no worse than the no-skill Brier score."
        + (f" Cross-validated ROC AUC {card.cv_roc_auc:.3f}." if card.cv_roc_auc else "")
    )
    if card.recalibration:
        r = card.recalibration
        out.append(
            f"- Site recalibration ({r.get('method')}): the forest is unchanged; probabilities are "
            f"mapped by logit(q) = {float(r.get('intercept', 0)):.4f} + "
            f"{float(r.get('slope', 1)):.4f} x logit(p), fit on {r.get('n_fit')} labelled site "
            f"patients ({r.get('n_fit_events')} strokes) of days {r.get('days', 'n/a')}."
        )
    out += ["", f"## 7. Discrimination on the {card.evaluated_on} (TRIPOD+AI 12e, 23a)"]
    if evidence is None:
        out.append("- No holdout evidence recorded for this version.")
    else:
        c = evidence.calibration
        ci = evidence.roc_auc_ci
        out += [
            f"- {evidence.n} patients, {evidence.n_events} strokes.",
            f"- ROC AUC {_num(evidence.roc_auc)}"
            + (f" (95 % DeLong CI {ci[0]:.3f}-{ci[1]:.3f})." if ci else "."),
            "",
            f"## 8. Calibration on the {card.evaluated_on} (TRIPOD+AI 12e, 23a)",
            f"- Observed stroke rate {_pct(c.observed_rate, 2)}; mean predicted "
            f"{_pct(c.mean_predicted, 2)}; observed/expected {_num(c.oe_ratio, 2)}.",
            f"- Calibration intercept {_num(c.calibration_intercept)} (0 is ideal), slope "
            f"{_num(c.calibration_slope)} (1 is ideal).",
            f"- Expected calibration error {_num(c.ece, 4)}; Brier {_num(c.brier, 4)}; log loss "
            f"{_num(c.log_loss, 4)}.",
            f"- Reliability diagram: MLflow artifact `{RELIABILITY_PNG}`.",
            "",
            "## 9. Subgroups (TRIPOD+AI 12f, 23b)",
        ]
        if evidence.subgroups is None:
            out.append("- Patient features were not available; no subgroup table.")
        else:
            out += [
                "Groups with fewer than 10 strokes or 10 non-strokes are listed as too small.",
                "",
                to_markdown(evidence.subgroups),
                "",
            ]
            out += [f"- Warning: {w}" for w in evidence.warnings] or ["- No subgroup warnings."]
        d = evidence.decision
        nb = d.tier_net_benefit
        out += [
            "",
            "## 10. Decision curve (TRIPOD+AI 12g, 23c)",
            f"- Acting on the model beats treating everyone and treating no one at threshold "
            f"probabilities {d.describe_ranges()} (grid 1 %-30 %).",
        ]
        if nb:
            out.append(
                f"- Net benefit of acting on `elevated`+ at its threshold: "
                f"{nb.get('elevated', float('nan')):.4f}; on `high`: "
                f"{nb.get('high', float('nan')):.4f} (per patient, in true-positive units)."
            )
        out.append(f"- Plot: MLflow artifact `{DECISION_PNG}`.")
    out += [
        "",
        "## 11. Drift reference",
        "- Daily cohorts are compared with this version's training split "
        f"(`reference/train.parquet`, {card.drift_reference_rows or 'n/a'} rows) by the drift "
        "detectors fitted for the version.",
        "",
        "## 12. Registry decision",
        f"- Alias: {card.alias or 'none'}. Reason: {card.gate_reason or 'not gated yet'}.",
        "",
        "## 13. Limitations (TRIPOD+AI 27)",
        f"- Trained on one public dataset of {KAGGLE_ROWS:,} patients of undocumented provenance; "
        "no external validation is part of this card.",
        "- Outside the source data, models of this kind keep their ranking but over-predict "
        "(about threefold at a site with a 1.4 % stroke rate): recalibrate on site patients "
        "(`stroke recalibrate`) before acting on absolute risks.",
        "- Few strokes occur under 45; figures for young patients and small groups are unstable "
        "or marked too small.",
        "- The outcome has no time horizon and no adjudication; predictors are self-reported or "
        "routinely recorded and may be measured differently elsewhere.",
        "",
    ]
    return "\n".join(out)
