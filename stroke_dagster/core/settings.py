"""The platform's one settings object: paths under ``STROKE_HOME`` and every tunable section.

:class:`Settings` is a typed, immutable pydantic-settings model. The shells (the ``stroke`` command
line, the API app factory, the Dagster resource) build it once -- from the environment with
:func:`load_settings`, or from explicit values with ``Settings(home=..., gate={...})`` -- and pass
it (or one of its sections) down; the core never reads the environment.

A malformed environment value raises :class:`SettingsError` with one line naming the variable and
what it should be, e.g. ``STROKE_RETRAIN_WINDOW_DAYS must be an integer >= 1, got 'seven'``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stroke_dagster.core.errors import InputError

if TYPE_CHECKING:
    from stroke_dagster.core.storage import Storage, StoragePath

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "sql"
# The labelled Kaggle file, relative to STROKE_HOME (not to the working directory) unless
# STROKE_RAW_CSV names another path.
DEFAULT_RAW_CSV = "raw/healthcare-dataset-stroke-data.csv"
MODEL_NAME = "StrokeRF"
# A day's cohort arrives as STROKE_HOME/incoming/<YYYY-MM-DD> with one of these suffixes.
COHORT_SUFFIXES = (".csv", ".parquet")

BACKENDS: tuple[str, ...] = ("alibi", "scipy")
CORRECTIONS: tuple[str, ...] = ("bonferroni", "fdr")
NUMERIC_EFFECTS: tuple[str, ...] = ("wasserstein", "psi")


class SettingsError(InputError):
    """A setting has a value the platform cannot use (one line naming the variable)."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateSettings(_Section):
    """When a new version may take the champion alias (see :mod:`stroke_dagster.model.gate`).

    Each comparison with the champion is a non-inferiority test on the patients neither model
    trained on, decided by its 95 % confidence bound against a margin: pass when the whole CI is
    on the acceptable side of the margin, fail ("refuse") when it is wholly beyond it,
    inconclusive in between. The margins are what a clinician would call "no worse"; the
    simulated power at 50, 200 and 1,000 events is printed by ``benchmarks/gate_power.py``.

    - ``auc_floor`` (0.70, ``STROKE_GATE_AUC_FLOOR``): the candidate's own ROC AUC must be above
      it (a sanity floor on the point estimate, not a comparison).
    - ``tolerance`` (0.02, ``STROKE_GATE_TOLERANCE``): the AUC non-inferiority margin. Pass when
      the lower 95 % bound of candidate - champion ROC AUC (DeLong, paired) is >= -0.02. Why 0.02:
      the c-statistic moves little even when the risks patients are given change materially
      (Cook 2007; Pencina et al. 2008), so a margin much looser than a couple of hundredths would
      let a real loss of ranking through (in simulation an AUC 0.03 lower also costs ~6 % of log
      loss); a 0.01 margin, on the other hand, is about the half-width of the paired CI of a
      same-data retrain at the ~50 events of a holdout here, so with the bound deciding an
      equivalent retrain would pass about half the time, a coin toss. With 0.02 an equivalent
      same-data retrain is promoted ~87 % of the time at 50 events (always at 200) and a
      candidate 0.03 or 0.05 worse never (0 of 500 simulated holdouts at each size;
      ``benchmarks/gate_power.py``).
    - ``log_loss_margin`` (0.05, ``STROKE_GATE_LOG_LOSS_MARGIN``): pass when the upper 95 % bound
      of the candidate's / champion's mean log loss (paired, delta method) is <= 1.05. Log loss
      (a strictly proper score) rather than Brier because it penalises confident misses of a
      rare outcome hardest, the error that matters for stroke triage (the Brier score is
      dominated by the many low-risk non-events and says little about clinical usefulness;
      Assel, Sjoberg & Vickers 2017); the Brier ratio is recorded beside it. 5 % of the log loss
      is about a sixth of what the champion gains over predicting the base rate for everyone
      (log-loss skill ~22-24 % on the stroke data), so the candidate keeps at least ~80 % of the
      champion's information gain -- the "preserve a fraction of the active comparator's effect"
      rule for non-inferiority margins (FDA 2016 guidance: often 50 %), made stricter. Same-data
      retrains differ by ~1.5 % (seeds 3-5 on the Kaggle data), well inside it; a calibration
      slope of 0.7 (overfitting) costs about 5 %, an AUC 0.03 lower about 6 %.
    - ``oe_margin`` (1.2, ``STROKE_GATE_OE_MARGIN``): calibration-in-the-large, the first level of
      the calibration hierarchy (Van Calster et al. 2016) and the error log loss hardly sees
      (predicting every odds x1.5, a mean risk ~37 % too high, costs only ~2 % of log loss). Pass
      when the upper 95 % bound of ``|ln O:E(candidate)| - |ln O:E(champion)|`` is <= ln 1.2: the
      candidate's observed:expected ratio is at most 20 % further from 1 than the champion's. 20 %
      is about where an error in every predicted risk starts to move patients across the triage
      thresholds (a 4.2 % risk read as 5 %), and about the precision external validations are
      sized to estimate O:E with (Riley et al. 2021). A candidate whose mean prediction is within
      20 % of the champion's on the same patients always passes (the excess cannot exceed
      ``|ln(E_candidate / E_champion)|``); one further off needs the outcomes to show it is the
      better calibrated of the two.
    - ``min_events`` (30, ``STROKE_GATE_MIN_EVENTS``): fewer shared events (or non-events) and
      every comparison is inconclusive. It is a validity floor, not a precision target (the bound
      handles precision, unlike the >= 100 events recommended to *estimate* performance in a
      validation, Vergouwe et al. 2005, Collins et al. 2016): in simulation the one-sided 97.5 %
      bound of the log-loss ratio holds 96-97 % from ~30 events but only 94-95 % at 10, and the
      normal approximation of ln O (the O:E bound) needs a few dozen events.
    """

    auc_floor: float = Field(0.70, ge=0.0, le=1.0)  # minimum ROC AUC on unseen patients
    tolerance: float = Field(0.02, ge=0.0)  # AUC non-inferiority margin (lower 95 % bound)
    log_loss_margin: float = Field(0.05, ge=0.0)  # log-loss ratio upper bound <= 1 + this
    oe_margin: float = Field(1.2, ge=1.0)  # O:E may be this factor further from 1 than champion's
    min_events: int = Field(30, ge=2)  # fewer shared events (or non-events): inconclusive


