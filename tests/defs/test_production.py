"""The production profile for real: the daily loop on PostgreSQL, S3 and two Dask workers.

The services are started by the test itself (:mod:`_production`): PostgreSQL (the Dagster instance
and MLflow's store), an S3 server (moto) for the platform's files, MLflow's artifacts and the
objects steps hand to each other, ``mlflow server``, a Dask scheduler and two ``dask worker``
processes that share no working directory and no ``STROKE_HOME``. This process is the run
orchestrator (as ``dagster job execute`` or the daemon's run worker would be): it ticks the sensors
and evaluates the automation conditions as the daemon does, then executes the requested runs with
the settings' executor (dask), several days at once.

Several days arrive at once (files put into the S3 ``incoming/`` prefix); they are validated,
scored and checked for drift; the drift starts a retraining, whose version the gate promotes, and
the latest day is rescored with it. A worker is killed (SIGKILL) in the middle of that rescoring
step. Then: every step ran on a worker, and at least one step ran on another worker than the one
that produced its input; every input row of every day is scored or quarantined exactly once, with
one model version per day; the killed step's day completed.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from _automation import project_defs, tick
from _production import PROJECT_ROOT, Services, postgres_bin_dir, production_services
from _s3 import MotoS3, s3_storage_env
from dagster._core.definitions.reconstruct import ReconstructableRepository

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.execution import WORKER_KEY
from stroke_dagster.defs.retraining import drift_retraining
from stroke_dagster.defs.sources import champion_rescoring, file_arrivals
from stroke_dagster.simulate.generator import simulate_patients
from stroke_dagster.warehouse import store as warehouse

N_DAYS, SHIFT_FROM, ROWS, BAD_ROWS = 4, 2, 200, 3
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [(TODAY - dt.timedelta(days=N_DAYS - i)).isoformat() for i in range(N_DAYS)]
ASSET_JOB = "__ASSET_JOB"
# The daily loop's assets run here (the automation also requests the day's insights).
LOOP_ASSETS = {"daily_cohort", "cohort_scores", "drift_metrics", "performance_metrics"}
TRAINING = {
    "ops": {
        "tuned_model": {"config": {"n_trials": 2, "cv_folds": 3, "n_estimators": [20, 40, 20]}}
    },
    "resources": {"stroke": {"config": {"synthetic_rows": 1200}}},
}
SETTINGS_ENV = {
    "STROKE_RETRAIN_DRIFTED_DAYS": "2",
    "STROKE_RETRAIN_WINDOW_DAYS": str(N_DAYS),
    "STROKE_RETRAIN_COOLDOWN_HOURS": "1000",
    "STROKE_GATE_TOLERANCE": "1.0",  # here the gate promotes any sound retrain
    "STROKE_GATE_MIN_EVENTS": "5",
    "STROKE_GATE_LOG_LOSS_MARGIN": "1.0",
    "STROKE_GATE_OE_MARGIN": "10",
    "STROKE_DRIFT_BACKEND": "scipy",
    "STROKE_COHORT_DUE_HOUR": "23",
}
REPOSITORY = ReconstructableRepository.for_module(
    "stroke_dagster.definitions", "defs", working_directory=str(PROJECT_ROOT)
)


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    if postgres_bin_dir() is None:
        pytest.skip("no PostgreSQL binaries: install Debian's `postgresql` package (.ci/run does)")
    with production_services(n_workers=2, settings_env=SETTINGS_ENV) as running:
        yield running


@pytest.fixture
def instance(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """This process as the orchestrator: the profile's settings, its own scratch STROKE_HOME and
    a DAGSTER_HOME holding only deploy/dagster.production.yaml (the instance is PostgreSQL)."""
    home = tmp_path / "orchestrator"
    (home / "dagster").mkdir(parents=True)
    shutil.copy(
        PROJECT_ROOT / "deploy" / "dagster.production.yaml", home / "dagster" / "dagster.yaml"
    )
    for name, value in services.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STROKE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("STROKE_RAW_CSV", raising=False)  # synthetic training rows, made on a worker
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots("model_registry", 1)
        yield instance


CALL_TAG = "test/call"


def _orchestrate(job_name: str, assets, partition, tags, run_config) -> None:  # noqa: ANN001
    """A forked child: one run with the code location's executor (dask), then exit."""
    code = 1
    try:
        all_tags = dict(tags or {})
        if partition:
            all_tags["dagster/partition"] = partition
        with dg.DagsterInstance.get() as instance:
            result = dg.execute_job(
                REPOSITORY.get_reconstructable_job(job_name),
                instance,
                run_config=run_config,
                tags=all_tags,
                asset_selection=assets,
            )
            code = 0 if result.success else 1
    finally:
        os._exit(code)  # no finalizers: they would close the parent's connections


