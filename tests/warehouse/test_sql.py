"""Every file under sql/ works: the DDL builds the entry point, and every analyst query runs through
exactly the command the documentation shows (``.venv/bin/stroke sql FILE [--param NAME=VALUE]``),
as a separate process, while the expected rows are checked on the entry point opened from
Python."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stroke_dagster.core.settings import PROJECT_ROOT, SQL_DIR, load_settings
from stroke_dagster.warehouse import store as warehouse

D1, D2, D3 = "2026-01-04", "2026-01-05", "2026-01-12"
QUERIES = SQL_DIR / "queries"
# The pages that show `stroke sql` commands: the README and the documentation site's sources.
DOC_PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]
STROKE = Path(sys.executable).with_name("stroke")  # .venv/bin/stroke after `make install`


def _scores(rows: list[tuple[str, float, str]], version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [r[0] for r in rows],
            "stroke_probability": [r[1] for r in rows],
            "risk_tier": [r[2] for r in rows],
            "model_name": "StrokeRF",
            "model_version": version,
            "scored_at": pd.Timestamp("2026-01-06T02:00:00Z"),
        }
    )


@pytest.fixture
def populated(stroke_home: Path) -> Path:
    """Three scored days (patients 2 and 3 in the first two) and quarantined rows of two sources."""
    warehouse.replace_partition(
        "score_history",
        D1,
        _scores([("1", 0.02, "low"), ("2", 0.30, "high"), ("3", 0.08, "elevated")], "1"),
        settings=load_settings(),
    )
    warehouse.replace_partition(
        "score_history",
        D2,
        _scores(
            [("2", 0.40, "high"), ("3", 0.01, "low"), ("4", 0.25, "high"), ("5", 0.09, "elevated")],
            "2",
        ),
        settings=load_settings(),
    )
    warehouse.replace_partition(
        "score_history",
        D3,
        _scores(
            [("3", 0.35, "high"), ("4", 0.30, "high"), ("5", 0.20, "high"), ("6", 0.5, "high")],
            "2",
        ),
        settings=load_settings(),
    )
    quarantine = pd.DataFrame(
        {
            "row_number": [4, 9, 11],
            "patient_id": ["7", None, "7"],
            "reason": [
                "age out of range [0, 120]",
                "id is missing; bmi is not a number",
                "duplicate id",
            ],
            "record": ["{}", "{}", "{}"],
        }
    )
    warehouse.write_quarantine(quarantine, "cohort", D2, settings=load_settings())
    warehouse.write_quarantine(
        quarantine.iloc[:1], "train:patients.csv", None, settings=load_settings()
    )
    return warehouse.of(load_settings()).home / "warehouse"


def run_file(data_dir: Path, path: Path, **variables: str) -> pd.DataFrame:
    """The query on a connection opened from Python (the README's second way in)."""
    del data_dir  # the warehouse of the test's STROKE_HOME
    with warehouse.connect(load_settings()) as con:
        for name, value in variables.items():
            con.execute(f"SET VARIABLE {name} = '{value}'")
        return con.execute(path.read_text(encoding="utf-8")).df()


def documented_commands() -> list[str]:
    """The analyst commands of the README and docs/ (lines starting ``.venv/bin/stroke sql``)."""
    commands: list[str] = []
    for page in DOC_PAGES:
        text = page.read_text(encoding="utf-8")
        commands += [
            m.group(0).strip() for m in re.finditer(r"^\.venv/bin/stroke sql .*$", text, re.M)
        ]
    return commands


def run_readme_command(command: str, home: Path) -> subprocess.CompletedProcess:
    """Run a documented command verbatim from the project root (``.venv/bin``: this
    interpreter's)."""
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/stroke"
    argv[0] = str(STROKE)
    env = {**os.environ, "STROKE_HOME": str(home)}
    return subprocess.run(
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_docs_show_the_query_command_and_it_runs_verbatim(populated: Path) -> None:
    commands = documented_commands()
    assert ".venv/bin/stroke sql sql/queries/daily_risk_tier_summary.sql" in commands
    assert len(commands) >= 5, commands  # the warehouse page's examples, at least
    for command in commands:
        done = run_readme_command(command, populated.parent)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.strip(), command


# Values for the prepared-statement parameters ($name) some queries require.
PARAMETERS = {"patient_id": "2", "top": "5", "cohort_date": D2, "since": D1}


@pytest.mark.parametrize("path", sorted(QUERIES.glob("*.sql")), ids=lambda p: p.name)
def test_every_query_runs_through_the_readme_command(populated: Path, path: Path) -> None:
    required = sorted(set(re.findall(r"\$([A-Za-z_]\w*)", path.read_text(encoding="utf-8"))))
    params = "".join(f" --param {name}={PARAMETERS[name]}" for name in required)
    command = f".venv/bin/stroke sql sql/queries/{path.name} --format json{params}"
    done = run_readme_command(command, populated.parent)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list)
    if path.stem in {"daily_risk_tier_summary", "latest_score_per_patient", "quarantine_summary"}:
        assert rows  # populated by the fixture


def test_every_ddl_file_is_a_relation_of_a_connection(populated: Path) -> None:
    with warehouse.connect(load_settings()) as con:
        names = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    for path in sorted((SQL_DIR / "ddl").glob("*.sql")):
        assert path.stem in names, path.name


def test_a_bad_query_is_one_line_and_exit_code_2(populated: Path) -> None:
    home = populated.parent
    done = run_readme_command(".venv/bin/stroke sql -c 'SELECT * FROM nowhere'", home)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    done = run_readme_command(".venv/bin/stroke sql -c 'SELECT 1' --param 'x y=1'", home)
    assert done.returncode == 2 and "--param" in done.stderr


def test_latest_score_per_patient(populated: Path) -> None:
    got = run_file(populated, QUERIES / "latest_score_per_patient.sql")
    assert list(got["patient_id"]) == ["1", "2", "3", "4", "5", "6"]
    latest = dict(zip(got["patient_id"], got["stroke_probability"], strict=True))
    assert latest == {"1": 0.02, "2": 0.40, "3": 0.35, "4": 0.30, "5": 0.20, "6": 0.5}
    assert got.loc[got["patient_id"] == "1", "model_version"].item() == "1"


def test_high_risk_patients_default_to_the_latest_day_and_take_a_variable(populated: Path) -> None:
    latest = run_file(populated, QUERIES / "high_risk_patients.sql")
    assert list(latest["patient_id"]) == ["6", "3", "4", "5"]  # most at risk first
    assert {str(d)[:10] for d in latest["cohort_date"]} == {D3}
    earlier = run_file(populated, QUERIES / "high_risk_patients.sql", cohort_date=D1)
    assert list(earlier["patient_id"]) == ["2"]


def test_daily_risk_tier_summary(populated: Path) -> None:
    got = run_file(populated, QUERIES / "daily_risk_tier_summary.sql")
    assert [str(d)[:10] for d in got["cohort_date"]] == [D1, D2, D3]
    assert list(got["patients"]) == [3, 4, 4]
    assert list(got["high"]) == [1, 2, 4]
    assert list(got["high_share"]) == [pytest.approx(1 / 3, abs=1e-4), 0.5, 1.0]


def test_high_risk_share_week_on_week(populated: Path) -> None:
    got = run_file(populated, QUERIES / "high_risk_share_week_on_week.sql")
    # D1 (a Sunday) and D2 (Monday) fall in two ISO weeks, D3 in the week after D2.
    assert [str(w)[:10] for w in got["week"]] == ["2025-12-29", "2026-01-05", "2026-01-12"]
    assert list(got["patients"]) == [3, 4, 4]
    assert list(got["high_share"]) == [pytest.approx(0.3333), 0.5, 1.0]
    assert pd.isna(got["change_pp"].iloc[0])
    assert list(got["change_pp"].iloc[1:]) == [pytest.approx(16.67), 50.0]
    since = run_file(populated, QUERIES / "high_risk_share_week_on_week.sql", since=D2)
    assert len(since) == 2 and pd.isna(since["change_pp"].iloc[0])


def test_newly_high_risk_since_the_last_score(populated: Path) -> None:
    got = run_file(populated, QUERIES / "newly_high_risk.sql")
    # On D3: 3 was low on D2, 5 elevated on D2 -> newly high; 4 was already high; 6 is new.
    assert list(got["patient_id"]) == ["3", "5"]
    assert list(got["previous_tier"]) == ["low", "elevated"]
    assert [str(d)[:10] for d in got["previous_date"]] == [D2, D2]
    on_d2 = run_file(populated, QUERIES / "newly_high_risk.sql", cohort_date=D2)
    assert on_d2.empty  # 2 was already high on D1; 4 had no earlier score


def test_quarantine_reasons_by_day(populated: Path) -> None:
    got = run_file(populated, QUERIES / "quarantine_reasons_by_day.sql")
    assert {str(d)[:10] for d in got["cohort_date"]} == {D2}  # training files are not days
    counts = dict(zip(got["reason"], got["rows"], strict=True))
    assert counts == {
        "age out of range [0, 120]": 1,
        "id is missing": 1,
        "bmi is not a number": 1,
        "duplicate id": 1,
    }
    assert set(got["rejected_rows"]) == {3}
    assert got["share_of_rejected"].tolist() == [pytest.approx(1 / 3, abs=1e-4)] * 4
    assert run_file(populated, QUERIES / "quarantine_reasons_by_day.sql", since=D3).empty


def test_quarantine_summary_counts_each_reason(populated: Path) -> None:
    got = run_file(populated, QUERIES / "quarantine_summary.sql")
    day = got[got["source"] == "cohort"]
    assert len(day) == 4 and set(day["rows"]) == {1}
    train = got[got["source"] == "train:patients.csv"]
    assert len(train) == 1 and pd.isna(train["cohort_date"].iloc[0])


def test_a_connection_reads_one_snapshot_and_the_next_sees_the_new_day(populated: Path) -> None:
    with warehouse.connect(load_settings()) as con:
        before = con.execute("SELECT count(*) FROM scores").fetchone()[0]
        warehouse.replace_partition(
            "score_history",
            "2026-01-20",
            _scores([("9", 0.9, "high")], "3"),
            settings=load_settings(),
        )
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == before
    with warehouse.connect(load_settings()) as con:
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == before + 1
    assert dt.date(2026, 1, 20) in set(
        run_file(populated, QUERIES / "daily_risk_tier_summary.sql")["cohort_date"].dt.date
    )


def test_alert_burden(populated: Path) -> None:
    from stroke_dagster.monitoring.alert_burden import day_burden, write_burden

    home = populated.parent
    (home / "labels").mkdir(exist_ok=True)
    pd.DataFrame({"id": ["2", "3", "4", "5"], "stroke": [1, 0, 0, 1]}).to_csv(
        home / "labels" / f"{D2}.csv", index=False
    )
    feedback = pd.DataFrame(
        {
            "feedback_id": ["a", "b"],
            "patient_id": ["2", "4"],
            "model_version": ["2", None],
            "action": ["overridden", "accepted"],
            "recorded_at": pd.Timestamp("2026-01-06T09:00:00Z"),
            "source": "api",
        }
    )
    warehouse.replace_partition("feedback", D2, feedback, settings=load_settings())
    for day in (D1, D2):
        write_burden(day, day_burden(day, load_settings()), load_settings())
    got = run_file(populated, QUERIES / "alert_burden.sql")
    assert [str(d)[:10] for d in got["cohort_date"]] == [D1, D2]
    assert list(got["patients"]) == [3, 4] and list(got["alerts"]) == [1, 2]
    assert list(got["alerts_per_100"]) == [33.33, 50.0]
    assert list(got["high_share"]) == [0.3333, 0.5]
    assert pd.isna(got["ppv_high"].iloc[0])  # D1 has no labels
    # D2: 2 and 4 high (2 a stroke), 5 elevated (a stroke), 3 low.
    d2 = got.iloc[1]
    assert (d2["labelled"], d2["strokes"]) == (4, 2)
    assert (d2["ppv_high"], d2["sensitivity_high"], d2["nne_high"]) == (0.5, 0.5, 2.0)
    assert (d2["ppv_elevated"], d2["sensitivity_elevated"], d2["nne_elevated"]) == (
        pytest.approx(0.6667),
        1.0,
        1.5,
    )
    assert (d2["feedback"], d2["overrides"], d2["override_rate"]) == (2, 1, 0.5)
    assert list(run_file(populated, QUERIES / "alert_burden.sql", since=D2)["patients"]) == [4]
