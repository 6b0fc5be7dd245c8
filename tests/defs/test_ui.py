"""The Dagster UI shows the loop's states (slow: ``dagster dev`` and Debian's Chromium).

One setup for the module: a trained champion in a temporary STROKE_HOME, ``dagster dev`` (its
daemon runs the sensors and the automation) on a temporary DAGSTER_HOME with the project's
``dagster.yaml``, and cohort files dropped into ``incoming/``: three good days (the middle one
an older, sicker population that drifts) and a fourth day whose file lacks the ``age`` column,
so its run fails. Once the instance holds those states, Playwright opens the pages below in
headless Chromium, waits for their content, checks it and saves a full-page screenshot of each
into ``tests/ui-screenshots/`` (git-ignored).

What each page must show is in the dicts below: ``texts`` are case-sensitive substrings,
``exact`` whole texts of an element, ``rows`` metadata labels and a substring of their table
row. ``{day}``, ``{run_id}`` and the like are filled from the instance.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import _ui  # tests/ is on sys.path under pytest
import dagster as dg
import pytest

from stroke_dagster.defs.healing import IN_PROGRESS

pytestmark = pytest.mark.slow

CHAMPION = {
    "path": "/assets/champion_model",
    "texts": ["champion_model", "Latest observation", "observed by the champion_rescoring sensor"],
    # the champion at a glance: its observation's metadata on the asset's first screen
    "rows": {
        "version": "{version}",
        "gate_reason": "above the floor",
        "holdout_roc_auc": "0.",
        "champion_since": "20",
        "mlflow_version": "",
    },
}
SCORED_DAY = {
    "path": "/assets/cohort_scores?view=partitions&partition={day}",
    "texts": ["cohort_scores", "{day}"],
    "exact": ["Materialized"],
    "rows": {
        "rows_scored": "{rows_scored}",
        "model_version": "{model_version}",
        "high_risk_pct": "",
    },
}
DRIFTED_DAY = {
    "path": "/assets/drift_metrics?view=partitions&partition={day}",
    # the partition bar starts at the first day seen: five days (today open), not a year
    "texts": ["drift_metrics", "{day}", "5 Partitions Selected"],
    "exact": ["Materialized"],
    "rows": {
        "is_drift": "true",
        "drifted_features": "age",
        "rows_checked": "{rows}",
        "drifted_tests_pct": "",
    },
}
FAILED_RUN = {
    "path": "/runs/{run_id}",
    "texts": [
        "partition: {day}",
        "daily_cohort",
        "incoming/{day}.csv: missing required column(s): age",
    ],
    "exact": ["Failure"],
}

ROWS = (301, 302, 303)  # a different size per good day: rows_scored names the day it belongs to
SHIFTED = 1  # the good day (index) whose population drifts
LOOP_TIMEOUT = 600.0


def _metadata(event: dg.AssetMaterialization | dg.AssetObservation) -> dict[str, object]:
    return {key: value.value for key, value in event.metadata.items()}


def _latest(instance: dg.DagsterInstance, asset: str, day: str) -> dict[str, object]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(asset), asset_partitions=[day]), limit=1
    ).records
    return _metadata(records[0].asset_materialization)


@pytest.fixture(scope="module")
def loop(_champion_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``dagster dev`` on a copy of the trained STROKE_HOME, after the loop handled four days."""
    from stroke_dagster.simulate.generator import simulate_patients

    base = tmp_path_factory.mktemp("ui")
    home, dagster_home = base / "home", base / "dagster-home"
    shutil.copytree(_champion_home, home, ignore=shutil.ignore_patterns("warehouse*"))
    dagster_home.mkdir()
    shutil.copy(_ui.ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "STROKE_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    # STROKE_GO_LIVE unset: the partitions start at the first day the platform saw
    for name in ("MLFLOW_TRACKING_URI", "STROKE_API_KEY", "STROKE_ALERT_WEBHOOK", "STROKE_GO_LIVE"):
        env.pop(name, None)
    with dg.DagsterInstance.from_config(str(dagster_home)):
        pass  # the instance's storage exists before the webserver and the daemon open it
    dev = _ui.DagsterDev(env, base / "dagster-dev.log")
    try:
        # The files are there when Dagster starts, as after a weekend: the partitions begin at
        # the first of them, and the file_arrivals sensor reports them on its first tick.
        good = [_ui.day(offset) for offset in (-4, -3, -2)]
        bad = _ui.day(-1)
        for number, (day, rows) in enumerate(zip(good, ROWS, strict=True)):
            frame = simulate_patients(rows, seed=40 + number, id_start=(number + 1) * 100_000)
            frame = frame.drop(columns="stroke")
            _ui.drop_cohort(home, f"{day}.csv", _ui.shifted(frame) if number == SHIFTED else frame)
        broken = simulate_patients(300, seed=50, id_start=900_000).drop(columns=["stroke", "age"])
        _ui.drop_cohort(home, f"{bad}.csv", broken)
        dev.start()
        dev.wait_ready()

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:

            def settled() -> bool:
                scored = instance.get_materialized_partitions(dg.AssetKey("cohort_scores"))
                checked = instance.get_materialized_partitions(dg.AssetKey("drift_metrics"))
                failed = instance.get_runs(
                    dg.RunsFilter(
                        tags={"dagster/partition": bad}, statuses=[dg.DagsterRunStatus.FAILURE]
                    )
                )
                observed = instance.fetch_observations(dg.AssetKey("champion_model"), limit=1)
                busy = instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS)))
                return (
                    all(day in scored and day in checked for day in good)
                    and bool(failed)
                    and bool(observed.records)
                    and not busy
                )

            _ui.wait_for(
                f"{', '.join(good)} scored and drift-checked, a failed run of {bad}, an "
                "observation of champion_model and no run in progress",
                settled,
                LOOP_TIMEOUT,
                dev.log,
            )
            scores = _latest(instance, "cohort_scores", good[0])
            drift = _latest(instance, "drift_metrics", good[SHIFTED])
            assert drift["is_drift"] is True, f"{good[SHIFTED]} did not drift: {drift}"
            failed_run = instance.get_runs(
                dg.RunsFilter(
                    tags={"dagster/partition": bad}, statuses=[dg.DagsterRunStatus.FAILURE]
                )
            )[0]
            observation = instance.fetch_observations(dg.AssetKey("champion_model"), limit=1)
            champion = _metadata(observation.records[0].asset_observation)
        _ui.set_nux_seen(dev.url)
        yield {
            "dev": dev,
            "values": {
                "champion": {"version": champion.get("version", "")},
                "scored": {
                    "day": good[0],
                    "rows_scored": scores["rows_scored"],
                    "model_version": scores["model_version"],
                },
                "drifted": {"day": good[SHIFTED], "rows": ROWS[SHIFTED]},
                "failed": {"day": bad, "run_id": failed_run.run_id},
            },
            "champion_metadata": champion,
        }
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not _ui.CHROMIUM.exists():
        pytest.fail(f"{_ui.CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(_ui.CHROMIUM), headless=True, args=_ui.CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _filled(spec: dict, values: dict[str, object]) -> dict:
    def fill(text: str) -> str:
        return text.format(**values)

    return {
        "path": fill(spec["path"]),
        "texts": [fill(t) for t in spec.get("texts", ())],
        "exact": [fill(t) for t in spec.get("exact", ())],
        "rows": {label: fill(value) for label, value in spec.get("rows", {}).items()},
    }


def _champion_spec(metadata: dict[str, object]) -> dict:
    """The champion page's checks (its observation must carry every row it shows)."""
    missing = [k for k in CHAMPION["rows"] if k not in metadata]
    assert not missing, f"champion_model's observation lacks {missing}"
    return CHAMPION


@pytest.mark.parametrize(
    ("name", "values_of"),
    [
        ("champion_model", "champion"),
        ("scored_day", "scored"),
        ("drifted_day", "drifted"),
        ("failed_run", "failed"),
    ],
)
def test_the_ui_shows_the_loop(loop: dict, browser, name: str, values_of: str) -> None:  # noqa: ANN001
    specs = {
        "champion_model": _champion_spec(loop["champion_metadata"]),
        "scored_day": SCORED_DAY,
        "drifted_day": DRIFTED_DAY,
        "failed_run": FAILED_RUN,
    }
    spec = _filled(specs[name], loop["values"][values_of])
    _ui.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dev = loop["dev"]
    context = browser.new_context(viewport={"width": 1440, "height": 1800})
    try:
        page = context.new_page()
        _ui.check_page(page, dev.url + spec["path"], spec, _ui.SCREENSHOTS / f"{name}.png", dev.log)
    finally:
        context.close()
