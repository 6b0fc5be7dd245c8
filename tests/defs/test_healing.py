"""The daily loop under failure: rollbacks, races, failed retrainings, bad days, the alias.

Sensors tick through Dagster's own ``evaluate_tick`` on a real instance; runs that a tick would
start are created in that instance with their tags (as the daemon does), and their end is
reported through the instance. The run queue is Dagster's own daemon iteration on an instance
configured from the project's ``dagster.yaml``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import dagster as dg
import pytest
import yaml
from _automation import day, drift_days, project_defs, report_scored, tick
from _webhook import Webhook
from dagster._core.test_utils import create_run_for_test

from stroke_dagster.cli import main
from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.automation import PERMANENT_TAG
from stroke_dagster.defs.healing import SCORED_CHECK, unscored_days
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.retraining import drift_retraining
from stroke_dagster.defs.scoring import daily_cohort
from stroke_dagster.defs.sources import champion_rescoring, incoming_cohort
from stroke_dagster.io import arrivals, labels
from stroke_dagster.model import gate, registry
from stroke_dagster.warehouse import store as warehouse

ROOT = Path(__file__).resolve().parents[2]


def start_runs(instance: dg.DagsterInstance, result: dg.SensorResult | object) -> list:
    """The runs a tick's requests become (queued, with their tags), as the daemon makes them."""
    runs = []
    for request in getattr(result, "run_requests", None) or []:
        tags = dict(request.tags)
        if request.partition_key:
            tags["dagster/partition"] = request.partition_key
        if request.run_key:
            tags["dagster/run_key"] = request.run_key
        runs.append(
            create_run_for_test(
                instance,
                job_name=request.job_name or "__ASSET_JOB",
                status=dg.DagsterRunStatus.NOT_STARTED,
                tags=tags,
            )
        )
    return runs


def new_version(settings, source_version: str = "1") -> str:  # noqa: ANN001
    """Another registered version of StrokeRF (the same model files): cheap v2, v3..."""
    client = registry.client(settings)
    source = client.get_model_version(registry.MODEL_NAME, source_version)
    created = client.create_model_version(
        registry.MODEL_NAME, source.source, run_id=source.run_id, tags=source.tags
    )
    return str(created.version)


# ----------------------------------------------------------------------------- rescoring
def test_rollback_rescores_with_the_earlier_version_again(champion_home: Path) -> None:
    settings = load_settings()
    v2 = new_version(settings)
    with dg.instance_for_test() as instance:
        report_scored(instance, day(-1), "1")
        quiet = tick(champion_rescoring, instance)
        assert not quiet.run_requests

        registry.set_alias(v2, registry.CHAMPION, "test: promote v2", settings=settings)
        to_v2 = tick(champion_rescoring, instance, cursor=quiet.cursor)
        (run,) = start_runs(instance, to_v2)
        assert run.tags["stroke/champion"] == v2 and run.tags["dagster/partition"] == day(-1)
        instance.report_run_failed(run)  # a failed rescore ...
        again = tick(champion_rescoring, instance, cursor=to_v2.cursor)
        (retry,) = start_runs(instance, again)  # ... is requested again
        assert retry.tags["stroke/champion"] == v2
        instance.report_run_canceled(retry)
        report_scored(instance, day(-1), v2)

        registry.set_alias("1", registry.CHAMPION, "test: roll back to v1", settings=settings)
        back = tick(champion_rescoring, instance, cursor=again.cursor)
        (rollback,) = start_runs(instance, back)
        assert rollback.tags["stroke/champion"] == "1"
        assert json.loads(back.cursor)["version"] == "1"


def test_failed_rescores_stop_after_the_bounded_attempts(champion_home: Path) -> None:
    settings = load_settings()
    v2 = new_version(settings)
    with dg.instance_for_test() as instance:
        report_scored(instance, day(-1), "1")
        registry.set_alias(v2, registry.CHAMPION, "test", settings=settings)
        cursor = None
        for _ in range(2):
            result = tick(champion_rescoring, instance, cursor=cursor, max_heal_attempts=2)
            cursor = result.cursor
            for run in start_runs(instance, result):
                instance.report_run_failed(run)
        final = tick(champion_rescoring, instance, cursor=cursor, max_heal_attempts=2)
        assert not final.run_requests
        assert "failed 2 time(s); gave up" in final.skip_message


