"""Resources shared by every asset: platform settings and the MLflow run of a Dagster run."""

import fcntl
import os
from typing import Any

import dagster as dg
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import MlFlow

from stroke_dagster.core.settings import Settings, SettingsError, environ_values
from stroke_dagster.model.registry import EXPERIMENT_NAME, configure_mlflow

# Resource field -> (section, field) of Settings it overrides.
_OVERRIDES: dict[str, tuple[str, ...]] = {
    "stroke_home": ("home",),
    "raw_csv": ("raw_csv",),
    "mlflow_tracking_uri": ("mlflow_tracking_uri",),
    "auc_floor": ("gate", "auc_floor"),
    "gate_tolerance": ("gate", "tolerance"),
    "retrain_drifted_days": ("retrain", "drifted_days"),
    "retrain_window_days": ("retrain", "window_days"),
    "retrain_cooldown_hours": ("retrain", "cooldown_hours"),
    "retrain_max_attempts": ("retrain", "max_attempts"),
    "rescore_days": ("scoring", "rescore_days"),
    "unscored_after_minutes": ("scoring", "unscored_after_minutes"),
    "max_heal_attempts": ("scoring", "max_heal_attempts"),
    "cohort_due_hour": ("scoring", "cohort_due_hour"),
    "alert_webhook": ("alerts", "webhook"),
    "dagster_url": ("alerts", "dagster_url"),
}


def _env(name: str) -> dg.EnvVar | None:
    """``EnvVar(name)`` when the variable is set (shown as env-sourced in the UI), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


class StrokeSettings(dg.ConfigurableResource):
    """The platform's :class:`~stroke_dagster.core.settings.Settings`, built once per use.

    The process environment's settings (``load_settings()``: ``STROKE_HOME``, ``STROKE_GATE_*``,
    ``STROKE_RETRAIN_*``, ...) overlaid with the fields set here. The environment is only read,
    never written.
    """

    stroke_home: str | None = None
    raw_csv: str | None = None
    mlflow_tracking_uri: str | None = None
    max_quarantine_share: float = 0.05
    synthetic_rows: int = 5110
    auc_floor: float | None = None
    gate_tolerance: float | None = None
    retrain_drifted_days: int | None = None
    retrain_window_days: int | None = None
    retrain_cooldown_hours: float | None = None
    retrain_max_attempts: int | None = None
    rescore_days: int | None = None
    unscored_after_minutes: float | None = None
    max_heal_attempts: int | None = None
    cohort_due_hour: int | None = None
    alert_webhook: str | None = None
    dagster_url: str | None = None

    def load(self) -> Settings:
        """The settings; a malformed value raises :class:`SettingsError` (one line)."""
        values: dict[str, Any] = environ_values()
        for name, path in _OVERRIDES.items():
            value = getattr(self, name)
            if value is None:
                continue
            target = values
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
        return Settings.from_values(**values)

    def settings(self) -> Settings:
        """The settings for an asset: a malformed value fails the run with its one line."""
        try:
            return self.load()
        except SettingsError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None


@dg.resource(
    config_schema=mlflow_tracking.config_schema,
    required_resource_keys={"stroke"},
    description="dagster-mlflow's MlFlow run resource, on the platform's own MLflow store.",
)
def stroke_mlflow(context: dg.InitResourceContext) -> MlFlow:
    """dagster-mlflow's ``MlFlow`` resource after pointing MLflow at the ``stroke`` settings.

    dagster-mlflow ties the Dagster run to one MLflow run (every step process finds the same run
    by its Dagster run-id tag, and the ``end_mlflow_on_run_finished`` hook closes it). What it does
    not do is choose the store: before it starts, this resource sets the tracking and registry URI
    (sqlite under ``STROKE_HOME`` unless ``MLFLOW_TRACKING_URI`` is set) and creates the
    project's experiment with its artifacts under ``STROKE_HOME/mlartifacts``, not in the working
    directory. Configure ``experiment_name`` to the project's experiment only.
    """
    settings = context.resources.stroke.settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    # Steps of one run start in parallel processes: serialise the first creation of the sqlite
    # store and the lookup-or-create of the run, so that a Dagster run gets exactly one MLflow run.
    with open(settings.home / ".mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        configure_mlflow(settings)
        return MlFlow(context)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "stroke": StrokeSettings(
                stroke_home=_env("STROKE_HOME"),
                raw_csv=_env("STROKE_RAW_CSV"),
            ),
            "mlflow": stroke_mlflow.configured(
                {"experiment_name": EXPERIMENT_NAME, "extra_tags": {"app": "stroke-dagster"}}
            ),
        }
    )
