"""The retraining policy: N of the last M checked days, the cooldown, one retrain per window."""

from __future__ import annotations

import datetime as dt

from stroke_dagster.monitoring.retraining import LastRetrain, Policy, decide

NOW = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)
POLICY = Policy(drifted_days=3, window_days=5, cooldown_hours=24)


def days(flags: str, start: str = "2026-03-01") -> list[tuple[str, bool]]:
    """``"..xx.x"`` -> consecutive days, ``x`` drifted."""
    first = dt.date.fromisoformat(start)
    return [((first + dt.timedelta(days=i)).isoformat(), f == "x") for i, f in enumerate(flags)]


def test_retrains_on_n_of_the_last_m_checked_days() -> None:
    decision = decide(days("..x.xx"), champion="1", policy=POLICY, now=NOW)
    assert decision.retrain
    assert decision.drifted == ("2026-03-03", "2026-03-05", "2026-03-06")
    assert decision.window == tuple(d for d, _ in days("..x.xx")[-5:])
    assert decision.key == "2026-03-02..2026-03-06"


def test_old_drift_outside_the_window_does_not_count() -> None:
    decision = decide(days("xxx....."), champion="1", policy=POLICY, now=NOW)
    assert not decision.retrain
    assert "0 of the last 5 checked day(s) drifted" in decision.reason


def test_too_few_drifted_days_give_the_counts() -> None:
    decision = decide(days("x...x"), champion="7", policy=POLICY, now=NOW)
    assert not decision.retrain
    assert decision.reason.startswith("2 of the last 5 checked day(s) drifted against champion v7")


def test_a_window_is_used_once_even_after_the_cooldown() -> None:
    last = LastRetrain(NOW - dt.timedelta(days=10), champion="1", latest_day="2026-03-06")
    decision = decide(days("..x.xx"), champion="1", policy=POLICY, now=NOW, last=last)
    assert not decision.retrain and "counting days after 2026-03-06" in decision.reason
    fresh = decide(days("..x.xxxxx"), champion="1", policy=POLICY, now=NOW, last=last)
    assert fresh.retrain and fresh.drifted == ("2026-03-07", "2026-03-08", "2026-03-09")


def test_cooldown_blocks_a_new_window_until_it_ends() -> None:
    last = LastRetrain(NOW - dt.timedelta(hours=3), champion="1", latest_day="2026-03-01")
    blocked = decide(days(".xxx"), champion="1", policy=POLICY, now=NOW, last=last)
    assert not blocked.retrain and "cooldown of 24 h until 2026-03-21 09:00 UTC" in blocked.reason
    later = NOW + dt.timedelta(hours=22)
    assert decide(days(".xxx"), champion="1", policy=POLICY, now=later, last=last).retrain


def test_a_new_champion_counts_all_its_days() -> None:
    last = LastRetrain(NOW - dt.timedelta(days=3), champion="1", latest_day="2026-03-09")
    decision = decide(days("xxx"), champion="2", policy=POLICY, now=NOW, last=last)
    assert decision.retrain and len(decision.drifted) == 3