def execute_runs(
    instance: dg.DagsterInstance, calls: list[dict], on_started: Callable[[], None] | None = None
) -> list[dg.DagsterRun]:
    """Runs at once, each orchestrated by its own forked process (as the daemon's run workers
    would: one process per run), their steps on the Dask workers; returns them once finished.

    Each call: ``job`` and optionally ``assets``, ``partition``, ``tags``, ``run_config``.
    """
    context = multiprocessing.get_context("fork")
    children, keys = [], []
    for call in calls:
        key = uuid.uuid4().hex
        tags = {**call.get("tags", {}), CALL_TAG: key}
        child = context.Process(
            target=_orchestrate,
            args=(call["job"], call.get("assets"), call.get("partition"), tags),
            kwargs={"run_config": call.get("run_config")},
        )
        child.start()
        children.append(child)
        keys.append(key)
    if on_started is not None and children:  # threads only after the forks
        on_started()
    for child in children:
        child.join(600)
    runs = []
    for key in keys:
        (run,) = instance.get_runs(filters=dg.RunsFilter(tags={CALL_TAG: key}))
        runs.append(run)
    return runs


def put_day(number: int, bad_rows: int = BAD_ROWS) -> pd.DataFrame:
    """Day ``number``'s cohort file into ``incoming/`` on S3 (from SHIFT_FROM: older, sicker),
    with ``bad_rows`` rows that break the schema (negative age)."""
    frame = simulate_patients(ROWS, seed=200 + number, id_start=number * 10_000, with_label=False)
    if number >= SHIFT_FROM:
        frame["age"] = (frame["age"] + 25).clip(upper=100)
        frame["avg_glucose_level"] = frame["avg_glucose_level"] * 1.4
    frame.loc[frame.index[:bad_rows], "age"] = -5
    files = load_settings().files
    assert not files.is_local
    files.write_text(files.path("incoming", f"{DAYS[number - 1]}.csv"), frame.to_csv(index=False))
    return frame


