"""Resources shared by every asset: platform settings and the MLflow run of a Dagster run."""

import fcntl
import os

import dagster as dg
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import MlFlow

from stroke_dagster.registry import EXPERIMENT_NAME, configure_mlflow
from stroke_dagster.settings import Settings, get_settings


def _env(name: str) -> dg.EnvVar | None:
    """``EnvVar(name)`` when the variable is set (shown as env-sourced in the UI), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


class StrokeSettings(dg.ConfigurableResource):
    """Where the platform's state lives and the limits the assets enforce.

    Unset fields fall back to the environment (``STROKE_HOME``, ``STROKE_RAW_CSV``) and then to the
    embedded defaults (``./data``), exactly as the ``stroke`` command line resolves them.
    """

    stroke_home: str | None = None
    raw_csv: str | None = None
    max_quarantine_share: float = 0.05
    synthetic_rows: int = 5110
    auc_floor: float | None = None
    gate_tolerance: float | None = None

    def settings(self) -> Settings:
        if self.stroke_home:
            os.environ["STROKE_HOME"] = self.stroke_home
        if self.raw_csv:
            os.environ["STROKE_RAW_CSV"] = self.raw_csv
        return get_settings()


@dg.resource(
    config_schema=mlflow_tracking.config_schema,
    description="dagster-mlflow's MlFlow run resource, on the platform's own MLflow store.",
)
def stroke_mlflow(context: dg.InitResourceContext) -> MlFlow:
    """dagster-mlflow's ``MlFlow`` resource after pointing MLflow at ``STROKE_HOME``.

    dagster-mlflow ties the Dagster run to one MLflow run (every step process finds the same run
    by its Dagster run-id tag, and the ``end_mlflow_on_run_finished`` hook closes it). What it does
    not do is choose the store: before it starts, this resource sets the tracking and registry URI
    (sqlite under ``STROKE_HOME`` unless ``MLFLOW_TRACKING_URI`` is set) and creates the
    project's experiment with its artifacts under ``STROKE_HOME/mlartifacts``, not in the working
    directory. Configure ``experiment_name`` to the project's experiment only.
    """
    settings = get_settings()
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