def test_rescoring_waits_for_a_run_of_the_same_day(champion_home: Path) -> None:
    """An automation run still scoring the day with the old champion: no rescore beside it;
    once it ends, the day (now on the old version) is rescored with the new one."""
    settings = load_settings()
    v2 = new_version(settings)
    with dg.instance_for_test() as instance:
        report_scored(instance, day(-1), "1")
        running = create_run_for_test(
            instance,
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": day(-1), "stroke/trigger": "automation"},
        )
        registry.set_alias(v2, registry.CHAMPION, "test", settings=settings)
        waiting = tick(champion_rescoring, instance)
        assert not waiting.run_requests
        assert f"{day(-1)} waits for run {running.run_id[:8]}" in waiting.skip_message
        report_scored(instance, day(-1), "1")  # the automation run wrote v1 last ...
        instance.report_run_failed(running)  # ... and ended
        after = tick(champion_rescoring, instance, cursor=waiting.cursor)
        (rescore,) = start_runs(instance, after)
        assert rescore.tags["stroke/champion"] == v2


def test_every_instance_file_runs_one_run_per_day_and_heals() -> None:
    """The instance Dagster builds from the project's dagster.yaml (and the production file):
    one run at a time per day, one step at a time per pool, run monitoring through the
    launcher, run retries of crashed runs only."""
    from stroke_dagster.defs.launcher import MonitoredRunLauncher

    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "dagster.production.yaml"):
        config = yaml.safe_load(path.read_text())
        overrides = {k: config[k] for k in ("concurrency", "run_monitoring", "run_retries")}
        overrides["run_launcher"] = config["run_launcher"]
        with dg.instance_for_test(overrides=overrides) as instance:
            limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
            assert {
                "key": "dagster/partition",
                "value": {"applyLimitPerUniqueValue": True},
                "limit": 1,
            } in limits
            assert instance.global_op_concurrency_default_limit == 1
            assert isinstance(instance.run_launcher, MonitoredRunLauncher)
            assert instance.run_launcher.supports_check_run_worker_health
            assert instance.run_monitoring_enabled and instance.run_retries_enabled
            assert instance.run_retries_max_retries >= 1
            assert not instance.run_retries_retry_on_asset_or_op_failure


# ---------------------------------------------------------------------------- retraining
def _failed_training(instance: dg.DagsterInstance, request: dg.RunRequest) -> None:
    (run,) = start_runs(instance, dg.SensorResult(run_requests=[request]))
    instance.report_run_failed(run)


def test_a_failed_retraining_spends_neither_window_nor_cooldown(champion_home: Path) -> None:
    drift_days(".xxx")
    settings = {"retrain_drifted_days": 3, "retrain_window_days": 4}
    with dg.instance_for_test() as instance:
        first = tick(drift_retraining, instance, **settings)
        (request,) = first.run_requests
        _failed_training(instance, request)
        second = tick(drift_retraining, instance, cursor=first.cursor, **settings)
        (retry,) = second.run_requests  # same window, no cooldown: tried again
        assert retry.tags["stroke/retrain_window"] == request.tags["stroke/retrain_window"]
        assert retry.run_key != request.run_key and retry.run_key.endswith("-a2")
        (run,) = start_runs(instance, second)
        # the second attempt succeeds: now the window is used and the cooldown runs
        instance.run_storage.handle_run_event(
            run.run_id,
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_SUCCESS.value,
                job_name=run.job_name,
                message="done",
            ),
        )
        third = tick(drift_retraining, instance, cursor=second.cursor, **settings)
        assert not third.run_requests and f"counting days after {day(-1)}" in third.skip_message