class Killer:
    """Kills (SIGKILL) the worker that runs ``step`` in the first running asset-job run as soon
    as the step's body has started there (its STEP_START after the executor's worker event),
    then starts a replacement worker (a new machine joining)."""

    def __init__(self, services: Services, instance: dg.DagsterInstance, step: str) -> None:
        self.services, self.instance, self.step = services, instance, step
        self.killed: str | None = None
        self.run_id: str | None = None
        self.trace: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self.trace.append("started")
        self._thread.start()

    def _watch(self) -> None:
        try:
            self._watch_run()
        except Exception as exc:
            self.trace.append(repr(exc))
            raise

    def _watch_run(self) -> None:
        while not self._stop.is_set() and self.run_id is None:
            runs = self.instance.get_runs(
                filters=dg.RunsFilter(job_name=ASSET_JOB, statuses=[dg.DagsterRunStatus.STARTED]),
                limit=1,
            )
            self.run_id = runs[0].run_id if runs else None
            time.sleep(0.01)
        self.trace.append(f"run {self.run_id}")
        while not self._stop.is_set():
            worker = self._running_on()
            if worker:
                self.services.worker(worker).process.kill()
                self.killed = worker
                self.services.add_worker()
                return
            time.sleep(0.01)

    def _running_on(self) -> str | None:
        """The worker whose attempt at the step has started its body (STEP_START logged)."""
        kinds = {dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.STEP_START}
        records = self.instance.get_records_for_run(self.run_id, of_type=kinds).records
        entries = [r.event_log_entry for r in records if r.event_log_entry.step_key == self.step]
        worker = None
        for entry in entries:
            if entry.dagster_event_type == dg.DagsterEventType.STEP_START and worker:
                return worker
            data = entry.dagster_event.engine_event_data
            if data and WORKER_KEY in data.metadata:
                worker = str(data.metadata[WORKER_KEY].value)
        return None

    def stop(self) -> None:
        """Stop watching (once started; before, nothing to stop)."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(120)


def workers_of_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[dict]]:
    """Step key -> where each of its attempts ran (the executor's engine events), in order."""
    out: dict[str, list[dict]] = defaultdict(list)
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for record in records.records:
        entry = record.event_log_entry
        data = entry.dagster_event.engine_event_data
        if entry.step_key and data and WORKER_KEY in data.metadata:
            out[entry.step_key].append({k: v.value for k, v in data.metadata.items()})
    return out


@pytest.mark.slow  # about three minutes: a real daemon, PostgreSQL, S3 and Dask workers
def test_daily_loop_on_postgres_s3_and_two_dask_workers(
    services: Services, instance: dg.DagsterInstance
) -> None:
    defs = project_defs()
    assert isinstance(instance.run_storage, __import__("dagster_postgres").PostgresRunStorage)
    # The first champion, trained and registered through the workers and the MLflow server.
    (first,) = execute_runs(instance, [{"job": "training_job", "run_config": TRAINING}])
    assert first.status == dg.DagsterRunStatus.SUCCESS, services.logs_tail()

    frames = {DAYS[n - 1]: put_day(n) for n in range(1, N_DAYS + 1)}  # several days at once
    cursors: dict[str, str | None] = defaultdict(lambda: None)
    automation_cursor = None
    retrains: list[dg.DagsterRun] = []
    rescorings: list[dg.DagsterRun] = []
    killer = Killer(services, instance, step="cohort_scores")

    def sensor_tick(sensor) -> dg.SensorResult:  # noqa: ANN001
        data = tick(sensor, instance, cursor=cursors[sensor.name])
        cursors[sensor.name] = data.cursor or cursors[sensor.name]
        return data

    now = dt.datetime.fromisoformat(DAYS[-1]).replace(hour=8, tzinfo=dt.UTC)
    for _ in range(12):  # until the loop settles
        sensor_tick(file_arrivals)
        started = 0
        requests = sensor_tick(champion_rescoring).run_requests
        rescorings += execute_runs(
            instance,
            [
                {
                    "job": ASSET_JOB,
                    "assets": list(r.asset_selection),
                    "partition": r.partition_key,
                    "tags": dict(r.tags),
                }
                for r in requests
            ],
            # The new champion's rescoring: a worker is killed in the middle of the step.
            on_started=killer.start if retrains else None,
        )
        killer.stop()
        started += len(requests)
        requests = sensor_tick(drift_retraining).run_requests
        retrains += execute_runs(
            instance,
            [
                {"job": "training_job", "run_config": TRAINING, "tags": dict(r.tags)}
                for r in requests
            ],
        )
        started += len(requests)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=automation_cursor, evaluation_time=now
        )
        automation_cursor = result.cursor
        by_day: dict[str, list[dg.AssetKey]] = defaultdict(list)
        for item in result.results:
            if item.key.to_user_string() not in LOOP_ASSETS:
                continue  # explanations, label-free estimates: covered by their own tests
            for key in item.true_subset.expensively_compute_partition_keys():
                by_day[key].append(item.key)
        # The days' runs at once: their steps share the two workers.
        execute_runs(
            instance,
            [
                {"job": ASSET_JOB, "assets": assets, "partition": key}
                for key, assets in sorted(by_day.items())
            ],
        )
        started += len(by_day)
        if not started:
            break
        now += dt.timedelta(minutes=1)

    all_runs = instance.get_runs()
    failed = [r for r in all_runs if r.status != dg.DagsterRunStatus.SUCCESS]
    assert not failed, [(r.job_name, r.tags.get("dagster/partition")) for r in failed]
    settings = load_settings()

    # -- every step ran on a worker of the cluster, none in this process --------------------
    homes = {str(w.home): w.name for w in services.workers}
    producer: dict[tuple[str, str | None], str] = {}  # (asset, partition) -> worker, last write
    crossings = []
    for run in sorted(
        all_runs, key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp
    ):
        where = workers_of_steps(instance, run.run_id)
        successes = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS
        ).records
        assert successes
        for record in successes:
            step = record.event_log_entry.step_key
            assert where[step], f"{run.job_name} {step}: no worker recorded"
            last = where[step][-1]
            assert homes[last["stroke_home"]] == last[WORKER_KEY] != ""
            assert last["pid"] != os.getpid()
        partition = run.tags.get("dagster/partition")
        for step, attempts in where.items():
            worker = attempts[-1][WORKER_KEY]
            for upstream in _inputs_of(step):
                made_by = producer.get((upstream, partition if upstream in DAILY else None))
                if made_by is not None and made_by != worker:
                    crossings.append((run.job_name, partition, upstream, step))
            producer[(step, partition if step in DAILY else None)] = worker
    assert crossings, "no step ran on another worker than the one that produced its input"
    print(f"steps on another worker than their input's: {len(crossings)}, e.g. {crossings[:3]}")

    # -- the retraining, its promotion and the rescoring with the killed worker --------------
    assert len(retrains) == 1
    assert retrains[0].status == dg.DagsterRunStatus.SUCCESS
    assert killer.killed is not None, f"no worker killed during the rescoring: {killer.trace}"
    attempts = workers_of_steps(instance, killer.run_id)["cohort_scores"]
    print(
        f"killed {killer.killed} in cohort_scores of {killer_day(instance, killer.run_id)}; "
        f"attempts on {[a[WORKER_KEY] for a in attempts]}"
    )
    assert attempts[0][WORKER_KEY] == killer.killed
    assert attempts[-1][WORKER_KEY] != killer.killed  # the scheduler ran it on another worker
    successes = instance.get_records_for_run(
        killer.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS
    ).records
    assert [r.event_log_entry.step_key for r in successes].count("cohort_scores") == 1
    starts = instance.get_records_for_run(
        killer.run_id, of_type=dg.DagsterEventType.STEP_START
    ).records
    # Its body started twice: on the killed worker, then on the other one.
    assert [r.event_log_entry.step_key for r in starts].count("cohort_scores") == 2
    assert instance.get_run_by_id(killer.run_id).status == dg.DagsterRunStatus.SUCCESS

    # -- nothing lost or duplicated: per day, rows in = scored + quarantined -----------------
    scores = warehouse.query_df(
        "SELECT strftime(cohort_date, '%Y-%m-%d') AS day, patient_id, model_version FROM scores",
        settings=settings,
    )
    quarantine = warehouse.query_df(
        "SELECT strftime(cohort_date, '%Y-%m-%d') AS day, patient_id FROM quarantine "
        "WHERE cohort_date IS NOT NULL",
        settings=settings,
    )
    champion = _registered_version(instance, retrains[0].run_id)
    for key, frame in frames.items():
        day_scores = scores[scores["day"] == key]
        day_quarantine = quarantine[quarantine["day"] == key]
        assert len(day_scores) + len(day_quarantine) == len(frame)
        assert len(day_quarantine) == BAD_ROWS
        assert not day_scores["patient_id"].duplicated().any()
        ids = set(day_scores["patient_id"]) | set(day_quarantine["patient_id"])
        assert ids == set(frame["id"].astype(str))
        assert day_scores["model_version"].nunique() == 1  # one current version per day
    rescored = scores[scores["day"] == killer_day(instance, killer.run_id)]
    assert set(rescored["model_version"]) == {champion}


