"""Trust in the model's risks, in Dagster: evidence and card per version, site recalibration,
high-tier explanations, label-free estimates and daily calibration.

Thin shells over :mod:`stroke_dagster.model.version_docs`, :mod:`stroke_dagster.model.recalibrate`
and
:mod:`stroke_dagster.monitoring.day_insights` (the same code as ``stroke model-card`` / ``stroke
recalibrate``):

* :func:`document_registered_version` - called by ``registered_model`` for each new version:
  its holdout calibration, subgroup table, decision curve and model card (MLflow + metadata);
  its ``subgroups`` check WARNs when a subgroup's AUC or calibration strays from the
  population's;
* ``site_recalibration`` - by hand (``recalibration_job``, or ``stroke recalibrate``): fit,
  register, gate and document a recalibration on the labelled cohort days;
* daily, once the day is scored: ``high_risk_explanations`` and ``label_free_estimates``; once
  its labels arrived: ``daily_calibration``.
"""

import base64
from typing import Any

import dagster as dg
import pandas as pd

from stroke_dagster.core.settings import Settings
from stroke_dagster.defs.daily import daily_asset
from stroke_dagster.defs.metadata import ROW_COUNT, frame_table, glance, table_metadata
from stroke_dagster.defs.resources import StrokeSettings

GROUP = "model_insights"
OWNERS = ["team:ml-platform"]
SUBGROUP_CHECK = "subgroups"


