"""The decorator of every asset of the daily loop, so what they share is said once.

A daily asset has one partition per UTC day (:data:`.partitions.daily_partitions`), runs by
itself when its upstream data change (:func:`.automation.on_new_upstream_data`, unless the asset
passes another condition), retries a transient failure (:data:`.automation.TRANSIENT_RETRY`),
is owned by the platform team, and records each of its checks once per day, so a bad day stays
visible beside the good ones instead of being replaced by the next day's verdict.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from stroke_dagster.defs.automation import TRANSIENT_RETRY, on_new_upstream_data
from stroke_dagster.defs.partitions import daily_partitions

OWNERS = ("team:ml-platform",)


def daily_asset(
    *,
    group: str,
    kinds: set[str],
    deps: Sequence[Any],
    description: str,
    metadata: Mapping[str, Any] | None = None,
    automation_condition: dg.AutomationCondition | None = None,
    checks: Mapping[str, str] | None = None,
    pool: str | None = None,
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``@dg.asset`` for a daily asset named after the function.

    ``automation_condition`` defaults to :func:`.automation.on_new_upstream_data`; ``checks``
    maps the name of each of the asset's checks to its description (one verdict per day).
    """

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        check_specs = [
            dg.AssetCheckSpec(
                name, asset=fn.__name__, partitions_def=daily_partitions, description=text
            )
            for name, text in (checks or {}).items()
        ]
        return dg.asset(
            partitions_def=daily_partitions,
            group_name=group,
            kinds=kinds,
            owners=list(OWNERS),
            deps=deps,
            metadata=metadata,
            automation_condition=automation_condition or on_new_upstream_data(),
            retry_policy=TRANSIENT_RETRY,
            pool=pool,
            check_specs=check_specs or None,
            description=description,
        )(fn)

    return decorate