DAILY = {"daily_cohort", "cohort_scores", "drift_metrics", "performance_metrics"}
# Which produced data each step reads (files, objects, registered models, warehouse days).
INPUTS = {
    "cohort_scores": ["daily_cohort", "registered_model"],
    "drift_metrics": ["cohort_scores", "daily_cohort", "registered_model"],
    "clean_patients": ["raw_patients", "labelled_cohorts"],
    "patient_split": ["clean_patients"],
    "tuned_model": ["patient_split"],
    "model_evaluation": ["tuned_model", "patient_split"],
    "registered_model": ["tuned_model", "model_evaluation", "patient_split"],
}


def _inputs_of(step: str) -> list[str]:
    return INPUTS.get(step, [])


def _registered_version(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        event = record.event_log_entry.asset_materialization
        if event.asset_key == dg.AssetKey("registered_model"):
            return str(event.metadata["version"].value)
    raise AssertionError("the retraining registered no version")


def killer_day(instance: dg.DagsterInstance, run_id: str) -> str:
    return instance.get_run_by_id(run_id).tags["dagster/partition"]


# -- the profile's parts on their own (fast) ------------------------------------------------


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "in_process"),
        ({"STROKE_EXECUTOR": "multiprocess"}, "multiprocess"),
        ({"STROKE_EXECUTOR": "dask", "STROKE_DASK_SCHEDULER": "tcp://10.0.0.5:8786"}, "dask"),
        ({"STROKE_EXECUTOR": "k8s"}, "k8s"),
    ],
)
def test_executor_follows_the_settings(env: dict[str, str], name: str) -> None:
    from stroke_dagster.defs.execution import executor_from_settings, run_scoped_dask_executor

    executor = executor_from_settings(load_settings(env).execution)
    assert executor.name == name
    if name == "dask":  # the run-scoped executor, configured with the scheduler address
        assert executor.executor_creation_fn is run_scoped_dask_executor.executor_creation_fn


