"""A generated model card per version, structured on the TRIPOD+AI items that apply.

:func:`render_model_card` turns a :class:`CardInputs` (facts about the version) and its holdout
:class:`~stroke_dagster.clinical.evidence.Evidence` into Markdown. Nothing in a card is written by
hand per
version; the fixed text (intended use, outcome definition, limitations) lives here.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from stroke_dagster.clinical.evidence import DECISION_PNG, RELIABILITY_PNG, Evidence
from stroke_dagster.clinical.subgroups import to_markdown
from stroke_dagster.core.risk import RiskThresholds
from stroke_dagster.core.schema import FEATURES, FIELDS_BY_NAME, CategoricalField

CARD_ARTIFACT = "model_card.md"
KAGGLE_ROWS = 5110
PURPOSE = (
    "estimate a patient's probability of stroke from routinely recorded demographics and "
    "comorbidities, and sort patients into `low`, `elevated` and `high` risk tiers for "
    "preventive follow-up."
)
USERS = (
    "care teams and population-health staff prioritising outreach (blood pressure, glucose and "
    "lifestyle review). Not for diagnosing an acute stroke, not for emergency triage, not a "
    "substitute for clinical judgement."
)
LIMITATIONS = (
    f"Trained on one public dataset of {KAGGLE_ROWS:,} patients of undocumented provenance; "
    "no external validation is part of this card.",
    "Outside the source data, models of this kind keep their ranking but over-predict (about "
    "threefold at a site with a 1.4 % stroke rate): recalibrate on site patients (`stroke "
    "recalibrate`) before acting on absolute risks.",
    "Few strokes occur under 45; figures for young patients and small groups are unstable or "
    "marked too small.",
    "The outcome has no time horizon and no adjudication; predictors are self-reported or "
    "routinely recorded and may be measured differently elsewhere.",
)


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
    change_control: dict[str, Any] | None = None  # the version's change_control.json
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
        if isinstance(f, CategoricalField):
            detail = "categorical: " + ", ".join(f.categories)
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
        f"- Purpose: {PURPOSE}",
        f"- Users: {USERS}",
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
        *change_control_lines(card.change_control),
        "## 14. Limitations (TRIPOD+AI 27)",
        *[f"- {line}" for line in LIMITATIONS],
        "",
    ]
    return "\n".join(out)


def _fig(value: Any, digits: int = 4) -> str:
    return (
        "n/a"
        if value is None
        else f"{value:.{digits}f}"
        if isinstance(value, float)
        else str(value)
    )


def _change(count: dict[str, Any] | None) -> str:
    count = count or {}
    return f"{count.get('previous', 'n/a')} -> {count.get('new', 'n/a')}"


def change_control_lines(record: dict[str, Any] | None) -> list[str]:
    """Section 13: the version's change-control record (why, what changed, acceptance, rollback)."""
    out = ["## 13. Change control (`change_control.json`)"]
    if not record:
        return [*out, "- No change-control record for this version (made before records).", ""]
    why, changed = record.get("why") or {}, record.get("what_changed") or {}
    data, code = changed.get("data") or {}, changed.get("code") or {}
    train = data.get("training") or {}
    out.append(f"- Why: {why.get('summary', why.get('kind', 'n/a'))}.")
    if why.get("drifted_days"):
        out.append(f"- Drifted days: {', '.join(why['drifted_days'])}.")
    site_days = why.get("site_days") or why.get("recalibrated_on_site_days")
    if site_days:
        out.append(f"- Site days recalibrated on: {', '.join(site_days)}.")
    out.append(
        f"- Training data: {_fig(train.get('rows'))} rows, {_fig(train.get('patients'))} "
        f"patients, {_fig(train.get('events'))} strokes; labelled days "
        f"{', '.join(train.get('days') or []) or 'none'}; sha256 `{train.get('sha256') or 'n/a'}`"
        + (f" (inherited from v{train['inherited_from']})" if train.get("inherited_from") else "")
        + "."
    )
    fit = data.get("recalibration_fit")
    if fit:
        out.append(
            f"- Recalibration fit: {_fig(fit.get('rows'))} site patients, "
            f"{_fig(fit.get('events'))} strokes; sha256 `{fit.get('sha256') or 'n/a'}`."
        )
    out.append(
        f"- Code: `{code.get('code_version') or 'n/a'}` ({code.get('package')} "
        f"{code.get('package_version') or 'n/a'}, git commit "
        f"{code.get('git_commit') or 'unknown'})."
    )
    diff = changed.get("against_previous_champion") or {}
    previous = diff.get("previous_champion")
    if previous is None:
        out.append("- Against the previous champion: none (no champion to compare with).")
    else:
        same = diff.get("training_data_identical")
        hyper = diff.get("hyperparameters") or {}
        changes = [
            f"{k} {v.get('previous')} -> {v.get('new')}"
            for part in hyper.values()
            for k, v in part.items()
        ]
        out.append(
            f"- Against the previous champion v{previous}: training data "
            f"{'identical' if same else 'unknown' if same is None else 'changed'}; days added "
            f"{', '.join(diff.get('training_days_added') or []) or 'none'}, removed "
            f"{', '.join(diff.get('training_days_removed') or []) or 'none'}; rows "
            f"{_change(diff.get('training_rows'))}, patients "
            f"{_change(diff.get('training_patients'))}, strokes "
            f"{_change(diff.get('training_events'))}; hyper-parameters "
            f"{'; '.join(changes) or 'unchanged'}."
        )
    acceptance = record.get("acceptance") or {}
    criteria = acceptance.get("criteria") or {}
    specs = {c.get("name"): c for c in criteria.get("criteria") or []}
    if criteria:
        out.append(
            f"- Acceptance criteria, recorded before evaluation ({criteria.get('recorded_at')}); "
            f"{criteria.get('min_events_rule', '')}:"
        )
    else:
        out.append("- Acceptance criteria: not recorded before evaluation.")
    rows = acceptance.get("results") or []
    if rows:
        out += [
            "",
            "| criterion | passes when | margin | estimate | deciding figure | outcome |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            spec = specs.get(r["criterion"], {})
            out.append(
                f"| {r['criterion']} | {spec.get('passes_when', 'n/a')} | {_fig(r.get('margin'))} "
                f"| {_fig(r.get('estimate'))} | {_fig(r.get('bound'))} | {r['outcome']} |"
            )
        out.append("")
    d = record.get("decision") or {}
    out.append(
        f"- Decision: {d.get('outcome')} -> {d.get('alias') or 'no alias'}"
        + (f" (compared with v{d['compared_with']})" if d.get("compared_with") else "")
        + f": {d.get('reason') or 'n/a'}"
    )
    back = record.get("rollback") or {}
    if back.get("command"):
        out.append(f"- Roll back to v{back.get('to_version')}: `{back['command']}`")
    else:
        out.append(f"- Roll back: {back.get('note') or 'n/a'}.")
    return [*out, ""]


CHAI_ARTIFACT = "model_card.json"
CHAI_SCHEMA = "https://mc.chai.org/v0.2/schema.xsd"
UNKNOWN = "unknown: not recorded by the platform"


def _result(label: str, value: Any) -> dict[str, str]:
    """A CHAI ``MetricResult``: a label and its value as JSON text."""
    if isinstance(value, float) and value != value:
        value = None
    return {"Label": label, "ValueJson": json.dumps(value, default=str)}


def _subgroup_results(evidence: Evidence | None) -> list[dict[str, str]]:
    if evidence is None or evidence.subgroups is None:
        return [_result("subgroups", UNKNOWN)]
    keep = ["n", "n_events", "roc_auc", "roc_auc_low", "roc_auc_high", "oe_ratio", "status"]
    table = evidence.subgroups
    return [
        _result(
            f"{row['subgroup']}={row['group']}",
            {k: row[k] for k in keep if k in table.columns},
        )
        for row in table.to_dict("records")
    ]


def _usefulness_results(evidence: Evidence | None) -> list[dict[str, str]]:
    if evidence is None:
        return [_result("evaluation", UNKNOWN)]
    d = evidence.decision
    return [
        _result("roc_auc", evidence.roc_auc),
        _result("roc_auc_ci_95", list(evidence.roc_auc_ci or [])),
        _result("net_benefit_by_tier", d.tier_net_benefit),
        _result("decision_useful_ranges", [list(r) for r in d.useful_ranges]),
    ]


def chai_card(card: CardInputs, evidence: Evidence | None) -> dict[str, Any]:
    """The version's CHAI Applied Model Card (v0.2 fields) as JSON-able values.

    Filled from what the platform knows (registry, holdout evidence, change-control record);
    what it cannot know (contact, funding, regulatory status, consent...) says so explicitly
    and is listed in ``UnknownFields``.
    """
    record = card.change_control or {}
    train = ((record.get("what_changed") or {}).get("data") or {}).get("training") or {}
    decision = record.get("decision") or {}
    t = card.thresholds
    stage = {
        "champion": "deployed: the champion version, scoring patients",
        "challenger": "challenger: registered, not scoring patients",
    }.get(card.alias or "", "registered, not deployed")
    predictors = ", ".join(FEATURES)
    gate_rows = (record.get("acceptance") or {}).get("results") or []
    metrics_on = (
        f"{evidence.n} {card.evaluated_on} patients ({evidence.n_events} strokes) the version "
        "did not train on"
        if evidence is not None
        else UNKNOWN
    )
    c = evidence.calibration if evidence is not None else None
    out: dict[str, Any] = {
        "Schema": CHAI_SCHEMA,
        "BasicInfo": {
            "ModelName": card.model_name,
            "ModelDeveloper": "the scoring platform's ML platform team (team:ml-platform)",
            "DeveloperContact": UNKNOWN,
        },
        "ReleaseInfo": {
            "ReleaseStage": stage,
            "ReleaseDate": (decision.get("decided_at") or card.created)[:10],
            "ReleaseVersion": card.version,
            "GlobalAvailability": "not applicable: an internal deployment, not a product",
            "EHRCompatibility": {"EHR": []},
            "RegulatoryApproval": UNKNOWN,
        },
        "ModelSummary": {
            "Summary": f"Random-forest stroke-risk model; {PURPOSE}",
            "Keywords": {"Keyword": ["stroke", "risk prediction", "random forest", "tabular"]},
        },
        "UsesAndDirections": {
            "IntendedUseAndWorkflow": f"Purpose: {PURPOSE} Daily cohorts are scored in batch "
            "and through the scoring API; the tiers drive outreach lists.",
            "PrimaryIntendedUsers": USERS,
            "HowToUse": f"Read the tier: `elevated` when the probability is >= {t.elevated:.4f}, "
            f"`high` when >= {t.high:.4f}; absolute risks only after a site recalibration.",
            "TargetedPatientPopulation": "patients like the training population "
            f"({card.n_train or 'n/a'} patients of `{card.data_source}`) with the predictors "
            f"{predictors} recorded; the deploying site's own population is not characterised.",
            "CautionedOutOfScopeSettings": "acute stroke diagnosis, emergency triage, absolute "
            "risk at a site without recalibration, decisions without clinical judgement.",
        },
        "Warnings": {
            "KnownRisksAndLimitations": " ".join(LIMITATIONS),
            "KnownBiasesOrEthicalConsiderations": (
                " ".join(evidence.warnings) or "No subgroup warning on the evaluation patients."
                if evidence is not None
                else UNKNOWN
            )
            + " Training data of undocumented provenance: its selection biases are unknown.",
            "ClinicalRiskLevel": UNKNOWN,
        },
        "TrustIngredients": {
            "AISystemFacts": {
                "OutcomesAndOutputs": "outcome: stroke recorded (0/1), no time horizon; output: "
                "a probability in [0, 1] and a tier (low, elevated, high).",
                "ModelType": "predictive: scikit-learn pipeline (median imputation, scaling, "
                "one-hot encoding, random forest) tuned by Optuna"
                + (", with a logistic site recalibration" if card.recalibration else ""),
                "FoundationModels": "not applicable: no foundation model is used",
                "InputDataSource": f"training: `{card.data_source}` plus labelled site cohorts; "
                "scoring: daily site cohort files and API requests",
                "OutputAndInputDataTypes": f"input: tabular patient records ({predictors}); "
                "output: probability (float) and tier (text)",
                "DevelopmentDataCharacterization": (
                    f"{card.n_train or 'n/a'} training patients, {card.n_holdout or 'n/a'} held "
                    f"out (fixed per patient), stroke rate {_pct(card.train_prevalence)}; "
                    f"labelled site days {', '.join(train.get('days') or []) or 'none'}; "
                    f"training data sha256 {train.get('sha256') or 'n/a'}"
                ),
                "BiasMitigationApproaches": "no mitigation in training; subgroup discrimination "
                "and calibration (gender, age band, residence, work type) are computed for every "
                "version and a WARN check raised when a group strays from the population",
                "OngoingMaintenance": "daily drift checks against the version's training data; "
                "retraining on persistent drift; site recalibration; every new version passes a "
                "non-inferiority gate before it scores patients; change control per version",
                "Security": "models stored in the skops format (no pickles); "
                "accreditations: " + UNKNOWN,
                "Transparency": "TRIPOD+AI model card, change-control record and evidence in the "
                "version's MLflow artifacts; per-patient TreeSHAP explanations of the high tier",
            },
            "TransparencyInformation": {
                "FundingSource": UNKNOWN,
                "ThirdPartyInformation": "training data: the public Kaggle Stroke Prediction "
                "Dataset; software: scikit-learn, Optuna, MLflow, Dagster",
                "StakeholdersConsulted": UNKNOWN,
            },
        },
        "KeyMetrics": {
            "UsefulnessUsabilityEfficacy": {
                "MetricGoal": "rank patients by stroke risk and act usefully on the tiers",
                "Results": {"MetricResult": _usefulness_results(evidence)},
                "Interpretation": "ROC AUC: the chance a stroke patient is ranked above a "
                "non-stroke patient; net benefit above treat-all and treat-none in the useful "
                "threshold ranges",
                "TestType": "internal validation",
                "TestingDataDescription": metrics_on,
                "ValidationProcessAndJustification": "held-out patients fixed per patient by a "
                "hash of the id; DeLong 95% CI",
            },
            "FairnessEquity": {
                "MetricGoal": "similar discrimination and calibration across subgroups",
                "Results": {"MetricResult": _subgroup_results(evidence)},
                "Interpretation": "groups with fewer than 10 strokes or non-strokes are too "
                "small to judge; a group's AUC or O:E beyond the margins is warned",
                "TestType": "internal validation by subgroup",
                "TestingDataDescription": metrics_on,
                "ValidationProcessAndJustification": "DeLong CI per group; O:E limits",
            },
            "SafetyReliability": {
                "MetricGoal": "calibrated probabilities, and no version worse than the champion",
                "Results": {
                    "MetricResult": [
                        _result("calibration", c.to_dict() if c is not None else None),
                        *[_result(f"gate:{r['criterion']}", r) for r in gate_rows],
                    ]
                },
                "Interpretation": "O:E 1, intercept 0 and slope 1 are ideal; the gate's "
                "criteria are non-inferiority tests decided by their 95% bounds",
                "TestType": "internal validation; non-inferiority gate against the champion",
                "TestingDataDescription": metrics_on,
                "ValidationProcessAndJustification": "margins recorded before evaluation in "
                "change_control.json (see GateSettings for why these margins)",
            },
        },
        "Resources": {
            "EvaluationReferences": f"MLflow artifacts of version {card.version}: "
            "model_card.md, change_control.json, evidence/summary.json",
            "ClinicalTrial": "none known",
            "PeerReviewedPublications": "none known",
            "ReimbursementStatus": "not applicable",
            "PatientConsentOrDisclosure": UNKNOWN,
        },
        "Bibliography": "Collins GS et al. TRIPOD+AI. BMJ 2024;385:e078378. CHAI Applied Model "
        "Card v0.2 (mc.chai.org).",
    }
    out["UnknownFields"] = _unknown_paths(out)
    return out


def _unknown_paths(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _unknown_paths(v, f"{path}/{k}")]
    if isinstance(node, str) and UNKNOWN in node:
        return [path.lstrip("/")]
    return []
