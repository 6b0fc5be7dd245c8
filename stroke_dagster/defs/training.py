"""Training assets: Optuna-tuned forest, holdout evaluation, registration and the champion gate.

Each asset is a thin call into :mod:`stroke_dagster.model.training`,
:mod:`stroke_dagster.model.registry` and
:mod:`stroke_dagster.model.gate`. ``stroke train`` runs this same ``training_job`` in-process,
recorded in
the Dagster instance. The ``mlflow`` resource (dagster-mlflow) makes every step of one Dagster run
log into one MLflow run; Optuna trials become nested runs under it.
"""

import base64
import logging
from typing import Any

import dagster as dg
import pandas as pd
from dagster_mlflow import end_mlflow_on_run_finished
from dagster_mlflow.resources import MlFlow

from stroke_dagster.core.settings import Settings
from stroke_dagster.defs import insights
from stroke_dagster.defs.metadata import (
    glance,
    mlflow_run_url,
    mlflow_version_url,
    records_table,
)
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.model import change_control, gate, registry, training, training_data
from stroke_dagster.model import recalibrate as recalibration_run

log = logging.getLogger(__name__)
OWNERS = ["team:ml-platform"]
GROUP = "training"
# On the MLflow-logging assets rather than on a job, so that the MLflow run of any run that
# materializes them (training_job, a UI selection, a retrain) is closed by its last step.
MLFLOW_HOOKS = {end_mlflow_on_run_finished}


class TuningConfig(dg.Config):
    """Launchpad settings of the Optuna search (defaults = ``stroke train``'s)."""

    n_trials: int = training.DEFAULT_N_TRIALS
    cv_folds: int = training.DEFAULT_CV_FOLDS
    seed: int = 0
    # (low, high, step) of the forest sizes searched; smaller forests make quick trial runs.
    n_estimators: list[int] = list(training.DEFAULT_SEARCH_SPACE.n_estimators)


def _png_markdown(title: str, png: bytes) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


@dg.asset(
    group_name=GROUP,
    kinds={"python", "sklearn", "optuna", "mlflow"},
    owners=OWNERS,
    hooks=MLFLOW_HOOKS,
    description=(
        "Optuna (TPE, seeded) search over a median-impute + scale + one-hot + RandomForest "
        "pipeline, maximising stratified-CV ROC AUC among calibrated trials (CV Brier no worse "
        "than no-skill); the best pipeline refit on the whole training split."
    ),
)
def tuned_model(
    context: dg.AssetExecutionContext,
    config: TuningConfig,
    mlflow: dg.ResourceParam[MlFlow],
    patient_split: dict[str, pd.DataFrame],
) -> dg.Output[dict[str, Any]]:
    train = patient_split["train"]
    if len(config.n_estimators) != 3:
        raise dg.Failure(description="n_estimators must be [low, high, step]")
    low, high, step = config.n_estimators
    space = training.SearchSpace(n_estimators=(low, high, step))
    context.log.info(
        f"tuning: {config.n_trials} trials, {config.cv_folds}-fold CV, seed {config.seed}"
    )
    tuning = training.tune(
        train,
        n_trials=config.n_trials,
        seed=config.seed,
        cv_folds=config.cv_folds,
        search_space=space,
    )
    registry.log_params_once(
        {"seed": config.seed, "n_estimators_range": f"{low}-{high}/{step}"},
        mlflow.active_run().info.run_id,
    )
    pipeline = training.fit_final(train, tuning.best_params)
    context.log.info(f"best trial {tuning.best_trial}: CV ROC AUC {tuning.cv_roc_auc:.4f}")
    return glance(
        dg.Output(
            {"pipeline": pipeline, "tuning": tuning},
            metadata={
                "cv_roc_auc": tuning.cv_roc_auc,
                "cv_brier": tuning.cv_brier,
                "brier_ceiling": tuning.brier_ceiling,
                "n_trials": tuning.n_trials,
                "best_trial": tuning.best_trial,
                "best_params": dg.MetadataValue.json(
                    {k: v for k, v in tuning.best_params.items() if k not in ("n_jobs",)}
                ),
                "tuning_seconds": round(tuning.seconds, 1),
                "mlflow_run_id": mlflow.active_run().info.run_id,
            },
        )
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "sklearn"},
    owners=OWNERS,
    hooks=MLFLOW_HOOKS,
    description=(
        "Holdout metrics of the tuned pipeline (ROC AUC, PR AUC, Brier, accuracy, sensitivity and "
        "specificity at the high-risk threshold) with ROC and calibration plots; risk-tier "
        "thresholds come from out-of-fold training predictions, never from the holdout."
    ),
)
def model_evaluation(
    tuned_model: dict[str, Any], patient_split: dict[str, pd.DataFrame]
) -> dg.Output[training.Evaluation]:
    tuning = tuned_model["tuning"]
    evaluation = training.evaluate(
        tuned_model["pipeline"], patient_split["holdout"], tuning.thresholds
    )
    metadata: dict[str, Any] = {k: float(v) for k, v in evaluation.metrics().items()}
    metadata.update(
        {
            "threshold_elevated": evaluation.thresholds.elevated,
            "threshold_high": evaluation.thresholds.high,
            "tier_counts": dg.MetadataValue.json(evaluation.tier_counts),
            "roc_curve": dg.MetadataValue.md(_png_markdown("ROC", evaluation.roc_png)),
            "calibration": dg.MetadataValue.md(
                _png_markdown("Calibration", evaluation.calibration_png)
            ),
        }
    )
    return glance(dg.Output(evaluation, metadata=metadata))


