"""When drift should start a retraining: N of the last M checked days, a cooldown, one per window.

Plain policy code (no Dagster, no warehouse): the caller passes the drift verdicts of the
current champion, the time and what the previous retraining was based on.

* Only days checked against the current ``champion`` count; a new champion starts afresh.
* Of the latest ``window_days`` checked days, at least ``drifted_days`` must have drifted.
* A policy window is used once: after a retraining based on days up to D, only days after D
  count for the next one (a challenger that lost leaves the champion, and its evidence, in place).
* No retraining within ``cooldown_hours`` of the previous one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    drifted_days: int = 3
    window_days: int = 7
    cooldown_hours: float = 72.0


@dataclass(frozen=True)
class LastRetrain:
    """The previous retraining: when it was requested, for which champion, up to which day."""

    requested_at: dt.datetime
    champion: str
    latest_day: str


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    drifted: tuple[str, ...] = ()
    window: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Identifies the policy window (first..last checked day) that triggered a retraining."""
        return f"{self.window[0]}..{self.window[-1]}" if self.window else ""


def decide(
    verdicts: Iterable[tuple[str, bool]],
    *,
    champion: str,
    policy: Policy,
    now: dt.datetime,
    last: LastRetrain | None = None,
) -> Decision:
    """Whether to retrain now, given ``(day, drifted)`` verdicts checked against ``champion``."""
    days = sorted({day: bool(flag) for day, flag in verdicts}.items())
    if last is not None and last.champion == champion:
        days = [(day, flag) for day, flag in days if day > last.latest_day]
    window = days[-policy.window_days :]
    drifted = tuple(day for day, flag in window if flag)
    checked = tuple(day for day, _ in window)
    summary = (
        f"{len(drifted)} of the last {len(window)} checked day(s) drifted against champion "
        f"v{champion} (retrain at {policy.drifted_days} of {policy.window_days})"
    )
    if last is not None and last.champion == champion:
        summary += f", counting days after {last.latest_day} (used by the previous retraining)"
    if len(drifted) < policy.drifted_days:
        return Decision(False, f"{summary}: not enough drift", drifted, checked)
    if last is not None:
        ready_at = last.requested_at + dt.timedelta(hours=policy.cooldown_hours)
        if now < ready_at:
            return Decision(
                False,
                f"{summary}, but the previous retraining was requested at "
                f"{last.requested_at:%Y-%m-%d %H:%M} UTC: cooldown of "
                f"{policy.cooldown_hours:g} h until {ready_at:%Y-%m-%d %H:%M} UTC",
                drifted,
                checked,
            )
    return Decision(True, f"{summary}: retrain", drifted, checked)