class DriftSettings(_Section):
    """How a drift check turns p-values and effect sizes into alarms.

    A feature drifts when its test is significant after the correction *and* its effect size
    reaches the floor. The floors sit at about a tenth of a standard deviation: a 0.1-sd location
    shift has a normalised Wasserstein distance of 0.1 and a PSI of about 0.01 (PSI ~ shift² for
    small shifts), so they describe the same "smallest change worth a page" on each scale.

    - ``backend`` (``alibi``, ``STROKE_DRIFT_BACKEND``): the test engine: alibi-detect (Business
      Source License 1.1: production use needs Seldon's commercial licence) or ``scipy``, the same
      tests on SciPy (BSD).
    - ``alpha`` (0.05, ``STROKE_DRIFT_ALPHA``): the family-wise significance level of a day's tests.
    - ``correction`` (``bonferroni``, ``STROKE_DRIFT_CORRECTION``): how a day's p-values are
      corrected as one family (``fdr``: Benjamini-Hochberg).
    - ``numeric_effect`` (``wasserstein``, ``STROKE_DRIFT_NUMERIC_EFFECT``): the effect size a
      numeric feature's floor applies to (``psi``: its PSI against ``psi_floor``).
    """

    backend: Literal["alibi", "scipy"] = "alibi"
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    numeric_effect: Literal["wasserstein", "psi"] = "wasserstein"
    wasserstein_floor: float = Field(0.1, ge=0.0)  # Wasserstein-1 distance in reference sds
    psi_floor: float = Field(0.01, ge=0.0)  # population stability index
    missing_rate_floor: float = Field(0.02, ge=0.0)  # absolute change of a missing-value rate
    # Numeric inputs: KS plus a Mann-Whitney location test (False: KS alone, plain TabularDrift).
    location_test: bool = True
    psi_bins: int = Field(10, ge=2)  # reference-quantile bins for the PSI of numeric features
    # Categories rarer than this in the reference are pooled for the chi-squared test (its p-value
    # is unreliable when expected counts are tiny: one extra "Other" gender must not page anyone).
    rare_category_share: float = Field(0.01, ge=0.0, lt=1.0)

    @field_validator("backend", "correction", "numeric_effect", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    def with_backend(self, backend: str | None) -> DriftSettings:
        """The same settings with another backend (``None``: unchanged)."""
        if backend is None:
            return self
        return type(self).model_validate({**self.model_dump(), "backend": backend})


class RetrainSettings(_Section):
    """Retrain when ``drifted_days`` of the last ``window_days`` checked days drifted, at most
    once per ``cooldown_hours``; a failed retraining of a window is tried again, ``max_attempts``
    times in all, then alerts.

    - ``drifted_days`` (3, ``STROKE_RETRAIN_DRIFTED_DAYS``): drifted days that start a retraining.
    - ``window_days`` (7, ``STROKE_RETRAIN_WINDOW_DAYS``): the last checked days counted.
    - ``cooldown_hours`` (72, ``STROKE_RETRAIN_COOLDOWN_HOURS``): the least time between two
      drift retrainings.
    - ``max_attempts`` (3, ``STROKE_RETRAIN_MAX_ATTEMPTS``): retrainings tried per policy window
      before alerting.
    """

    drifted_days: int = Field(3, ge=1)
    window_days: int = Field(7, ge=1)
    cooldown_hours: float = Field(72.0, ge=0.0)
    max_attempts: int = Field(3, ge=1)


class WarehouseSettings(_Section):
    """The warehouse's Delta tables and the API's telemetry log.

    - ``history_days`` (default 183, six months): score slices no longer current are kept this
      long (the audit trail of what clinicians were shown), then deleted by the daily
      maintenance.
    - ``time_travel_days`` (default 7): old versions of every table (their commits and removed
      files) are kept this long, then vacuumed.
    - ``telemetry_retention_days`` (default 90): telemetry days older than this are deleted.
    - ``grace_seconds`` (default 3600): a superseded telemetry file is kept this long for queries
      that listed it before it was replaced.
    - ``fsync`` (default on): a file reaches the disk before it is published.
    """

    history_days: int = Field(183, ge=1)
    time_travel_days: int = Field(7, ge=1)
    telemetry_retention_days: int = Field(90, ge=1)
    grace_seconds: float = Field(3600.0, ge=0.0)
    fsync: bool = True


class AlertSettings(_Section):
    """Where alerts go (a Slack-compatible webhook) and how run ids and versions become links.

    ``dagster_url`` and ``mlflow_url`` are the base URLs of the two UIs as their users reach
    them; unset, links point at the local defaults of ``make ui`` and ``make mlflow-ui``
    (alerts then carry plain run ids).

    - ``webhook`` (``STROKE_ALERT_WEBHOOK``): the Slack-compatible webhook URL drift and failure
      alerts are posted to (unset: no alerts are sent).
    - ``dagster_url`` (``STROKE_DAGSTER_URL``): the Dagster UI's base URL (default
      ``http://127.0.0.1:3000``), which turns run ids into links.
    - ``mlflow_url`` (``STROKE_MLFLOW_URL``): the MLflow UI's base URL (default
      ``http://127.0.0.1:5000``), for links to runs and versions.
    """

    webhook: str | None = None
    dagster_url: str | None = None
    mlflow_url: str | None = None

    @field_validator("webhook", "dagster_url", "mlflow_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().rstrip("/") if value.strip() else None
        return value

    @property
    def dagster_ui(self) -> str:
        return self.dagster_url or "http://127.0.0.1:3000"

    @property
    def mlflow_ui(self) -> str:
        return self.mlflow_url or "http://127.0.0.1:5000"


class ApiSettings(_Section):
    """How the HTTP service behaves.

    - ``api_key``: when set, every endpoint except the health probes and the docs needs
      ``Authorization: Bearer <key>``.
    - ``max_body`` (bytes, default 1 MiB): larger bodies get 413.
    - ``reload_seconds`` (default 30; 0 disables the loop): how often the ``champion`` alias is
      re-resolved.
    - ``telemetry`` (default on): per-request rows to Parquet segments.
    - ``telemetry_features`` (default off, for privacy): also keep the patients' feature rows, so
      drift can be checked on live traffic.
    - ``flush_seconds`` (default 5): telemetry flush period.
    - ``body_timeout`` (default 10): seconds a request body may take to arrive, else 408.
    """

    api_key: str | None = None
    max_body: int = Field(1024 * 1024, ge=1)
    reload_seconds: float = Field(30.0, ge=0.0)
    telemetry: bool = True
    telemetry_features: bool = False
    flush_seconds: float = Field(5.0, ge=0.05)
    body_timeout: float = Field(10.0, gt=0.0)  # seconds a request body may take to arrive (408)

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class AuditSettings(_Section):
    """The audit trail of predictions (see :mod:`stroke_dagster.audit.records`).

    - ``enabled`` (default on, ``STROKE_AUDIT``): a chained ``prediction_audit`` record per
      patient the API scores, and the audit columns of every batch score slice.
    - ``retention_days`` (default 183, ``STROKE_AUDIT_RETENTION_DAYS``): ``prediction_audit``
      days older than this are deleted by the daily warehouse maintenance.
    - ``code_version`` (``STROKE_CODE_VERSION``, set by the Docker build): the code version the
      records name; unset, the package version and the git commit of a checkout.

    No feature value is kept by the audit trail (only their sha256); the API keeps them only
    with ``STROKE_TELEMETRY_FEATURES=1``.
    """

    enabled: bool = True
    retention_days: int = Field(183, ge=1)
    code_version: str | None = None

    @field_validator("code_version", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class ScoringSettings(_Section):
    """Daily scoring: what a new champion rescores, and when a day's cohort is overdue."""

    rescore_days: int = Field(1, ge=1)  # how many recent days a new champion rescores
    cohort_due_hour: int = Field(6, ge=0, le=23)  # UTC hour by which a day's cohort is overdue
    # a day whose cohort arrived this long ago and is still unscored fails `scored_in_time`
    unscored_after_minutes: float = Field(30.0, gt=0.0)
    # runs requested for an unscored day (or a rescore) per file version (champion), in all
    max_heal_attempts: int = Field(3, ge=1)
    # the first daily partition (default: the first day the platform saw, see defs/partitions)
    go_live: dt.date | None = None
    # the cohort column that identifies a patient across days (default: the cohort's `id`);
    # training, tuning folds, recalibration and the gate split by it (see schema.PATIENT_KEY)
    patient_key_column: str = "id"
    # the latest challenger scores every live day in shadow (besides any version with the alias
    # `shadow`), so that its live figures accrue for the gate (see stroke_dagster.scoring.shadow)
    shadow_challenger: bool = True


class AlertBurdenSettings(_Section):
    """What counts as an alert, and when a day's high-tier share is out of line
    (see :mod:`stroke_dagster.monitoring.alert_burden`).

    - ``alert_from_tier`` (``high``, ``STROKE_ALERT_FROM_TIER``): a patient in this tier or above
      is an alert (``high``: the tier clinicians are asked to act on; ``elevated`` if a site
      reviews both).
    - ``band_k`` (3, ``STROKE_ALERT_BAND_K``) and ``band_days`` (28, ``STROKE_ALERT_BAND_DAYS``):
      the ``high_share_in_band`` check WARNs when the day's high-tier share leaves mean +- k sd of
      the daily shares of the ``band_days`` days before it. k = 3 is the Shewhart control limit:
      a stable, roughly normal share leaves it on ~0.3 % of days, about one false WARN a year.
      28 days are four whole weeks (every weekday weighs the same, weekend case mix included)
      and recent enough to follow a seasonal drift.
    - ``band_min_days`` (7, ``STROKE_ALERT_BAND_MIN_DAYS``): with fewer reference days the check
      passes, saying so (the sd of 7 days is itself uncertain by ~30 %, of 3 days by ~50 %).
    """

    alert_from_tier: Literal["elevated", "high"] = "high"
    band_k: float = Field(3.0, gt=0.0)
    band_days: int = Field(28, ge=2)
    band_min_days: int = Field(7, ge=2, validate_default=True)

    @field_validator("alert_from_tier", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("band_min_days")
    @classmethod
    def _within_window(cls, value: int, info: ValidationInfo) -> int:
        if value > info.data.get("band_days", value):
            raise ValueError("more than band_days")
        return value


class StorageSettings(_Section):
    """Where the platform's files live (see :mod:`stroke_dagster.core.storage`).

    - ``url`` (default unset: ``STROKE_HOME`` on the local disk, the single-machine layout):
      ``s3://bucket/prefix`` keeps cohort inputs, labels, typed cohort copies, drift detectors,
      telemetry and the warehouse's Delta tables in an object store instead. ``STROKE_HOME``
      then holds only local state: the model cache, scratch files and, unless configured
      elsewhere, MLflow's and Dagster's own stores.
    - ``endpoint_url``: the S3 API endpoint of an S3-compatible store (MinIO, moto, Ceph...).
    - ``region``: the bucket's region (default: botocore's own configuration).
    - ``scratch_dir``: a local directory for a step's private temporary files (default:
      ``STROKE_HOME/tmp`` on a local root, the system temporary directory with object storage).

    Credentials are botocore's usual ones (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE``, an instance role), read by botocore itself.
    """

    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    scratch_dir: Path | None = None

    @field_validator("url", "endpoint_url", "region", "scratch_dir", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        if sep and scheme not in ("s3", "s3a", "file", "memory"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        if sep and scheme != "file" and not rest.strip("/"):
            raise ValueError("no bucket")
        return value.rstrip("/") if sep else value

    @property
    def remote(self) -> bool:
        """Whether the files live in an object store (not on the local disk)."""
        scheme, sep, _ = (self.url or "").partition("://")
        return bool(sep) and scheme != "file"  # a plain path is a local directory


EXECUTORS: tuple[str, ...] = ("in_process", "multiprocess", "dask", "k8s")


class ExecutionSettings(_Section):
    """Where the steps of a Dagster run execute.

    - ``executor`` (default ``in_process``): ``in_process`` runs every step in the run's own
      process; ``multiprocess`` one process per step on the same machine; ``dask`` sends each step
      to a worker of a Dask ``distributed`` cluster (``dask worker`` processes on any machine).
      ``k8s`` runs each step as a Kubernetes Job (dagster-k8s; runs launched in the cluster by
      its ``K8sRunLauncher``).
    - ``dask_scheduler``: the cluster's scheduler address (``tcp://host:8786``); without it the
      ``dask`` executor starts a local cluster for each run.
    """

    executor: Literal["in_process", "multiprocess", "dask", "k8s"] = "in_process"
    dask_scheduler: str | None = None

    @field_validator("executor", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        return value.strip().lower().replace("-", "_") if isinstance(value, str) else value

    @field_validator("dask_scheduler", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class ModelCacheSettings(_Section):
    """The local cache of downloaded model versions (see :mod:`stroke_dagster.model.store`).

    - ``dir`` (default ``<home>/models/cache``): where entries and alias resolutions are kept.
    - ``max_bytes`` (default 2 GiB): least recently used entries are removed beyond this size.
    - ``alias_ttl_seconds`` (default 60): how long the command line and the API reuse a cached
      alias resolution (the Dagster assets and the gate always ask the registry).
    """

    dir: Path | None = None  # default: <home>/models/cache
    max_bytes: int = Field(2 * 1024**3, ge=0)
    alias_ttl_seconds: float = Field(60.0, ge=0.0)


# Environment variable -> (field path, what a valid value looks like).
ENV_VARS: dict[str, tuple[tuple[str, ...], str]] = {
    "STROKE_HOME": (("home",), "a directory path"),
    "STROKE_RAW_CSV": (("raw_csv",), "a file path"),
    "STROKE_ALLOW_SYNTHETIC": (("allow_synthetic",), "a boolean (1/0, true/false)"),
    "MLFLOW_TRACKING_URI": (("mlflow_tracking_uri",), "an MLflow tracking URI"),
    "DAGSTER_HOME": (("dagster_home",), "a directory path"),
    "STROKE_GATE_AUC_FLOOR": (("gate", "auc_floor"), "a number between 0 and 1"),
    "STROKE_GATE_TOLERANCE": (("gate", "tolerance"), "a number >= 0"),
    "STROKE_GATE_LOG_LOSS_MARGIN": (("gate", "log_loss_margin"), "a number >= 0"),
    "STROKE_GATE_OE_MARGIN": (("gate", "oe_margin"), "a number >= 1"),
    "STROKE_GATE_MIN_EVENTS": (("gate", "min_events"), "an integer >= 2"),
    "STROKE_DRIFT_BACKEND": (("drift", "backend"), f"one of {', '.join(BACKENDS)}"),
    "STROKE_DRIFT_ALPHA": (("drift", "alpha"), "a number strictly between 0 and 1"),
    "STROKE_DRIFT_CORRECTION": (("drift", "correction"), f"one of {', '.join(CORRECTIONS)}"),
    "STROKE_DRIFT_NUMERIC_EFFECT": (
        ("drift", "numeric_effect"),
        f"one of {', '.join(NUMERIC_EFFECTS)}",
    ),
    "STROKE_DRIFT_WASSERSTEIN_FLOOR": (("drift", "wasserstein_floor"), "a number >= 0"),
    "STROKE_DRIFT_PSI_FLOOR": (("drift", "psi_floor"), "a number >= 0"),
    "STROKE_DRIFT_MISSING_FLOOR": (("drift", "missing_rate_floor"), "a number >= 0"),
    "STROKE_DRIFT_LOCATION_TEST": (("drift", "location_test"), "a boolean (1/0, true/false)"),
    "STROKE_DRIFT_PSI_BINS": (("drift", "psi_bins"), "an integer >= 2"),
    "STROKE_DRIFT_RARE_CATEGORY_SHARE": (
        ("drift", "rare_category_share"),
        "a number >= 0 and < 1",
    ),
    "STROKE_RETRAIN_DRIFTED_DAYS": (("retrain", "drifted_days"), "an integer >= 1"),
    "STROKE_RETRAIN_WINDOW_DAYS": (("retrain", "window_days"), "an integer >= 1"),
    "STROKE_RETRAIN_COOLDOWN_HOURS": (("retrain", "cooldown_hours"), "a number >= 0"),
    "STROKE_RETRAIN_MAX_ATTEMPTS": (("retrain", "max_attempts"), "an integer >= 1"),
    "STROKE_TELEMETRY_RETENTION_DAYS": (
        ("warehouse", "telemetry_retention_days"),
        "an integer number of days >= 1",
    ),
    "STROKE_WAREHOUSE_HISTORY_DAYS": (
        ("warehouse", "history_days"),
        "an integer number of days >= 1",
    ),
    "STROKE_WAREHOUSE_TIME_TRAVEL_DAYS": (
        ("warehouse", "time_travel_days"),
        "an integer number of days >= 1",
    ),
    "STROKE_WAREHOUSE_GRACE_SECONDS": (("warehouse", "grace_seconds"), "a number of seconds >= 0"),
    "STROKE_ALERT_WEBHOOK": (("alerts", "webhook"), "a webhook URL"),
    "STROKE_DAGSTER_URL": (("alerts", "dagster_url"), "the Dagster UI's base URL"),
    "STROKE_MLFLOW_URL": (("alerts", "mlflow_url"), "the MLflow UI's base URL"),
    "STROKE_API_KEY": (("api", "api_key"), "a string"),
    "STROKE_API_MAX_BODY": (("api", "max_body"), "an integer number of bytes >= 1"),
    "STROKE_API_RELOAD_SECONDS": (("api", "reload_seconds"), "a number of seconds >= 0"),
    "STROKE_TELEMETRY": (("api", "telemetry"), "a boolean (1/0, true/false)"),
    "STROKE_TELEMETRY_FEATURES": (("api", "telemetry_features"), "a boolean (1/0, true/false)"),
    "STROKE_TELEMETRY_FLUSH_SECONDS": (("api", "flush_seconds"), "a number of seconds >= 0.05"),
    "STROKE_API_BODY_TIMEOUT": (("api", "body_timeout"), "a number of seconds > 0"),
    "STROKE_AUDIT": (("audit", "enabled"), "a boolean (1/0, true/false)"),
    "STROKE_AUDIT_RETENTION_DAYS": (("audit", "retention_days"), "an integer number of days >= 1"),
    "STROKE_CODE_VERSION": (("audit", "code_version"), "a version string"),
    "STROKE_RESCORE_DAYS": (("scoring", "rescore_days"), "an integer >= 1"),
    "STROKE_COHORT_DUE_HOUR": (("scoring", "cohort_due_hour"), "an integer hour from 0 to 23"),
    "STROKE_PATIENT_KEY_COLUMN": (("scoring", "patient_key_column"), "a column name"),
    "STROKE_SHADOW_CHALLENGER": (
        ("scoring", "shadow_challenger"),
        "a boolean (1/0, true/false)",
    ),
    "STROKE_UNSCORED_AFTER_MINUTES": (("scoring", "unscored_after_minutes"), "a number > 0"),
    "STROKE_MAX_HEAL_ATTEMPTS": (("scoring", "max_heal_attempts"), "an integer >= 1"),
    "STROKE_GO_LIVE": (("scoring", "go_live"), "a date YYYY-MM-DD"),
    "STROKE_ALERT_FROM_TIER": (("alert_burden", "alert_from_tier"), "one of elevated, high"),
    "STROKE_ALERT_BAND_K": (("alert_burden", "band_k"), "a number > 0"),
    "STROKE_ALERT_BAND_DAYS": (("alert_burden", "band_days"), "an integer >= 2"),
    "STROKE_ALERT_BAND_MIN_DAYS": (
        ("alert_burden", "band_min_days"),
        "an integer >= 2 and <= STROKE_ALERT_BAND_DAYS",
    ),
    "STROKE_STORAGE_URL": (("storage", "url"), "s3://bucket/prefix or a local directory"),
    "STROKE_S3_ENDPOINT_URL": (("storage", "endpoint_url"), "the S3 API endpoint URL"),
    "STROKE_S3_REGION": (("storage", "region"), "an S3 region name"),
    "STROKE_SCRATCH_DIR": (("storage", "scratch_dir"), "a local directory path"),
    "STROKE_EXECUTOR": (("execution", "executor"), f"one of {', '.join(EXECUTORS)}"),
    "STROKE_DASK_SCHEDULER": (("execution", "dask_scheduler"), "a Dask scheduler address"),
    "STROKE_MODEL_CACHE_DIR": (("model_cache", "dir"), "a directory path"),
    "STROKE_MODEL_CACHE_MAX_BYTES": (
        ("model_cache", "max_bytes"),
        "an integer number of bytes >= 0",
    ),
    "STROKE_MODEL_ALIAS_TTL": (("model_cache", "alias_ttl_seconds"), "a number of seconds >= 0"),
}
_BY_PATH = {path: (name, hint) for name, (path, hint) in ENV_VARS.items()}


class _EnvironSource(PydanticBaseSettingsSource):
    """The documented ``STROKE_*`` variables of one environment mapping, as nested values.

    Empty values count as unset (``STROKE_API_KEY=`` means no key).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole table at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, (path, _) in ENV_VARS.items():
            text = self.environ.get(name)
            if text is None or not text.strip():
                continue
            target = values
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = text.strip()
        return values


class Settings(BaseSettings):
    """Paths, URIs and every section of the platform's configuration (immutable).

    ``Settings()`` gives the defaults and never reads the environment; :func:`load_settings` does.

    - ``home`` (``STROKE_HOME``, default ``./data``): the platform's runtime state; with
      ``storage.url`` set, only what stays local (the model cache, scratch space and, unless
      configured elsewhere, MLflow's and Dagster's own stores).
    - ``raw_csv`` (``STROKE_RAW_CSV``, default ``<home>/raw/healthcare-dataset-stroke-data.csv``):
      the labelled training file in the Kaggle layout. A relative value is taken from the working
      directory once, when the settings are read, so every process of a run reads the same file.
    - ``allow_synthetic`` (``STROKE_ALLOW_SYNTHETIC``, default on; the Docker image sets it off):
      without the raw file, train on synthetic patients (saying so in the run, the ``stroke
      train`` summary and the version's ``training_data`` tag) rather than fail. On, so that a
      fresh checkout's ``make run`` works before the Kaggle file is downloaded; off wherever a
      model may score real patients, so that a missing file stops training with one line.
    - ``mlflow_tracking_uri`` (``MLFLOW_TRACKING_URI``): the MLflow tracking and registry store.
    - ``dagster_home`` (``DAGSTER_HOME``): the Dagster instance's directory.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    home: Path = Path("data")
    raw_csv: Path = Path()  # default: <home>/raw/healthcare-dataset-stroke-data.csv
    allow_synthetic: bool = True  # no raw file: synthetic patients (True) or an error
    mlflow_tracking_uri: str = ""  # default: sqlite:///<home>/mlflow.db
    dagster_home: Path = Path()  # default: <home>/dagster
    gate: GateSettings = GateSettings()
    drift: DriftSettings = DriftSettings()
    retrain: RetrainSettings = RetrainSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    alerts: AlertSettings = AlertSettings()
    api: ApiSettings = ApiSettings()
    scoring: ScoringSettings = ScoringSettings()
    audit: AuditSettings = AuditSettings()
    alert_burden: AlertBurdenSettings = AlertBurdenSettings()
    storage: StorageSettings = StorageSettings()
    execution: ExecutionSettings = ExecutionSettings()
    model_cache: ModelCacheSettings = ModelCacheSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # explicit values only: load_settings() adds the environment

    @model_validator(mode="before")
    @classmethod
    def _derived_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        home = Path(data.get("home") or "data").expanduser().resolve()
        data["home"] = home
        raw_csv = data.get("raw_csv")
        data["raw_csv"] = (
            Path(raw_csv).expanduser().resolve() if raw_csv else home / DEFAULT_RAW_CSV
        )
        if not data.get("mlflow_tracking_uri"):
            data["mlflow_tracking_uri"] = f"sqlite:///{home / 'mlflow.db'}"
        dagster_home = data.get("dagster_home")
        data["dagster_home"] = (
            Path(dagster_home).expanduser().resolve() if dagster_home else home / "dagster"
        )
        return data

    @classmethod
    def from_values(cls, **values: Any) -> Settings:
        """Settings from explicit (possibly nested) values; raises :class:`SettingsError`."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, values)) from None

    def replace(self, **sections: Any) -> Settings:
        """A copy with some top-level fields or whole sections replaced (validated)."""
        return type(self).from_values(**{**self.model_dump(), **sections})

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def files(self) -> Storage:
        """The platform's file storage: ``storage.url`` (object storage) or ``home``."""
        from stroke_dagster.core.storage import Storage

        return Storage.from_settings(self)

    @property
    def incoming_dir(self) -> StoragePath:
        """``incoming/`` of the file storage (a ``Path`` under ``home`` by default)."""
        return self.files.path("incoming")

    def incoming_file(self, day: str) -> StoragePath | None:
        """The cohort file of ``day`` (``YYYY-MM-DD``) waiting in ``incoming/``, if any."""
        files = self.files
        for suffix in COHORT_SUFFIXES:
            path = files.path("incoming", f"{day}{suffix}")
            if files.is_file(path):
                return path
        return None

    @property
    def labels_dir(self) -> StoragePath:
        """``labels/`` of the file storage (a ``Path`` under ``home`` by default)."""
        return self.files.path("labels")

    @property
    def feedback_dir(self) -> StoragePath:
        """``feedback/`` of the file storage: clinicians' feedback CSVs, one per day."""
        return self.files.path("feedback")

    @property
    def models_dir(self) -> Path:
        """Local side files kept per model version (always under ``home``)."""
        return self.home / "models"

    @property
    def model_cache_dir(self) -> Path:
        """The model cache (``model_cache.dir``, default ``<home>/models/cache``)."""
        configured = self.model_cache.dir
        return configured.expanduser().resolve() if configured else self.models_dir / "cache"

    def ensure_dirs(self) -> None:
        files = self.files
        for local in (self.home, self.models_dir):
            local.mkdir(parents=True, exist_ok=True)
        for path in (self.incoming_dir, self.labels_dir, self.feedback_dir):
            files.makedirs(path)


def _raw(values: Mapping[str, Any], loc: tuple[Any, ...]) -> Any:
    target: Any = values
    for part in loc:
        if not isinstance(target, Mapping) or part not in target:
            return None
        target = target[part]
    return target


def _one_line(exc: ValidationError, values: Mapping[str, Any]) -> str:
    """The first error as ``NAME must be WHAT, got 'VALUE'`` (NAME: the variable or field)."""
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"])
    name, hint = _BY_PATH.get(loc, (".".join(loc) or "settings", error["msg"].lower()))
    raw = _raw(values, loc)
    got = f", got {raw!r}" if raw is not None else ""
    return f"{name} must be {hint}{got}"


def environ_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The documented variables set in ``environ`` (default: ``os.environ``), as nested raw
    values for :meth:`Settings.from_values` (unvalidated)."""
    return _EnvironSource(Settings, os.environ if environ is None else environ)()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: ``os.environ``), read once; see :data:`ENV_VARS`.

    Raises :class:`SettingsError` with one line naming the first malformed variable.
    """
    return Settings.from_values(**environ_values(environ))
