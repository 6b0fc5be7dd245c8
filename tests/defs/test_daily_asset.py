"""``daily_asset`` gives a daily asset the loop's conventions, and every daily asset has them."""

import dagster as dg

from stroke_dagster.defs.automation import TRANSIENT_RETRY, on_new_upstream_data
from stroke_dagster.defs.daily import daily_asset
from stroke_dagster.defs.partitions import daily_partitions


@daily_asset(
    group="demo",
    kinds={"python"},
    deps=["upstream_day"],
    description="A day of demo rows.",
    checks={"rows_positive": "The day has rows."},
)
def demo_day(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"day": context.partition_key},
        check_results=[dg.AssetCheckResult(check_name="rows_positive", passed=True)],
    )


def test_the_helper_supplies_the_daily_conventions() -> None:
    key = dg.AssetKey("demo_day")
    spec = demo_day.get_asset_spec(key)
    assert demo_day.partitions_def == daily_partitions
    assert demo_day.op.retry_policy == TRANSIENT_RETRY
    assert spec.automation_condition == on_new_upstream_data()
    assert spec.group_name == "demo" and spec.owners == ["team:ml-platform"]
    assert {dep.asset_key for dep in spec.deps} == {dg.AssetKey("upstream_day")}
    (check,) = demo_day.check_specs
    assert check.key == dg.AssetCheckKey(key, "rows_positive")
    assert check.partitions_def == daily_partitions and check.description == "The day has rows."


def test_an_asset_may_replace_the_default_condition() -> None:
    condition = on_new_upstream_data(ignore=[dg.AssetKey("upstream_day")])

    @daily_asset(
        group="demo",
        kinds={"python"},
        deps=["upstream_day"],
        description="Another day.",
        automation_condition=condition,
        pool="one_at_a_time",
    )
    def quiet_day() -> None:
        return None

    assert quiet_day.get_asset_spec(dg.AssetKey("quiet_day")).automation_condition == condition
    assert quiet_day.op.pool == "one_at_a_time" and not list(quiet_day.check_specs)


def test_a_day_materializes_with_its_daily_check() -> None:
    day = daily_partitions.get_last_partition_key()
    upstream = dg.AssetSpec("upstream_day", partitions_def=daily_partitions)
    result = dg.materialize([upstream, demo_day], partition_key=day, selection=[demo_day])
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.check_name == "rows_positive"
    (event,) = result.asset_materializations_for_node("demo_day")
    assert event.partition == day


def test_every_daily_asset_of_the_loop_has_the_conventions() -> None:
    from stroke_dagster.definitions import defs

    graph = defs().resolve_asset_graph()
    daily = [
        graph.get(key)
        for key in graph.materializable_asset_keys
        if graph.get(key).partitions_def == daily_partitions
    ]
    assert len(daily) >= 10
    for node in daily:
        name = node.key.to_user_string()
        assert node.assets_def.op.retry_policy == TRANSIENT_RETRY, name
        assert node.automation_condition is not None, name
        assert node.owners == ["team:ml-platform"], name
        for check in node.assets_def.check_specs:
            assert check.partitions_def == daily_partitions, f"{name}:{check.name}"