GATE_CHECK = "gate_verdict"
# Limit 1 (set by `make instance` and by `stroke train`): registrations never race on the alias.
REGISTRY_POOL = "model_registry"


@dg.asset(
    group_name=GROUP,
    kinds={"mlflow"},
    owners=OWNERS,
    hooks=MLFLOW_HOOKS,
    # One registration and gate at a time: two trainings never race on the champion alias.
    pool=REGISTRY_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            GATE_CHECK,
            asset="registered_model",
            description=(
                "The champion gate's verdict: passes when the new version became champion; WARN "
                "when it only became challenger (with the AUCs on patients neither model trained "
                "on, their paired difference and its 95% CI)."
            ),
        ),
        insights.SUBGROUP_CHECK_SPEC,
    ],
    description=(
        "A new version of StrokeRF in the MLflow registry (pipeline with signature and input "
        "example, metrics, plots, thresholds, reference data, the ids of its train/holdout "
        "split). The `champion` alias moves to it only through the fair gate (compared with the "
        "champion on patients neither trained on); otherwise it becomes `challenger`. Its "
        "generated model card, holdout calibration, subgroups and decision curve are shown here "
        "and logged to MLflow."
    ),
)
def registered_model(
    context: dg.AssetExecutionContext,
    config: insights.DocumentationConfig,
    stroke: StrokeSettings,
    mlflow: dg.ResourceParam[MlFlow],
    tuned_model: dict[str, Any],
    model_evaluation: training.Evaluation,
    patient_split: dict[str, pd.DataFrame],
) -> dg.MaterializeResult:
    train, holdout = patient_split["train"], patient_split["holdout"]
    settings = stroke.settings()
    version = registry.register_model(
        tuned_model["pipeline"],
        train,
        holdout,
        model_evaluation,
        tuned_model["tuning"],
        settings=settings,
    )
    run_id = mlflow.active_run().info.run_id
    # Retrain, then recalibrate: with labelled site patients in its holdout, the new forest is
    # recalibrated on them and the recalibrated version is what the gate judges.
    recalibrated = recalibration_run.recalibrate_new_version(version, holdout, settings)
    if recalibrated is None:
        candidate, judged_on = version, holdout
        change_control.record_criteria(version, gate.DEFAULT_CRITERIA, settings)
        verdict = gate.gate_version(version, tuned_model["pipeline"], holdout, settings)
    else:
        candidate, verdict = recalibrated["version"], recalibrated["verdict"]
        judged_on = recalibrated["fit"].judge
        context.log.info(
            f"v{version} recalibrated on {len(recalibrated['days'])} site day(s) as v{candidate}"
        )
    link_back(settings, run_id, context.run_id)
    # training_data=real|synthetic (+ the file's sha256) on the forest and the gated version
    training_data.tag_versions(registry.client(settings), (version, candidate), settings)
    change = _document_change(context, settings, version, verdict, patient_split, recalibrated)
    context.log.info(f"{registry.MODEL_NAME} v{candidate} -> {verdict.alias}: {verdict.reason}")
    figures = {f"gate_{k}": float(v) for k, v in verdict.metrics().items()}
    docs, subgroup_check = insights.document_registered_version(
        context, settings, candidate, judged_on, config
    )
    return glance(
        dg.MaterializeResult(
            metadata={
                "model_name": registry.MODEL_NAME,
                "version": candidate,
                "forest_version": version,
                "recalibrated": recalibrated is not None,
                "alias": verdict.alias,
                "gate_reason": verdict.reason,
                "gate_rule": verdict.rule,
                "gate_criteria": _criteria_table(verdict),
                "previous_champion": verdict.champion_version or "",
                "holdout_roc_auc": model_evaluation.roc_auc,
                **figures,
                "change_reason": change["why"]["kind"],
                "change_control": dg.MetadataValue.json(change),
                "model_uri": f"models:/{registry.MODEL_NAME}/{candidate}",
                "mlflow_version": mlflow_version_url(settings, candidate),
                "mlflow_run": mlflow_run_url(settings, run_id),
                **docs,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=GATE_CHECK,
                    passed=verdict.promoted,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=f"v{candidate} -> {verdict.alias}: {verdict.reason}",
                    metadata={"alias": verdict.alias, **figures},
                ),
                subgroup_check,
            ],
        )
    )


