"""MLflow tracking and the ``StrokeRF`` model registry: register, gate, load.

- :func:`configure_mlflow` points MLflow at ``settings.mlflow_tracking_uri`` (the sqlite store
  under the settings' home unless another URI is configured) and creates the experiment with
  its artifacts under ``settings.mlflow_artifacts_dir`` (never ``./mlruns``).
- :func:`register_model` logs the fitted pipeline (sklearn flavour, skops format, signature and a
  raw input example), its metrics, plots, risk thresholds and reference data, as a new version.
- :func:`set_alias` records the gate's decision (:mod:`stroke_dagster.model.gate` decides): the
  ``champion`` or ``challenger`` alias. Aliases, never stages.
- :func:`load_model` / :func:`resolve_alias`: the model loader of
  :mod:`stroke_dagster.model.store` (always asking the registry), for the gate, drift and the
  assets; the command line and the API use the store directly with a cached alias resolution.

Every function takes the platform's :class:`~stroke_dagster.core.settings.Settings` (``settings=``)
and points MLflow's tracking and registry URIs at its store; none reads the environment.
Every function that logs works inside the active MLflow run when there is one (e.g. the run a
Dagster ``mlflow_tracking`` resource opened) and opens its own run otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.features import feature_frame
from stroke_dagster.core.schema import FEATURES, ID, PATIENT_KEY, TARGET
from stroke_dagster.core.settings import MODEL_NAME, Settings
from stroke_dagster.model import store as model_store
from stroke_dagster.model.store import (  # noqa: F401 (re-exported)
    CHAMPION,
    HOLDOUT_ARTIFACT,
    NO_CHAMPION,
    REFERENCE_ARTIFACT,
    SKOPS_TRUSTED_TYPES,
    SPLIT_IDS_ARTIFACT,
    THRESHOLDS_TAG,
    ModelStore,
    StoredModel,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from stroke_dagster.model.training import Evaluation, TuningResult

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "stroke-risk"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"


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
    if experiment is None or "mlflow.experimentKind" not in (experiment.tags or {}):
        # once per store (a new experiment, or one made by an older release), not per process
        describe_experiment(client, experiment, experiment_id, EXPERIMENT_DESCRIPTION)
    if mlflow.active_run() is None:
        mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


EXPERIMENT_DESCRIPTION = (
    "Training of the StrokeRF stroke-risk model: one run per training (Optuna trials nested), "
    "its holdout evidence, the gate's verdict and the model card. Versions are in Models > "
    "StrokeRF; the `champion` alias is the one that scores patients."
)
MODEL_DESCRIPTION = (
    "Stroke-risk random forest (one scikit-learn pipeline: impute, scale, one-hot, forest) of "
    "the stroke-risk scoring platform. Alias `champion`: the version that scores patients, "
    "moved only by the gate; `challenger`: the latest version that did not pass it. Each "
    "version's description is its model card's summary."
)
# MLflow 3 opens an experiment on the GenAI overview unless it is marked for model development.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def describe_experiment(client: Any, experiment: Any, experiment_id: str, text: str) -> None:
    """Mark an experiment as model development and describe it (once); and retire MLflow's empty
    ``Default`` experiment, whose artifacts would point into the working directory."""
    tags = dict(getattr(experiment, "tags", None) or {})
    try:
        for key, value in {**EXPERIMENT_KIND, "mlflow.note.content": text}.items():
            if tags.get(key) != value:
                client.set_experiment_tag(experiment_id, key, value)
        default = client.get_experiment("0")
        active = default is not None and default.lifecycle_stage == "active"
        if active and not client.search_runs(["0"], max_results=1):
            client.delete_experiment("0")
    except Exception as exc:  # descriptions are a courtesy: never fail a run for them
        log.debug("experiment description not set: %s", exc)


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
    """``id`` (text), ``patient_key`` and ``split`` (``train`` / ``holdout``) of every row of a
    version: which patient was on which side (a patient's rows are all on one side)."""
    from stroke_dagster.core.features import patient_keys

    return pd.concat(
        [
            pd.DataFrame(
                {
                    ID: frame[ID].astype(str).to_numpy(),
                    PATIENT_KEY: patient_keys(frame).to_numpy(),
                    "split": side,
                }
            )
            for frame, side in ((train_df, "train"), (holdout_df, "holdout"))
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
    describe_model(client)
    client.set_model_version_tag(MODEL_NAME, version, THRESHOLDS_TAG, thresholds)
    client.set_model_version_tag(MODEL_NAME, version, "run_id", run_id)
    client.set_model_version_tag(
        MODEL_NAME, version, "holdout_roc_auc", f"{evaluation.roc_auc:.6f}"
    )
    return version


def describe_model(client: Any) -> None:
    """The registered model's description, once (each version's is its model card, written by
    :mod:`stroke_dagster.model.version_docs`)."""
    try:
        if not client.get_registered_model(MODEL_NAME).description:
            client.update_registered_model(MODEL_NAME, description=MODEL_DESCRIPTION)
    except Exception as exc:  # a courtesy, like the experiment's
        log.debug("model description not set: %s", exc)


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

    if not run_id:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("log_params_once: no run_id given and no active MLflow run")
        run_id = active.info.run_id
    existing = mlflow.MlflowClient().get_run(run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


class ChampionChangedError(RuntimeError):
    """The champion moved while a decision against it was being made: judge again."""

    def __init__(self, expected: str | None, found: str | None) -> None:
        super().__init__(
            f"the champion is v{found} now, not v{expected} as judged: the decision is re-made"
        )
        self.expected = expected
        self.found = found


# Anything may be the champion: set_alias without a compare-and-set.
ANY_CHAMPION = object()
ALIAS_LOCK = "registry/champion.lock"


@contextmanager
def alias_lock(settings: Settings, timeout: float = 600.0) -> Iterator[None]:
    """Hold the one lock on moving ``StrokeRF``'s aliases (file storage: every process and
    machine of the platform shares it; see :meth:`Storage.lock`)."""
    with settings.files.lock(settings.files.path(*ALIAS_LOCK.split("/")), timeout=timeout):
        yield


def set_alias(
    version: str,
    alias: str,
    reason: str,
    *,
    settings: Settings,
    expected_champion: object = ANY_CHAMPION,
) -> None:
    """Point ``alias`` at ``version`` and record the gate's decision and reason on the version.

    Serialised by :func:`alias_lock`. With ``expected_champion`` (a version, or ``None`` for
    "no champion yet") it is a compare-and-set: the alias moves only if the champion is still
    the one the decision was made against (or already ``version``); otherwise
    :class:`ChampionChangedError` is raised and nothing changes.

    The model cache's resolution of ``alias`` is replaced at once (write-through), so every
    later load on this machine sees the new target without waiting for its time to live.
    """
    client = _client(settings)
    with alias_lock(settings):
        if expected_champion is not ANY_CHAMPION:
            current = resolve_alias(CHAMPION, settings=settings)
            if current not in (expected_champion, str(version)):
                raise ChampionChangedError(expected_champion, current)  # type: ignore[arg-type]
        client.set_registered_model_alias(MODEL_NAME, alias, str(version))
        client.set_model_version_tag(MODEL_NAME, str(version), "gate_decision", alias)
        client.set_model_version_tag(MODEL_NAME, str(version), "gate_reason", reason[:5000])
        if alias == CHAMPION:
            since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            client.set_model_version_tag(MODEL_NAME, str(version), "champion_since", since)
    try:
        ModelStore(settings).remember_alias(alias, str(version))
    except (OSError, InputError) as exc:  # the registry is right; the cache catches up by TTL
        log.warning("model cache keeps its old %r resolution: %s", alias, exc)
    log.info("StrokeRF v%s -> %s: %s", version, alias, reason)


def resolve_alias(alias: str = CHAMPION, *, settings: Settings) -> str | None:
    """The version number the alias points at now, or ``None`` (no model or no such alias).

    Always asks the registry (the answer also refreshes the model cache's resolution).
    """
    try:
        return ModelStore(settings).resolve(alias, max_age=0.0).version
    except InputError:
        return None


def load_model(alias_or_version: str = CHAMPION, *, settings: Settings) -> StoredModel:
    """Load a version (``"3"``) or an alias (``"champion"``, resolved afresh) of ``StrokeRF``.

    Through the model cache (:func:`stroke_dagster.model.store.load_model`); kept per version in
    the process too. Raises :class:`InputError` when the alias or version does not exist.
    """
    _set_uris(settings)
    return model_store.load_model(str(alias_or_version), settings=settings, max_age=0.0)


def clear_cache() -> None:
    """Forget the models loaded in this process (tests switch between stores)."""
    model_store.clear_cache()


def version_run_id(version: str, *, settings: Settings) -> str:
    """The MLflow run that logged ``version`` (where its artifacts are)."""
    return str(_client(settings).get_model_version(MODEL_NAME, str(version)).run_id)


def log_version_json(version: str, artifact_path: str, data: Any, *, settings: Settings) -> str:
    """``data`` as the JSON artifact ``artifact_path`` of ``version``'s run (replacing one logged
    before); the run id. Works on a finished run."""
    import json

    run_id = version_run_id(version, settings=settings)
    text = json.dumps(data, indent=2, default=str, allow_nan=False)
    _client(settings).log_text(run_id, text, artifact_path)
    return run_id


@contextmanager
def _version_artifact(
    version: str, artifact_path: str, settings: Settings
) -> Iterator[Path | None]:
    """A local copy of an artifact of ``version``'s run, or ``None`` when it has none."""
    client = _client(settings)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_id = version_run_id(version, settings=settings)
            local = Path(client.download_artifacts(run_id, artifact_path, tmp))
        except Exception as exc:  # absent (an older version), or the store does not answer
            log.debug("v%s has no artifact %s: %s", version, artifact_path, exc)
            local = None
        yield local if local is not None and local.is_file() else None


def read_version_json(version: str, artifact_path: str, *, settings: Settings) -> Any | None:
    """The JSON artifact ``artifact_path`` of ``version``'s run, or ``None``."""
    import json

    with _version_artifact(version, artifact_path, settings) as local:
        return None if local is None else json.loads(local.read_text())


def read_version_frame(
    version: str, artifact_path: str, *, settings: Settings
) -> pd.DataFrame | None:
    """The Parquet artifact ``artifact_path`` of ``version``'s run, or ``None``."""
    with _version_artifact(version, artifact_path, settings) as local:
        return None if local is None else pd.read_parquet(local)
