"""One site recalibration, as ``stroke recalibrate`` and the Dagster asset run it.

Read every labelled cohort day (or the given days), fit a recalibration of the champion on the
fit part of the patients (:mod:`stroke_dagster.clinical.recalibration`), register it as a new
``StrokeRF``
version wrapping the same forest, gate it on the judge part (champion alias only when clearly
better calibrated and no worse in AUC; the reason is recorded either way) and document it
(evidence and model card on the judge part).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.clinical.recalibration import (
    RECALIBRATION_TYPE,
    NotEnoughEvents,
    RecalibrationConfig,
    RecalibrationFit,
    labelled_patients,
    recalibrate,
)
from stroke_dagster.core.errors import InputError
from stroke_dagster.core.risk import RiskThresholds

log = logging.getLogger(__name__)
NOTHING = "none"


def _copy_artifact(run_id: str, path: str) -> None:
    """Re-log ``path`` of run ``run_id`` into the active run (same path)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        directory = str(Path(path).parent)
        mlflow.log_artifact(local, artifact_path=None if directory == "." else directory)


def register_recalibrated(
    champion: Any, fit: RecalibrationFit, days: list[str], settings: Any
) -> tuple[str, str]:
    """Log ``fit.model`` as a new version with the champion's reference data; ``(version, run)``."""
    import mlflow
    from mlflow.models import infer_signature

    from stroke_dagster.core.features import feature_frame
    from stroke_dagster.model import registry

    t = champion.thresholds
    mapped = fit.step(pd.Series([t.elevated, t.high]).to_numpy())
    thresholds = RiskThresholds(elevated=float(mapped[0]), high=float(mapped[1]))
    judge = fit.judge if fit.judge is not None else pd.DataFrame()
    example = feature_frame(judge).head(5)
    registry.configure_mlflow(settings)
    # Its own MLflow run (nested under a training run that is active): the base version's
    # artifacts (split ids, holdout predictions) stay as they are.
    with mlflow.start_run(
        run_name="stroke-recalibrate",
        tags={"stroke.stage": "recalibrate"},
        nested=mlflow.active_run() is not None,
    ) as run:
        champion_params = mlflow.MlflowClient().get_run(champion.run_id).data.params
        inherited = {
            k: v
            for k, v in champion_params.items()
            if k.startswith("best_") or k in ("data_source", "train_rows", "holdout_rows")
        }
        registry.log_params_once(
            {
                **inherited,
                "recalibrated_from": champion.version,
                "recalibration_method": fit.method,
                "recalibration_intercept": round(fit.intercept, 6),
                "recalibration_slope": round(fit.slope, 6),
                "recalibration_step_intercept": round(fit.step_intercept, 6),
                "recalibration_step_slope": round(fit.step_slope, 6),
                "recalibration_n_fit": fit.n_fit,
                "recalibration_n_fit_events": fit.n_fit_events,
                "recalibration_n_judge": fit.n_judge,
                "recalibration_days": ",".join(days)[:500],
                registry.THRESHOLDS_TAG: thresholds.to_json(),
            },
            run.info.run_id,
        )
        mlflow.set_tag(registry.THRESHOLDS_TAG, thresholds.to_json())
        _copy_artifact(champion.run_id, registry.REFERENCE_ARTIFACT)
        registry._log_frame(_split_ids(champion, fit), registry.SPLIT_IDS_ARTIFACT)
        holdout = champion.holdout_predictions()
        holdout["stroke_probability"] = fit.step(holdout["stroke_probability"].to_numpy())
        registry._log_frame(holdout, registry.HOLDOUT_ARTIFACT)
        signature = (
            infer_signature(example, fit.model.predict_proba(example)) if len(example) else None
        )
        info = mlflow.sklearn.log_model(
            fit.model,
            name=registry.MODEL_ARTIFACT,
            signature=signature,
            input_example=example if len(example) else None,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=[*registry.SKOPS_TRUSTED_TYPES, RECALIBRATION_TYPE],
            pip_requirements=registry.pip_requirements(),
            registered_model_name=registry.MODEL_NAME,
        )
        version = str(info.registered_model_version)
        run_id = run.info.run_id
    client = registry.client(settings)
    for key, value in {
        registry.THRESHOLDS_TAG: thresholds.to_json(),
        "run_id": run_id,
        "recalibrated_from": champion.version,
        "recalibration_method": fit.method,
        "holdout_roc_auc": f"{fit.verdict.candidate['roc_auc']:.6f}",
    }.items():
        client.set_model_version_tag(registry.MODEL_NAME, version, key, value)
    return version, run_id


