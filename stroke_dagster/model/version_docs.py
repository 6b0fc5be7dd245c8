"""Document a registered version: holdout evidence and model card into MLflow.

:func:`document_version` scores the patients a version was judged on, computes its
:class:`~stroke_dagster.clinical.evidence.Evidence`, renders its model card and logs both into the
version's
MLflow run (the card also becomes the version's description, shown as Markdown in the MLflow UI),
with the CHAI Applied Model Card beside it as ``model_card.json`` (machine-readable).
:func:`model_card_text` returns a version's card, generating one from the logged holdout
predictions for a version registered before cards existed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stroke_dagster.clinical.evidence import Evidence, compute_evidence, log_evidence
from stroke_dagster.core.features import feature_frame
from stroke_dagster.core.schema import TARGET
from stroke_dagster.model.card import (
    CARD_ARTIFACT,
    CHAI_ARTIFACT,
    CardInputs,
    chai_card,
    render_model_card,
)

log = logging.getLogger(__name__)
CARD_TAG = "model_card"


@dataclass
class VersionDocs:
    version: str
    evidence: Evidence
    card: str

    def metadata(self) -> dict[str, Any]:
        """Plain values for asset metadata (the shell wraps Markdown and images)."""
        c = self.evidence.calibration
        return {
            "calibration_oe_ratio": c.oe_ratio,
            "calibration_intercept": c.calibration_intercept,
            "calibration_slope": c.calibration_slope,
            "calibration_ece": c.ece,
            "brier": c.brier,
            "log_loss": c.log_loss,
            "roc_auc_ci": list(self.evidence.roc_auc_ci or []),
            "subgroup_warnings": self.evidence.warnings,
            "decision_useful_ranges": [list(r) for r in self.evidence.decision.useful_ranges],
        }


def _card_inputs(
    version: str, evaluated_on: str, settings: Any, data_source: str | None = None
) -> CardInputs:
    from stroke_dagster.model import change_control, registry

    model = registry.load_model(version, settings=settings)
    client = registry.client(settings)
    mv = client.get_model_version(registry.MODEL_NAME, version)
    tags = mv.tags or {}
    run = client.get_run(model.run_id)
    params, metrics = run.data.params, run.data.metrics
    aliases = client.get_registered_model(registry.MODEL_NAME).aliases or {}
    alias = ",".join(sorted(a for a, v in aliases.items() if str(v) == version)) or None
    forest = {
        k.removeprefix("best_"): v
        for k, v in params.items()
        if k.startswith("best_") and k != "best_n_jobs"
    }
    recal = None
    if params.get("recalibration_method"):
        recal = {
            "method": params.get("recalibration_method"),
            "intercept": params.get("recalibration_intercept"),
            "slope": params.get("recalibration_slope"),
            "n_fit": params.get("recalibration_n_fit"),
            "n_fit_events": params.get("recalibration_n_fit_events"),
            "days": params.get("recalibration_days"),
        }
    train_rows = params.get("train_rows")
    record = change_control.read_record(version, settings)
    changed = (record or {}).get("what_changed") or {}
    trained = (changed.get("data") or {}).get("training") or {}
    prevalence = metrics.get("train_prevalence", metrics.get("holdout_prevalence"))
    if trained.get("rows") and trained.get("events") is not None:  # what it really trained on
        prevalence = trained["events"] / trained["rows"]
    return CardInputs(
        model_name=registry.MODEL_NAME,
        version=version,
        thresholds=model.thresholds,
        data_source=data_source or params.get("data_source", "not recorded"),
        n_train=int(train_rows) if train_rows else None,
        n_holdout=int(params["holdout_rows"]) if params.get("holdout_rows") else None,
        train_prevalence=prevalence,
        params=forest,
        cv_roc_auc=metrics.get("cv_roc_auc"),
        gate_reason=tags.get("gate_reason"),
        alias=alias,
        recalibration=recal,
        drift_reference_rows=int(train_rows) if train_rows else None,
        evaluated_on=evaluated_on,
        change_control=record,
    )


def document_version(
    version: str,
    patients: pd.DataFrame,
    *,
    evaluated_on: str = "holdout",
    subgroup_config: Any = None,
    data_source: str | None = None,
    settings: Any,
) -> VersionDocs:
    """Evidence on ``patients`` (features + ``stroke``, unseen by the version) and model card."""
    from stroke_dagster.model import registry

    version = str(version)
    model = registry.load_model(version, settings=settings)
    y = patients[TARGET].to_numpy(dtype=int)
    p = model.pipeline.predict_proba(feature_frame(patients))[:, 1]
    evidence = compute_evidence(y, p, model.thresholds, feature_frame(patients), subgroup_config)
    inputs = _card_inputs(version, evaluated_on, settings, data_source)
    card = render_model_card(inputs, evidence)
    log_evidence(model.run_id, evidence)
    _log_card(model.run_id, version, card, settings)
    registry.log_version_json(
        version, CHAI_ARTIFACT, chai_card(inputs, evidence), settings=settings
    )
    return VersionDocs(version=version, evidence=evidence, card=card)


def _log_card(run_id: str, version: str, card: str, settings: Any) -> None:
    from stroke_dagster.model import registry

    client = registry.client(settings)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CARD_ARTIFACT
        path.write_text(card)
        client.log_artifact(run_id, str(path))
    client.set_model_version_tag(registry.MODEL_NAME, version, CARD_TAG, CARD_ARTIFACT)
    try:
        client.update_model_version(registry.MODEL_NAME, version, description=card)
    except Exception as exc:  # a store with a short description limit keeps the artifact only
        log.warning("model card not set as description of v%s: %s", version, exc)


def model_card_text(version: str | None = None, *, settings: Any) -> str:
    """The logged card of ``version`` (default: the champion), generated if none was logged."""
    import mlflow

    from stroke_dagster.model import registry

    model = registry.load_model(version or registry.CHAMPION, settings=settings)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=model.run_id, artifact_path=CARD_ARTIFACT, dst_path=tmp
            )
            return Path(local).read_text()
        except Exception:
            log.info("v%s has no logged model card; generating one", model.version)
    predictions = model.holdout_predictions()
    evidence = compute_evidence(
        predictions[TARGET].to_numpy(dtype=int),
        predictions["stroke_probability"].to_numpy(dtype=float),
        model.thresholds,
        plots=False,
    )
    return render_model_card(_card_inputs(model.version, "holdout", settings), evidence)


def version_record(version: str | None, what: str, *, settings: Any) -> dict[str, Any]:
    """The logged ``model_card.json`` (``what="chai"``) or ``change_control.json``
    (``what="change-control"``) of ``version`` (default: the champion)."""
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.model import change_control, registry

    model = registry.load_model(version or registry.CHAMPION, settings=settings)
    path = CHAI_ARTIFACT if what == "chai" else change_control.ARTIFACT
    data = registry.read_version_json(model.version, path, settings=settings)
    if data is None:
        raise InputError(f"v{model.version} has no {path} (registered before it existed)")
    return data
