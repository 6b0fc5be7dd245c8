"""MLflow tracking and the ``StrokeRF`` model registry: register, gate, load.

- :func:`configure_mlflow` points MLflow at ``settings.mlflow_tracking_uri`` (the sqlite store
  under the settings' home unless another URI is configured) and creates the experiment with
  its artifacts under ``settings.mlflow_artifacts_dir`` (never ``./mlruns``).
- :func:`register_model` logs the fitted pipeline (sklearn flavour, skops format, signature and a
  raw input example), its metrics, plots, risk thresholds and reference data, as a new version.
- :func:`set_alias` records the gate's decision (:mod:`stroke_dagster.gate` decides): the
  ``champion`` or ``challenger`` alias. Aliases, never stages.
- :func:`load_model` / :func:`resolve_alias` are what scoring, drift and the API use.

Every function takes the platform's :class:`~stroke_dagster.settings.Settings` (``settings=``)
and points MLflow's tracking and registry URIs at its store; none reads the environment.
Every function that logs works inside the active MLflow run when there is one (e.g. the run a
Dagster ``mlflow_tracking`` resource opened) and opens its own run otherwise.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from stroke_dagster.errors import InputError
from stroke_dagster.features import feature_frame
from stroke_dagster.risk import RiskThresholds
from stroke_dagster.schema import FEATURES, ID, TARGET
from stroke_dagster.settings import MODEL_NAME, Settings

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from stroke_dagster.training import Evaluation, TuningResult

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "stroke-risk"
CHAMPION = "champion"
CHALLENGER = "challenger"
THRESHOLDS_TAG = "risk_thresholds"
REFERENCE_ARTIFACT = "reference/train.parquet"
HOLDOUT_ARTIFACT = "reference/holdout_predictions.parquet"
# Which patients (by id) the version trained on and was held out on: the gate's fairness evidence.
SPLIT_IDS_ARTIFACT = "reference/split_ids.parquet"
MODEL_ARTIFACT = "model"
NO_CHAMPION = "no champion model registered: run `stroke train` first"
# What skops reports as untrusted in this pipeline (it only allows sklearn types it knows by
# default); loading refuses any other type.
SKOPS_TRUSTED_TYPES: list[str] = [
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
]


def configure_mlflow(settings: Settings) -> str:
    """Set tracking + registry URI from ``settings``; make sure the experiment exists.

    The default store is sqlite at ``<home>/mlflow.db`` (``settings.mlflow_tracking_uri``).
    Returns the experiment id (the experiment also becomes MLflow's current experiment).
    """
    import mlflow

    uri = _set_uris(settings)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        location = None
        if not uri.startswith(("http://", "https://", "databricks")):
            settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
            location = settings.mlflow_artifacts_dir.resolve().as_uri()
        try:
            experiment_id = client.create_experiment(EXPERIMENT_NAME, artifact_location=location)
        except Exception:  # created concurrently by another process
            experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    if mlflow.active_run() is None:
        mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _set_uris(settings: Settings) -> str:
    import mlflow

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(settings: Settings) -> Any:
    """An MLflow client on the settings' tracking and registry store."""
    return _client(settings)


def _client(settings: Settings) -> Any:
    import mlflow

    uri = _set_uris(settings)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def mlflow_run(
    run_name: str | None = None, tags: dict[str, str] | None = None, *, settings: Settings
) -> Iterator[Any]:
    """The active MLflow run if there is one, else a new run in the project's experiment."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        if tags:
            mlflow.set_tags(tags)
        yield active
        return
    configure_mlflow(settings)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        yield run


def _log_bytes(data: bytes, artifact_path: str) -> None:
    import mlflow

    directory, name = os.path.split(artifact_path)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        target.write_bytes(data)
        mlflow.log_artifact(str(target), artifact_path=directory or None)


def _log_frame(df: pd.DataFrame, artifact_path: str) -> None:
    import mlflow

    directory, name = os.path.split(artifact_path)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        df.to_parquet(target, index=False)
        mlflow.log_artifact(str(target), artifact_path=directory or None)


def reference_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The typed training split as kept for drift: features + label (no patient ids)."""
    return df[[*FEATURES, TARGET]].reset_index(drop=True)


def split_ids_frame(train_df: pd.DataFrame, holdout_df: pd.DataFrame) -> pd.DataFrame:
    """``id`` (text) and ``split`` (``train`` / ``holdout``) of every patient of a version."""
    return pd.concat(
        [
            pd.DataFrame({ID: train_df[ID].astype(str).to_numpy(), "split": "train"}),
            pd.DataFrame({ID: holdout_df[ID].astype(str).to_numpy(), "split": "holdout"}),
        ],
        ignore_index=True,
    )


def register_model(
    pipeline: Pipeline,
    train_df: pd.DataFrame,
    holdout_df: pd.DataFrame,
    evaluation: Evaluation,
    tuning: TuningResult | None = None,
    *,
    settings: Settings,
) -> str:
    """Log ``pipeline`` with its evidence to the active (or a new) run; register a new version.

    Logged: metrics (CV + holdout), best parameters, risk thresholds (param, run tag and version
    tag), ROC + calibration PNGs, the tuning trials table, ``reference/train.parquet`` and
    ``reference/holdout_predictions.parquet`` and ``reference/split_ids.parquet`` (the ids of
    both splits). Returns the new version number as text.
    """
    import mlflow
    from mlflow.models import infer_signature

    x_train = feature_frame(train_df)
    example = x_train.head(5)
    with warnings.catch_warnings():
        # The 0/1 columns are integers and never missing after validation.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, pipeline.predict_proba(example))
    thresholds = evaluation.thresholds.to_json()
    with mlflow_run(run_name="train", settings=settings) as run:
        metrics = evaluation.metrics()
        params: dict[str, Any] = {
            "train_rows": len(train_df),
            "holdout_rows": len(holdout_df),
            THRESHOLDS_TAG: thresholds,
        }
        if tuning is not None:
            metrics.update({"cv_roc_auc": tuning.cv_roc_auc, "cv_brier": tuning.cv_brier})
            params.update(
                {f"best_{k}": ("None" if v is None else v) for k, v in tuning.best_params.items()}
            )
            params.update(
                {
                    "n_trials": tuning.n_trials,
                    "cv_folds": tuning.cv_folds,
                    "brier_ceiling": round(tuning.brier_ceiling, 6),
                }
            )
            _log_frame(tuning.trials, "tuning/trials.parquet")
        mlflow.log_metrics(metrics)
        log_params_once(params, run.info.run_id)
        mlflow.set_tag(THRESHOLDS_TAG, thresholds)
        _log_bytes(evaluation.roc_png, "plots/roc.png")
        _log_bytes(evaluation.calibration_png, "plots/calibration.png")
        _log_frame(reference_columns(train_df), REFERENCE_ARTIFACT)
        _log_frame(evaluation.predictions, HOLDOUT_ARTIFACT)
        _log_frame(split_ids_frame(train_df, holdout_df), SPLIT_IDS_ARTIFACT)
        info = mlflow.sklearn.log_model(
            pipeline,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=pip_requirements(),
            registered_model_name=MODEL_NAME,
        )
        version = str(info.registered_model_version)
        run_id = run.info.run_id
    client = _client(settings)
    client.set_model_version_tag(MODEL_NAME, version, THRESHOLDS_TAG, thresholds)
    client.set_model_version_tag(MODEL_NAME, version, "run_id", run_id)
    client.set_model_version_tag(
        MODEL_NAME, version, "holdout_roc_auc", f"{evaluation.roc_auc:.6f}"
    )
    return version


def pip_requirements() -> list[str]:
    """The model's runtime requirements, pinned to the installed versions.

    Given explicitly: MLflow's inference of them re-loads the model in a subprocess (seconds).
    """
    from importlib.metadata import version

    packages = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")
    return [f"{name}=={version(name)}" for name in packages]


def log_params_once(params: dict[str, Any], run_id: str | None = None) -> None:
    """Log params to the active run, skipping keys it already holds.

    MLflow refuses to change a logged param; a Dagster run re-used across materialisations keeps
    the first value (metrics and tags are updated).
    """
    import mlflow

    run_id = run_id or mlflow.active_run().info.run_id
    existing = mlflow.MlflowClient().get_run(run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def set_alias(version: str, alias: str, reason: str, *, settings: Settings) -> None:
    """Point ``alias`` at ``version`` and record the gate's decision and reason on the version."""
    client = _client(settings)
    client.set_registered_model_alias(MODEL_NAME, alias, str(version))
    client.set_model_version_tag(MODEL_NAME, str(version), "gate_decision", alias)
    client.set_model_version_tag(MODEL_NAME, str(version), "gate_reason", reason[:5000])
    log.info("StrokeRF v%s -> %s: %s", version, alias, reason)


def resolve_alias(alias: str = CHAMPION, *, settings: Settings) -> str | None:
    """The version number the alias points at, or ``None`` (no model or no such alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(settings).get_model_version_by_alias(MODEL_NAME, alias).version)
    except MlflowException:
        return None


@dataclass
class ServingModel:
    """One registered version, ready to score raw patient columns."""

    pipeline: Pipeline
    name: str
    version: str
    thresholds: RiskThresholds
    run_id: str
    tracking_uri: str  # the store it was loaded from (its artifacts are read there)
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def predict_proba(self, df: pd.DataFrame) -> Any:
        """Stroke probability for each row of a frame holding the feature columns."""
        return self.pipeline.predict_proba(feature_frame(df))[:, 1]

    def _artifact_frame(self, path: str) -> pd.DataFrame:
        if path not in self._frames:
            import mlflow

            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=self.run_id,
                    artifact_path=path,
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                )
                self._frames[path] = pd.read_parquet(local)
        return self._frames[path].copy()

    def reference_frame(self) -> pd.DataFrame:
        """The typed training split this version was fit on (features + stroke)."""
        return self._artifact_frame(REFERENCE_ARTIFACT)

    def split_ids(self) -> pd.DataFrame | None:
        """``id``/``split`` of the patients it trained and was held out on (None: not stored)."""
        from mlflow.exceptions import MlflowException

        try:
            return self._artifact_frame(SPLIT_IDS_ARTIFACT)
        except (MlflowException, OSError):
            return None

    def holdout_predictions(self) -> pd.DataFrame:
        """Holdout ``id``, ``stroke_probability``, ``risk_tier``, ``stroke`` at training time."""
        return self._artifact_frame(HOLDOUT_ARTIFACT)


_CACHE: dict[tuple[str, str], ServingModel] = {}
_CACHE_LOCK = threading.Lock()


def load_model(alias_or_version: str = CHAMPION, *, settings: Settings) -> ServingModel:
    """Load a version (``"3"``) or an alias (``"champion"``) of ``StrokeRF``; cached per version.

    Raises :class:`InputError` when the alias or version does not exist.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = _set_uris(settings)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    ref = str(alias_or_version)
    try:
        if ref.isdigit():
            mv = client.get_model_version(MODEL_NAME, ref)
        else:
            mv = client.get_model_version_by_alias(MODEL_NAME, ref)
    except MlflowException:
        if ref == CHAMPION:
            raise InputError(NO_CHAMPION) from None
        raise InputError(f"model {MODEL_NAME} has no version or alias {ref!r}") from None
    key = (uri, str(mv.version))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    tags = mv.tags or {}
    run_id = tags.get("run_id") or mv.run_id
    if THRESHOLDS_TAG not in tags:
        raise InputError(f"{MODEL_NAME} v{mv.version} has no {THRESHOLDS_TAG} tag")
    pipeline = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{mv.version}")
    model = ServingModel(
        pipeline=pipeline,
        name=MODEL_NAME,
        version=str(mv.version),
        thresholds=RiskThresholds.from_json(tags[THRESHOLDS_TAG]),
        run_id=run_id,
        tracking_uri=uri,
    )
    with _CACHE_LOCK:
        _CACHE[key] = model
    return model


def clear_cache() -> None:
    """Forget loaded models (tests switch between stores)."""
    with _CACHE_LOCK:
        _CACHE.clear()