def _document_change(
    context: dg.AssetExecutionContext,
    settings: Settings,
    version: str,
    verdict: gate.GateVerdict,
    patient_split: dict[str, pd.DataFrame],
    recalibrated: dict[str, Any] | None,
) -> dict[str, Any]:
    """The change-control record of the gated version (and of a forest it recalibrated)."""
    data = change_control.training_data(patient_split["train"], patient_split["holdout"], settings)
    days = recalibrated["days"] if recalibrated else None
    why = change_control.why_from_tags(
        context.run.tags,
        run_id=context.run_id,
        previous_champion=verdict.champion_version,
        site_days=days,
        forest_version=version,
    )
    if recalibrated is not None:
        note = f"recalibrated as v{recalibrated['version']}, which was gated in its place"
        change_control.document_change(
            version, None, why=why, data=data, settings=settings, note=note
        )
        data = {**data, **recalibrated["data"]}
    return change_control.document_change(
        verdict.version, verdict, why=why, data=data, settings=settings
    )


CRITERIA_COLUMNS = {"criterion": "string", "passed": "bool", "reason": "string"}


def _criteria_table(verdict: gate.GateVerdict) -> dg.TableMetadataValue:
    rows = [{"criterion": c.name, "passed": c.passed, "reason": c.reason} for c in verdict.criteria]
    return records_table(rows, CRITERIA_COLUMNS)


def link_back(settings: Settings, mlflow_run_id: str, dagster_run_id: str) -> None:
    """The MLflow run's description links back to the Dagster run that made it."""
    url = f"{settings.alerts.dagster_ui}/runs/{dagster_run_id}"
    try:
        client = registry.client(settings)
        client.set_tag(mlflow_run_id, "dagster_run_url", url)
        client.set_tag(
            mlflow_run_id,
            "mlflow.note.content",
            f"Trained by Dagster run [{dagster_run_id[:8]}]({url}) (training_job).",
        )
    except Exception as exc:  # a link is a courtesy
        log.debug("no link back to Dagster: %s", exc)


training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("ingestion", GROUP),
    # The code location's executor (.execution): in process by default, as the steps run one
    # after another anyway; steps on Dask workers in the production profile.
    description="Ingest -> validate -> tune -> evaluate -> register -> gate (the main job).",
)