def _image(title: str, png: bytes) -> dg.MetadataValue:
    return dg.MetadataValue.md(
        f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    return value


class DocumentationConfig(dg.Config):
    """When a subgroup deserves a warning."""

    auc_margin: float = 0.10  # subgroup ROC AUC this far below the population's
    oe_ratio_limit: float = 1.5  # observed/expected above this or below its inverse
    min_events: int = 10  # fewer strokes (or non-strokes): "too small", no figures


def document_registered_version(
    context: dg.AssetExecutionContext,
    settings: Settings,
    version: str,
    holdout: pd.DataFrame,
    config: DocumentationConfig,
) -> tuple[dict[str, Any], dg.AssetCheckResult]:
    """Evidence and model card of a just-registered version: metadata and the subgroup check.

    Called by ``registered_model`` right after registration, so the version's card, calibration,
    subgroups and decision curve show on the asset that registered it (and in MLflow).
    """
    from stroke_dagster.clinical.subgroups import SubgroupConfig
    from stroke_dagster.model.version_docs import document_version

    subgroup_config = SubgroupConfig(
        min_events=config.min_events,
        min_non_events=config.min_events,
        auc_margin=config.auc_margin,
        oe_ratio_limit=config.oe_ratio_limit,
    )
    raw = context.instance.get_latest_materialization_event(dg.AssetKey("raw_patients"))
    source = None
    if raw is not None and raw.asset_materialization is not None:
        entry = raw.asset_materialization.metadata.get("source")
        source = str(entry.value) if entry is not None else None
    docs = document_version(
        version, holdout, subgroup_config=subgroup_config, data_source=source, settings=settings
    )
    e = docs.evidence
    warnings = e.warnings
    metadata: dict[str, Any] = {
        "model_card": dg.MetadataValue.md(docs.card),
        "reliability_diagram": _image("Reliability", e.reliability_png),
        "decision_curve": _image("Decision curve", e.decision_png),
        "subgroups": frame_table(e.subgroups, SUBGROUP_COLUMNS),
        **{k: _plain(v) for k, v in e.calibration.metrics("holdout_").items()},
        "holdout_roc_auc_ci": dg.MetadataValue.json(list(e.roc_auc_ci or [])),
        "decision_useful_ranges": dg.MetadataValue.json(
            [list(r) for r in e.decision.useful_ranges]
        ),
    }
    check = dg.AssetCheckResult(
        check_name=SUBGROUP_CHECK,
        passed=not warnings,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(warnings) or "every subgroup large enough is in line",
        metadata={"warnings": dg.MetadataValue.json(warnings), "version": version},
    )
    return metadata, check


SUBGROUP_COLUMNS = {
    "subgroup": "string",
    "group": "string",
    "n": "int",
    "n_events": "int",
    "roc_auc": "float",
    "roc_auc_low": "float",
    "roc_auc_high": "float",
    "oe_ratio": "float",
    "sensitivity_high": "float",
    "specificity_high": "float",
    "status": "string",
}
SUBGROUP_CHECK_SPEC = dg.AssetCheckSpec(
    SUBGROUP_CHECK,
    asset="registered_model",
    description="WARN when a subgroup's holdout ROC AUC falls more than the margin below "
    "the population's, or its observed/expected ratio is off by more than the limit.",
)


class RecalibrationRunConfig(dg.Config):
    """Which labelled days, and the event counts that choose the method."""

    days: list[str] | None = None  # default: every labelled cohort day
    min_events: int = 20
    slope_min_events: int = 100


@dg.asset(
    group_name=GROUP,
    kinds={"python", "mlflow"},
    owners=OWNERS,
    deps=[dg.AssetKey("registered_model")],
    description=(
        "A site recalibration of the champion fit on labelled cohort patients (incoming/D.* "
        "joined with labels/D.csv), registered as a new StrokeRF version wrapping the same "
        "forest and gated on patients the fit did not see: champion only when no worse in AUC "
        "and clearly better in log loss or Brier. Same code as `stroke recalibrate`."
    ),
)
def site_recalibration(
    context: dg.AssetExecutionContext, config: RecalibrationRunConfig, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.clinical.recalibration import RecalibrationConfig
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.model.recalibrate import run_recalibration

    try:
        summary = run_recalibration(
            stroke.settings(),
            config.days,
            RecalibrationConfig(
                min_events=config.min_events, slope_min_events=config.slope_min_events
            ),
            launched_by=f"Dagster run {context.run_id} (site_recalibration)",
        )
    except InputError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.log.info(f"recalibration: {summary.get('alias')} - {summary.get('reason')}")
    keys = ("version", "alias", "method", "n_patients", "n_events", "reason", "recalibrated_from")
    metadata: dict[str, Any] = {k: summary.get(k) or "" for k in keys}
    for k in ("intercept", "slope", "n_fit", "n_fit_events", "n_judge", "n_judge_events"):
        if k in summary:
            metadata[k] = summary[k]
    if "judge" in summary:
        metadata["judged"] = dg.MetadataValue.json(summary["judge"])
    return glance(dg.MaterializeResult(metadata=metadata))


recalibration_job = dg.define_asset_job(
    "recalibration_job",
    selection=dg.AssetSelection.assets(site_recalibration),
    description="Recalibrate the champion on the labelled cohort days (like `stroke recalibrate`).",
)


class ExplanationConfig(dg.Config):
    method: str = "treeshap"  # treeshap (exact Shapley values) | path (tree-path, faster)


@daily_asset(
    group=GROUP,
    kinds={"duckdb", "python"},
    deps=[dg.AssetKey("cohort_scores")],
    metadata=table_metadata("patient_explanations"),
    description=(
        "Signed per-feature contributions (exact TreeSHAP in probability space) for every patient "
        "of the day's `high` tier, by the version that scored them; replaces the day's rows of "
        "the DuckDB table patient_explanations (see sql/queries/why_high_risk.sql)."
    ),
)
def high_risk_explanations(
    context: dg.AssetExecutionContext, config: ExplanationConfig, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.monitoring.day_insights import explain_high_tier

    out = explain_high_tier(stroke.settings(), context.partition_key, method=config.method)
    return glance(dg.MaterializeResult(metadata={ROW_COUNT: out["rows_written"], **out}))


@daily_asset(
    group=GROUP,
    kinds={"duckdb", "python"},
    deps=[dg.AssetKey("cohort_scores")],
    metadata=table_metadata("label_free_estimates"),
    description=(
        "Expected ROC AUC and stroke rate of the day from its scored probabilities alone "
        "(confidence-based estimation), before outcomes arrive; replaces the day's rows of the "
        "DuckDB table label_free_estimates, read next to drift_summary and, later, "
        "performance_metrics (sql/queries/label_free_vs_realized.sql)."
    ),
)
def label_free_estimates(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.monitoring.day_insights import label_free_day

    frame = label_free_day(context.partition_key, stroke.settings())
    metadata: dict[str, Any] = {ROW_COUNT: len(frame), "versions": len(frame)}
    if len(frame):
        latest = frame.loc[frame["model_version"].astype(int).idxmax()]
        metadata.update(
            {
                "model_version": str(latest["model_version"]),
                "n_scored": int(latest["n_scored"]),
                "expected_roc_auc": _plain(float(latest["expected_roc_auc"] or float("nan"))),
                "expected_observed_rate": float(latest["expected_observed_rate"]),
            }
        )
    return glance(dg.MaterializeResult(metadata=metadata))


@daily_asset(
    group=GROUP,
    kinds={"duckdb", "python"},
    deps=[dg.AssetKey("performance_metrics")],
    metadata=table_metadata("performance_calibration"),
    description=(
        "Calibration of the day's scores once its labels arrived: O/E ratio, mean difference, "
        "calibration intercept and slope, ECE, Brier and log loss per scoring version; replaces "
        "the day's rows of the DuckDB table performance_calibration."
    ),
)
def daily_calibration(
    context: dg.AssetExecutionContext, stroke: StrokeSettings
) -> dg.MaterializeResult:
    from stroke_dagster.clinical.calibration import reliability_plot
    from stroke_dagster.monitoring.day_insights import calibration_day, labelled_scores

    day, settings = context.partition_key, stroke.settings()
    frame = calibration_day(day, settings)
    if frame is None or frame.empty:
        return glance(dg.MaterializeResult(metadata={ROW_COUNT: 0, "labelled_scores": 0}))
    latest = frame.loc[frame["model_version"].astype(int).idxmax()]
    metadata: dict[str, Any] = {
        k: _plain(v.item() if hasattr(v, "item") else v)
        for k, v in latest.items()
        if k not in ("model_name",)
    }
    scored = labelled_scores(day, settings)
    version = str(latest["model_version"])
    rows = scored[scored["model_version"].astype(str) == version]
    png = reliability_plot(
        rows["stroke"].to_numpy(dtype=int),
        rows["stroke_probability"].to_numpy(dtype=float),
        title=f"Reliability, {day}, v{version}",
    )
    metadata["reliability_diagram"] = _image("Reliability", png)
    metadata[ROW_COUNT] = len(frame)
    return glance(dg.MaterializeResult(metadata=metadata))