def test_retraining_gives_up_and_alerts_after_its_attempts(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drift_days("xxx")
    settings = {"retrain_drifted_days": 3, "retrain_window_days": 3, "retrain_max_attempts": 2}
    with Webhook() as hook, dg.instance_for_test() as instance:
        monkeypatch.setenv("STROKE_ALERT_WEBHOOK", hook.url)
        cursor = None
        for _ in range(2):
            result = tick(drift_retraining, instance, cursor=cursor, **settings)
            cursor = result.cursor
            (request,) = result.run_requests
            _failed_training(instance, request)
        for _ in range(2):  # given up: no request, one alert however many ticks
            result = tick(drift_retraining, instance, cursor=cursor, **settings)
            cursor = result.cursor
            assert not result.run_requests and "failed 2 time(s)" in result.skip_message
        texts = [json.loads(r["body"])["text"] for r in hook.requests]
        assert len(texts) == 1 and "failed 2 time(s)" in texts[0]


# --------------------------------------------------------------------------- unscored days
def _arrive(instance: dg.DagsterInstance, key: str, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            incoming_cohort.key, partition=key, tags={"dagster/data_version": version}
        )
    )


def test_an_unscored_day_fails_its_check_alerts_once_and_is_requested_again(
    champion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"unscored_after_minutes": 1e-4, "max_heal_attempts": 2}
    with Webhook() as hook, dg.instance_for_test() as instance:
        monkeypatch.setenv("STROKE_ALERT_WEBHOOK", hook.url)
        _arrive(instance, day(-1), "v-a")
        first = tick(unscored_days, instance, **settings)
        (check,) = [e for e in first.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert check.check_name == SCORED_CHECK and not check.passed
        assert check.metadata["day"].value == day(-1)
        (run,) = start_runs(instance, first)
        assert run.tags["stroke/trigger"] == "heal"
        waiting = tick(unscored_days, instance, cursor=first.cursor, **settings)
        assert not waiting.run_requests and "under way" in waiting.skip_message
        instance.report_run_failed(run)
        cursor = waiting.cursor
        second = tick(unscored_days, instance, cursor=cursor, **settings)
        for again in start_runs(instance, second):
            instance.report_run_failed(again)
        given_up = tick(unscored_days, instance, cursor=second.cursor, **settings)
        assert not given_up.run_requests and "gave up after 2" in given_up.skip_message
        texts = [json.loads(r["body"])["text"] for r in hook.requests]
        assert len(texts) == 1 and day(-1) in texts[0]

        report_scored(instance, day(-1), "1")  # scored at last (by hand): the check passes
        healed = tick(unscored_days, instance, cursor=given_up.cursor, **settings)
        (passed,) = [e for e in healed.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert passed.passed and passed.metadata["day"].value == day(-1)


def test_a_permanently_bad_day_is_reported_and_not_retried(champion_home: Path) -> None:
    """A file whose every row is unusable: the step is not retried, the run is tagged, the
    healer reports the day and waits for a new file instead of requesting it again."""
    key = day(-1)
    incoming = champion_home / "incoming"
    incoming.mkdir(exist_ok=True)
    (incoming / f"{key}.csv").write_text("name,colour\nx,blue\n")
    settings = {"unscored_after_minutes": 1e-4}
    with dg.instance_for_test() as instance:
        _arrive(instance, key, "v-bad")
        result = dg.materialize(
            [daily_cohort],
            partition_key=key,
            resources={"stroke": StrokeSettings()},
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        failure = result.get_step_failure_events()[0]
        assert f"incoming/{key}.csv:" in failure.step_failure_data.user_failure_data.description
        assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert instance.get_run_by_id(result.run_id).tags[PERMANENT_TAG] == "daily_cohort"

        data = tick(unscored_days, instance, **settings)
        assert not data.run_requests
        assert f"{key}: daily_cohort failed on its input; waiting for a new file" in (
            data.skip_message
        )
        (check,) = [e for e in data.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert not check.passed

        _arrive(instance, key, "v-fixed")  # a corrected file: the day is requested again
        fixed = tick(unscored_days, instance, cursor=data.cursor, **settings)
        (request,) = fixed.run_requests
        assert request.partition_key == key and request.tags["stroke/file_version"] == "v-fixed"


# ------------------------------------------------------------------------------ the alias
def test_the_alias_moves_only_if_the_judged_champion_is_still_champion(
    champion_home: Path,
) -> None:
    settings = load_settings()
    v2, v3 = new_version(settings), new_version(settings)
    with pytest.raises(registry.ChampionChangedError):
        registry.set_alias(
            v3, registry.CHAMPION, "judged against v2", settings=settings, expected_champion=v2
        )
    assert registry.resolve_alias(registry.CHAMPION, settings=settings) == "1"
    registry.set_alias(
        v3, registry.CHAMPION, "judged against v1", settings=settings, expected_champion="1"
    )
    assert registry.resolve_alias(registry.CHAMPION, settings=settings) == v3


def test_racing_gates_rejudge_against_the_new_champion(champion_home: Path) -> None:
    """Gate A judges v2 against v1; meanwhile gate B makes v3 champion. A's compare-and-set
    fails and A decides again, against v3."""
    settings = load_settings()
    v2, v3 = new_version(settings), new_version(settings)
    judged_against: list[str | None] = []

    def decide_a() -> gate.GateVerdict:
        champion = registry.resolve_alias(registry.CHAMPION, settings=settings)
        judged_against.append(champion)
        if len(judged_against) == 1:  # gate B wins the race while A is judging
            gate_b = threading.Thread(
                target=registry.set_alias,
                args=(v3, registry.CHAMPION, "gate B"),
                kwargs={"settings": settings, "expected_champion": "1"},
            )
            gate_b.start()
            gate_b.join()
        return gate.GateVerdict(
            version=v2,
            alias=registry.CHAMPION,
            champion_version=champion,
            criteria=(),
            n_unseen=0,
            n_unseen_events=0,
            rule="test",
        )

    verdict = gate.move_alias(decide_a, settings)
    assert judged_against == ["1", v3]
    assert verdict.champion_version == v3
    assert registry.resolve_alias(registry.CHAMPION, settings=settings) == v2


def test_the_alias_lock_admits_one_holder(stroke_home: Path) -> None:
    settings = load_settings()
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with registry.alias_lock(settings):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(10)
    try:
        with pytest.raises(TimeoutError), registry.alias_lock(settings, timeout=0.5):
            pass
    finally:
        release.set()
        thread.join()
    with registry.alias_lock(settings, timeout=5):
        pass


# --------------------------------------------------------------------------- day names
@pytest.mark.parametrize(
    ("name", "day_"),
    [("2026-03-02", "2026-03-02"), ("2026-W10-1", None), ("20260302", None), ("2026-3-2", None)],
)
def test_only_plain_dates_name_a_day(name: str, day_: str | None) -> None:
    assert arrivals.parse_day(name) == day_


def test_week_dates_are_skipped_for_cohorts_and_labels(stroke_home: Path) -> None:
    settings = load_settings()
    for folder in ("incoming", "labels"):
        (stroke_home / folder).mkdir(exist_ok=True)
        (stroke_home / folder / "2026-W10-1.csv").write_text("id,stroke\n1,0\n")
        (stroke_home / folder / "2026-03-03.csv").write_text("id,stroke\n1,0\n")
    scan = arrivals.scan(
        stroke_home / "incoming",
        (".csv",),
        first_day=dt.date(2026, 1, 1),
        last_day=dt.date(2026, 12, 31),
    )
    assert [f.day for f in scan.files] == ["2026-03-03"]
    assert "not a day" in scan.skipped["2026-W10-1.csv"]
    assert labels.labelled_days(settings) == ["2026-03-03"]


# ------------------------------------------------------------------ stroke score vs Dagster
def _write_cohort(path: Path, n: int = 30) -> None:
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    write_patients(simulate_patients(n, seed=5).drop(columns=["stroke"]), path)


def test_stroke_score_refuses_a_day_the_loop_manages(champion_home: Path, capsys) -> None:  # noqa: ANN001
    settings = load_settings()
    path = champion_home / "cohort.csv"
    _write_cohort(path)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        _arrive(instance, day(-1), "v-a")
    code = main(["score", "--input", str(path), "--cohort-date", day(-1)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is scored by the daily loop" in err and len(err.splitlines()) == 1
    assert (
        not warehouse.exists(settings)
        or warehouse.query_df("SELECT count(*) AS n FROM scores", settings=settings)["n"].item()
        == 0
    )


def test_stroke_score_tells_dagster_of_the_day_it_wrote(champion_home: Path, capsys) -> None:  # noqa: ANN001
    settings = load_settings()
    path = champion_home / "cohort.csv"
    _write_cohort(path)
    assert main(["score", "--input", str(path), "--cohort-date", day(-2)]) == 0
    capsys.readouterr()
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("cohort_scores"), asset_partitions=[day(-2)]
            ),
            limit=1,
        ).records[0]
        assert record.asset_materialization.metadata["model_version"].value == "1"
        # the automation then checks that day's drift, like any scored day
        result = dg.evaluate_automation_conditions(
            defs=project_defs(),
            instance=instance,
            asset_selection=dg.AssetSelection.assets("drift_metrics"),
        )
        requested = [
            key
            for item in result.results
            for key in item.true_subset.expensively_compute_partition_keys()
        ]
        assert day(-2) in requested


def test_stroke_score_writes_nothing_when_dagster_cannot_be_asked(champion_home: Path) -> None:
    """The instance's configuration is broken: asking it fails, and the day is not written
    (it might be the loop's)."""
    settings = load_settings()
    path = champion_home / "cohort.csv"
    _write_cohort(path)
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").write_text("run_storage: [not, a, mapping\n")
    with pytest.raises(Exception, match="run_storage|mapping|yaml|YAML"):  # noqa: PT011 - Dagster's
        main(["score", "--input", str(path), "--cohort-date", day(-3)])
    assert (
        not warehouse.exists(settings)
        or warehouse.query_df("SELECT count(*) AS n FROM scores", settings=settings)["n"].item()
        == 0
    )


# ---------------------------------------------------------------------- warehouse versions
def test_a_commit_refused_by_a_concurrent_writer_of_the_day_is_made_again(
    stroke_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same-day writers are ordered by Delta's conflict detection, not by a clock: a commit
    prepared on a snapshot another writer of the day has since changed is refused, and the
    writer commits again on the new version (the last commit is the current day)."""
    import pandas as pd

    wh = warehouse.Warehouse.from_settings(load_settings())
    wh.ensure()
    rows = pd.DataFrame(
        {"row_number": [1, 2], "patient_id": ["1", "2"], "reason": ["x", "y"], "record": ["{}"] * 2}
    ).assign(quarantined_at=pd.Timestamp("2026-03-02T01:00:00Z"))
    first = wh.stage("quarantine", "2026-03-02", rows, source="test")
    second = wh.stage("quarantine", "2026-03-02", rows.head(1), source="test")
    stale = wh.table("quarantine")  # the snapshot `first` is prepared on ...
    wh.commit(second)  # ... then another writer commits the same day
    loads = []
    real_table = warehouse.Warehouse.table

    def snapshot(self: warehouse.Warehouse, table: str, version: int | None = None):  # noqa: ANN202
        loads.append(table)
        return stale if len(loads) == 1 else real_table(self, table, version)

    with monkeypatch.context() as patch:
        patch.setattr(warehouse.Warehouse, "table", snapshot)
        version = wh.commit(first)
    assert len(loads) == 2  # refused once on the stale snapshot, committed on the new one
    history = wh.history("quarantine", 2)
    assert [c["version"] for c in history] == [version, version - 1]
    got = warehouse.query_df("SELECT count(*) AS n FROM quarantine", settings=load_settings())
    assert got["n"].item() == 2  # the last commit is the day, whole


def test_an_unreachable_object_store_is_an_outage_not_a_missing_file(
    stroke_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object store that does not answer fails the step for its retry policy; only a store
    that answers "no such key" makes a missing cohort file (a permanent failure)."""
    import socket

    from stroke_dagster.core.errors import InputError
    from stroke_dagster.scoring import batch as scoring

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("STROKE_STORAGE_URL", "s3://stroke-outage/stroke")
    monkeypatch.setenv("STROKE_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(Exception) as outage:
        scoring.validate_day(load_settings(), "2026-03-02")
    assert not isinstance(outage.value, InputError), outage.value
