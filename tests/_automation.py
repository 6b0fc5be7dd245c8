"""Shared helpers of the automation tests: days, cohort and label files, sensor ticks as the
daemon runs them, automation evaluations, and the project's loaded definitions."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pandas as pd

from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.scoring import cohort_scores
from stroke_dagster.simulate.generator import simulate_patients, write_patients
from stroke_dagster.warehouse import store as warehouse

TODAY = dt.datetime.now(dt.UTC).date()


def day(offset: int) -> str:
    return (TODAY + dt.timedelta(days=offset)).isoformat()


def write_cohort(home: Path, key: str, n: int = 50, seed: int = 0) -> Path:
    path = home / "incoming" / f"{key}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_patients(simulate_patients(n, seed=seed, with_label=False), path)
    return path


def write_labels(home: Path, key: str, ids: Iterable[int] = (1, 2, 3)) -> Path:
    path = home / "labels" / f"{key}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": list(ids), "stroke": 0}).to_csv(path, index=False)
    return path


def tick(sensor, instance: dg.DagsterInstance, cursor: str | None = None, **settings):  # noqa: ANN001, ANN201
    """One tick as the daemon runs it; its reported events are stored like the daemon does."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"stroke": StrokeSettings(**settings)},
        definitions=project_defs(),
    )
    data = sensor.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return data


def requested(result: dg.EvaluateAutomationConditionsResult) -> dict[str, list[str]]:
    """Requested partitions per asset of one automation evaluation."""
    out = {}
    for item in result.results:
        if item.true_subset.size:
            keys = item.true_subset.expensively_compute_partition_keys()
            out[item.key.to_user_string()] = sorted(k for k in keys if k is not None)
    return out


@functools.cache
def project_defs() -> dg.Definitions:
    from stroke_dagster.definitions import defs as load

    return load()


def report_scored(instance: dg.DagsterInstance, key: str, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            cohort_scores.key, partition=key, metadata={"model_version": version}
        )
    )


def _summary(is_drift: bool, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "is_drift": is_drift,
                "feature_drift": is_drift,
                "missingness_drift": False,
                "prediction_drift": False,
                "n_tests": 11,
                "n_drifted": int(is_drift),
                "share_drifted": is_drift / 11,
                "drifted_features": "age" if is_drift else "",
                "n_cohort": 500,
                "backend": "scipy",
                "correction": "bonferroni",
                "alpha": 0.05,
                "reference_model_version": version,
                "run_id": None,
                "computed_at": dt.datetime.now(dt.UTC),
            }
        ]
    )


def drift_days(flags: str, version: str = "1") -> None:
    for offset, flag in enumerate(flags):
        key = day(offset - len(flags))
        warehouse.replace_partition(
            "drift_summary", key, _summary(flag == "x", version), settings=load_settings()
        )