JUDGED_ON = "site patients held out of the recalibration fit"
JUDGED_ON_NEW = "site patients neither the new forest, its recalibration nor the champion saw"


def gate_recalibrated(
    version: str,
    champion: Any,
    fit: RecalibrationFit,
    settings: Any,
    *,
    criteria: Any = None,
    rule: str = JUDGED_ON,
) -> Any:
    """Judge the new version against the champion on the judge part (patients the fit did not
    see) minus any patient the champion trained on, with ``criteria`` (default
    :data:`gate.RECALIBRATION_CRITERIA`: a recalibration of the champion must be clearly better
    calibrated); set its alias and record the verdict like any gated version."""
    from stroke_dagster.core.features import feature_frame
    from stroke_dagster.core.schema import TARGET
    from stroke_dagster.model import gate, registry

    criteria = criteria or gate.RECALIBRATION_CRITERIA
    judge_df = fit.judge if fit.judge is not None else pd.DataFrame()
    against = {"model": champion}

    def decide() -> Any:
        # Compare-and-set (gate.move_alias): if the champion moved meanwhile, judge against it.
        current = registry.resolve_alias(registry.CHAMPION, settings=settings)
        if current is None:  # no champion to compare with: the judge part alone decides
            x = feature_frame(judge_df)
            evidence = gate.Evidence(
                y=judge_df[TARGET].to_numpy(dtype=int),
                p_candidate=fit.model.predict_proba(x)[:, 1],
                p_champion=None,
                settings=settings.gate,
                candidate_version=str(version),
                champion_version=None,
                rule=rule,
            )
            return gate.judge(evidence, criteria)
        if against["model"] is None or current not in (str(version), str(against["model"].version)):
            against["model"] = registry.load_model(current, settings=settings)
        model = against["model"]
        split = model.split_ids()
        unseen = judge_df if split is None else gate.not_trained_on(judge_df, split)[0]
        x = feature_frame(unseen)
        evidence = gate.Evidence(
            y=unseen[TARGET].to_numpy(dtype=int),
            p_candidate=fit.model.predict_proba(x)[:, 1] if len(unseen) else np.empty(0),
            p_champion=model.pipeline.predict_proba(x)[:, 1] if len(unseen) else np.empty(0),
            settings=settings.gate,
            candidate_version=str(version),
            champion_version=str(model.version),
            rule=rule,
        )
        return gate.judge(evidence, criteria)

    verdict = gate.move_alias(decide, settings)
    gate.record_verdict(verdict, settings)
    return verdict


def site_holdout(holdout: pd.DataFrame) -> pd.DataFrame:
    """The labelled cohort rows (ids ``<day>/<id>``) of a new version's holdout: site patients
    its forest never trained on, with ``day`` and the cohort's own ``id``."""
    from stroke_dagster.core.features import patient_keys
    from stroke_dagster.core.schema import ID, PATIENT_KEY

    ids = holdout[ID].astype(str)
    site = holdout.loc[ids.str.contains("/", regex=False).to_numpy()].copy()
    if site.empty:
        return site
    parts = site[ID].astype(str).str.split("/", n=1)
    site[PATIENT_KEY] = patient_keys(site).to_numpy()
    site["day"], site[ID] = parts.str[0], parts.str[1]
    return site.reset_index(drop=True)


def recalibrate_new_version(
    version: str, holdout: pd.DataFrame, settings: Any, config: RecalibrationConfig | None = None
) -> dict[str, Any] | None:
    """Retrain, then recalibrate: fit a recalibration of freshly trained ``version`` on the site
    patients of its holdout (labelled cohort days it never trained on), register it as the next
    version, and gate that against the champion with the default criteria on the site patients
    neither the forest, the recalibration fit nor the champion saw.

    ``None`` (nothing registered) when the holdout holds no labelled site patients or too few
    events to recalibrate; the forest is then gated as it is.
    """
    from stroke_dagster.model import change_control, gate, registry

    site = site_holdout(holdout)
    if site.empty:
        return None
    forest = registry.load_model(str(version), settings=settings)
    try:
        fit = recalibrate(forest.pipeline, site, config or RecalibrationConfig())
    except NotEnoughEvents as exc:
        log.info("v%s not recalibrated: %s", version, exc)
        return None
    days = sorted(site["day"].unique().tolist())
    new_version, run_id = register_recalibrated(forest, fit, days, settings)
    change_control.record_criteria(new_version, gate.DEFAULT_CRITERIA, settings)
    registry.client(settings).set_model_version_tag(
        registry.MODEL_NAME, str(version), "recalibrated_as", new_version
    )
    champion = None
    current = registry.resolve_alias(registry.CHAMPION, settings=settings)
    if current is not None:
        champion = registry.load_model(current, settings=settings)
    verdict = gate_recalibrated(
        new_version, champion, fit, settings, criteria=gate.DEFAULT_CRITERIA, rule=JUDGED_ON_NEW
    )
    data = change_control.recalibration_data(site, fit, days, settings)
    return {
        "version": new_version,
        "run_id": run_id,
        "fit": fit,
        "verdict": verdict,
        "days": days,
        "data": data,
    }