def test_unknown_executor_is_one_clear_line() -> None:
    from stroke_dagster.core.settings import SettingsError

    with pytest.raises(SettingsError, match="STROKE_EXECUTOR must be one of in_process"):
        load_settings({"STROKE_EXECUTOR": "celery"})


def test_objects_between_steps_go_through_object_storage(
    stroke_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stroke_dagster.defs.io_manager import ObjectStoreIOManager, io_managers

    assert not io_managers().resources  # local storage: Dagster's default IO manager

    @dg.asset
    def upstream() -> dict:
        return {"frame": pd.DataFrame({"x": [1, 2]}), "note": "made on one worker"}

    @dg.asset
    def downstream(upstream: dict) -> int:
        return int(upstream["frame"]["x"].sum())

    with MotoS3() as s3:
        bucket = s3.create_bucket()
        for name, value in s3_storage_env(s3, bucket).items():
            monkeypatch.setenv(name, value)
        assert "io_manager" in io_managers().resources  # selected by the remote storage
        manager = ObjectStoreIOManager()
        result = dg.materialize([upstream, downstream], resources={"io_manager": manager})
        assert result.success and result.output_for_node("downstream") == 3
        keys = s3.keys(bucket)
    assert "stroke/dagster/io/upstream/__all__.zip" in keys
    assert "stroke/dagster/io/downstream/__all__.zip" in keys
    assert not (stroke_home / "dagster" / "storage").exists()  # nothing on the local disk


def test_the_documented_postgresql_urls_work_as_written(services: Services) -> None:
    """``postgresql://`` without a driver (MLflow's documented form, and dagster-postgres's
    config without ``scheme``) resolves to psycopg 3 under SQLAlchemy 2.1: it is in the lock."""
    import mlflow
    import sqlalchemy
    from dagster_postgres import PostgresRunStorage

    base = f"postgresql://postgres@127.0.0.1:{services.postgres_port}"
    engine = sqlalchemy.create_engine(f"{base}/mlflow")
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    # written through psycopg 3, read back through the profile's explicit psycopg2 URLs
    name = f"probe-{uuid.uuid4().hex[:8]}"
    mlflow.MlflowClient(f"{base}/mlflow").create_experiment(name)
    explicit = base.replace("postgresql://", "postgresql+psycopg2://")
    assert mlflow.MlflowClient(f"{explicit}/mlflow").get_experiment_by_name(name) is not None
    run = dg.DagsterRun(job_name="probe", run_id=str(uuid.uuid4()))
    PostgresRunStorage(postgres_url=f"{base}/dagster").add_run(run)
    assert PostgresRunStorage(postgres_url=f"{explicit}/dagster").has_run(run.run_id)
