"""Where the steps of a run execute, chosen by the ``execution`` settings (no code fork).

* ``in_process`` (default): every step in the run's own process. A day's run holds a few short
  steps (validate, score, drift, performance); a process per step would re-import the platform
  for each of them, which costs more than the steps themselves.
* ``multiprocess``: one process per step on the run's machine.
* ``k8s``: one Kubernetes Job per step (dagster-k8s; the runs launched in the cluster by its
  ``K8sRunLauncher``).
* ``dask``: each step is a task on a Dask ``distributed`` cluster (``STROKE_DASK_SCHEDULER``, or a
  local cluster per run without it). Workers are long-lived ``dask worker`` processes on any
  machine; a worker that dies mid-step has its task rescheduled on another worker by the
  scheduler. Steps hand objects to each other through the object-store IO manager
  (:mod:`.io_manager`), never through a worker's disk.

The ``dask`` executor here is dagster-dask 0.29's, changed where it fails with this platform:

* the Dask task of a step is keyed by the run id too: dagster-dask keys it by job and step only,
  so two concurrent runs of one job (two days of the daily loop) would share one task on the
  scheduler and the second run's step would never execute (dagster issue 21418);
* a task's arguments travel in one object: the locked dask (2026.8) parses task arguments and
  iterates tuples, and a ``DagsterRun`` (a named tuple whose fields refuse iteration) fails the
  submission of every step;
* the plan runs one level at a time and tasks take no upstream task as a dependency, so a worker
  that dies loses only the step it runs (rescheduled elsewhere), and the steps after a failed
  step are not executed (dagster-dask runs them, to fail on their missing inputs);
* each step first records where it runs: an engine event with the worker's name, host, process
  id and ``STROKE_HOME``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.instance.ref import InstanceRef
from dagster._utils import iterate_with_context
from dagster_dask.executor import (
    DaskExecutor,
    dask_executor,
    get_dask_resource_requirements,
    query_on_dask_worker,
)

from stroke_dagster.core.settings import ExecutionSettings, load_settings

# Engine-event metadata key naming the Dask worker a step ran on.
WORKER_KEY = "dask_worker"


@dataclass(frozen=True)
class _StepTask:
    """The Dask task of one step: what dagster-dask passes as task arguments, held in one object.

    The locked dask (2026.8) parses task arguments recursively and iterates tuples, and a
    ``DagsterRun`` is a named tuple whose fields refuse iteration: passed as plain arguments (as
    dagster-dask does) they fail the submission. The task object itself is the callable.
    """

    recon_job: Any
    dagster_run: dg.DagsterRun
    run_config: Mapping[str, object] | None
    step_key: str
    instance_ref: InstanceRef
    known_state: KnownExecutionState | None

    def __call__(self) -> Sequence[DagsterEvent]:
        """On the worker: record where the step runs, then execute it (dagster-dask's body)."""
        from distributed import get_worker

        worker = get_worker()
        try:
            home = str(load_settings().home)
        except Exception as exc:  # a malformed setting fails the step itself, with its message
            home = f"<{exc}>"
        host, pid = socket.gethostname(), os.getpid()
        with dg.DagsterInstance.from_ref(self.instance_ref) as instance:
            instance.report_engine_event(
                f"Step {self.step_key} runs on Dask worker {worker.name} "
                f"({host}, pid {pid}, STROKE_HOME {home})",
                self.dagster_run,
                EngineEventData(
                    metadata={
                        WORKER_KEY: str(worker.name),
                        "worker_address": str(worker.address),
                        "hostname": host,
                        "pid": pid,
                        "stroke_home": home,
                    }
                ),
                step_key=self.step_key,
            )
        return query_on_dask_worker(
            [],
            self.recon_job,
            self.dagster_run,
            self.run_config,
            [self.step_key],
            self.instance_ref,
            self.known_state,
        )


class RunScopedDaskExecutor(DaskExecutor):
    """dagster-dask's executor with run-scoped task keys and the worker of each step recorded."""

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        if self.cluster_type not in ("existing", "local"):
            yield from super().execute(plan_context, execution_plan)
            return
        import dask.distributed

        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError(
                "Dask execution requires a persistent Dagster instance (DAGSTER_HOME)"
            )
        if self.cluster_type == "existing":
            cluster: Any = self.cluster_configuration["address"]
        else:
            cluster = dask.distributed.LocalCluster(**self.build_dict(plan_context.job_name))
        try:
            with dask.distributed.Client(cluster) as client:
                yield from self._execute_levels(client, plan_context, execution_plan)
        finally:
            if not isinstance(cluster, str):  # this run's own local cluster
                cluster.close()

    def _execute_levels(
        self, client: Any, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        """One level of the plan at a time, its steps in parallel.

        A task gets no upstream task as a dependency: the results of finished steps are never
        needed again on a worker, so a worker that dies loses its running step only (rescheduled
        on another worker), never makes the scheduler recompute finished steps that it held.
        """
        import dask.distributed
        from dagster._core.errors import raise_execution_interrupts

        run = plan_context.dagster_run
        instance_ref = plan_context.instance.get_ref()
        failed: set[str] = set()
        for level in execution_plan.get_steps_to_execute_by_level():
            futures = {}
            for step in level:
                upstream = failed & set(step.get_execution_dependency_keys())
                if upstream:
                    failed.add(step.key)
                    plan_context.instance.report_engine_event(
                        f"Step {step.key} not executed: upstream step {sorted(upstream)[0]} failed",
                        run,
                        step_key=step.key,
                    )
                    continue
                task = _StepTask(
                    plan_context.reconstructable_job,
                    run,
                    plan_context.run_config,
                    step.key,
                    instance_ref,
                    execution_plan.known_state,
                )
                futures[step.key] = client.submit(
                    task,
                    key=f"{plan_context.job_name}.{step.key}.{run.run_id}",
                    resources=get_dask_resource_requirements(step.tags),
                    pure=False,
                )
            by_future = {future.key: key for key, future in futures.items()}
            completed = dask.distributed.as_completed(list(futures.values()), with_results=True)
            for future, events in iterate_with_context(raise_execution_interrupts, completed):
                if not any(event.is_step_success for event in events):
                    failed.add(by_future[future.key])
                yield from events
                future.release()


@dg.executor(
    name="dask",
    requirements=dg.multiple_process_executor_requirements(),
    config_schema=dask_executor.config_schema,
)
def run_scoped_dask_executor(init_context: dg.InitExecutorContext) -> RunScopedDaskExecutor:
    """Steps as tasks of a Dask cluster (``cluster: {existing: {address: ...}}`` or ``local``)."""
    ((cluster_type, cluster_config),) = init_context.executor_config["cluster"].items()
    return RunScopedDaskExecutor(cluster_type, cluster_config)


def executor_from_settings(execution: ExecutionSettings) -> dg.ExecutorDefinition:
    """The executor the ``execution`` settings select."""
    if execution.executor == "multiprocess":
        return dg.multiprocess_executor
    if execution.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if execution.executor == "dask":
        cluster: dict[str, Any] = (
            {"existing": {"address": execution.dask_scheduler}}
            if execution.dask_scheduler
            else {"local": {}}
        )
        return run_scoped_dask_executor.configured({"cluster": cluster}, name="dask")
    return dg.in_process_executor


@dg.definitions
def execution() -> dg.Definitions:
    """The code location's default executor, from ``STROKE_EXECUTOR``/``STROKE_DASK_SCHEDULER``."""
    return dg.Definitions(executor=executor_from_settings(load_settings().execution))