def _split_ids(champion: Any, fit: RecalibrationFit) -> pd.DataFrame:
    """The champion's split ids plus the site patients: fit part as training, judge as holdout.

    Site ids are written ``<day>/<id>`` like labelled cohorts in training data, with their
    ``patient_key``, so a later candidate trained on those cohorts is never judged on patients
    this version was fit on.
    """
    from stroke_dagster.core.features import patient_keys
    from stroke_dagster.core.schema import ID, PATIENT_KEY

    frames = []
    base = champion.split_ids()
    if base is not None:
        if PATIENT_KEY not in base.columns:  # a version stored before patient keys were kept
            base = base.assign(**{PATIENT_KEY: base[ID].astype(str)})
        base = base[~base[ID].astype(str).isin(set(fit.fit_ids))]  # now fit on: training
        frames.append(base[[ID, PATIENT_KEY, "split"]])
    judge = fit.judge if fit.judge is not None else pd.DataFrame(columns=[ID, "day"])
    frames.append(
        pd.DataFrame(
            {ID: fit.fit_ids, PATIENT_KEY: fit.fit_patients or fit.fit_ids, "split": "train"}
        )
    )
    frames.append(
        pd.DataFrame(
            {
                ID: (judge["day"] + "/" + judge[ID].astype(str)).tolist(),
                PATIENT_KEY: patient_keys(judge).tolist() if len(judge) else [],
                "split": "holdout",
            }
        )
    )
    return pd.concat(frames, ignore_index=True)


def run_recalibration(
    settings: Any,
    days: list[str] | None = None,
    config: RecalibrationConfig | None = None,
    *,
    document: bool = True,
    launched_by: str = "stroke recalibrate",
) -> dict[str, Any]:
    """Fit, register, gate and document a recalibration of the champion; the JSON summary.

    With too few events nothing is registered: the summary has ``version: None`` and
    ``method: "none"`` with the reason. ``launched_by`` goes into the change-control record.
    """
    from stroke_dagster.model import change_control, gate, registry

    started = time.perf_counter()
    config = config or RecalibrationConfig()
    registry.configure_mlflow(settings)
    champion = registry.load_model(registry.CHAMPION, settings=settings)
    labelled, rejected = labelled_patients(settings, days)
    used_days = sorted(labelled["day"].unique().tolist()) if len(labelled) else []
    n_events = int(labelled["stroke"].sum()) if len(labelled) else 0
    base = {
        "model_name": registry.MODEL_NAME,
        "recalibrated_from": champion.version,
        "days": used_days,
        "n_patients": len(labelled),
        "n_events": n_events,
        "rows_rejected": rejected,
    }
    if labelled.empty:
        raise InputError("no labelled cohort patients: need incoming/D.* with labels/D.csv")
    try:
        fit = recalibrate(champion.pipeline, labelled, config)
    except NotEnoughEvents as exc:
        return {**base, "version": None, "alias": None, "method": NOTHING, "reason": str(exc)}
    version, run_id = register_recalibrated(champion, fit, used_days, settings)
    change_control.record_criteria(version, gate.RECALIBRATION_CRITERIA, settings)
    verdict = gate_recalibrated(version, champion, fit, settings)
    alias = verdict.alias
    why = change_control.why_recalibration(
        used_days, recalibrated_from=champion.version, launched_by=launched_by
    )
    data = change_control.recalibration_data(labelled, fit, used_days, settings)
    change_control.document_change(version, verdict, why=why, data=data, settings=settings)
    if document and fit.judge is not None:
        from stroke_dagster.model.version_docs import document_version

        document_version(version, fit.judge, evaluated_on=JUDGED_ON, settings=settings)
    return {
        **base,
        "version": version,
        "alias": alias,
        "method": fit.method,
        "reason": verdict.reason,
        **fit.summary(),
        "judge": {"champion": fit.verdict.champion, "candidate": fit.verdict.candidate},
        "run_id": run_id,
        "seconds": round(time.perf_counter() - started, 2),
    }
