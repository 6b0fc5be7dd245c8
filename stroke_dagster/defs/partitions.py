"""Partitioning shared by every daily asset: one partition per UTC day, today's included.

The first partition is the platform's go-live day, so the UI's partition bars show real days:
``STROKE_GO_LIVE`` when set, else the first day the platform saw (the earliest day file in
``incoming/``, ``labels/`` or the typed copies in ``cohorts/``), else :data:`DEFAULT_HISTORY_DAYS`
days ago. It is read when the code location loads: a file dated before it is skipped by the
``file_arrivals`` sensor with the reason, until ``STROKE_GO_LIVE`` (or a reload that sees the
file) moves it.

``end_offset=1`` opens today's partition at 00:00 UTC, so a cohort dropped in today is scored
today rather than rejected as an unknown partition until midnight.
"""

import datetime as dt
import logging

from dagster import DailyPartitionsDefinition

log = logging.getLogger(__name__)
DEFAULT_HISTORY_DAYS = 30
DAY_FOLDERS = ("incoming", "labels", "cohorts")


def go_live() -> dt.date:
    """The first daily partition (see the module docstring)."""
    from stroke_dagster.core.settings import SettingsError, load_settings
    from stroke_dagster.io.arrivals import parse_day

    fallback = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DEFAULT_HISTORY_DAYS)
    try:
        settings = load_settings()
    except SettingsError as exc:  # the runs report it; the partitions still load
        log.warning("partitions start %s: %s", fallback, exc)
        return fallback
    if settings.scoring.go_live is not None:
        return settings.scoring.go_live
    days = []
    try:
        for folder in DAY_FOLDERS:
            for info in settings.files.list_files(settings.files.path(folder)):
                day = parse_day(info.path.name.split(".", 1)[0])
                if day is not None:
                    days.append(dt.date.fromisoformat(day))
    except Exception as exc:  # storage away while loading: a month of days, said in the log
        log.warning("could not list the day files (%s); partitions start %s", exc, fallback)
        return fallback
    return min(days) if days else fallback


GO_LIVE = go_live().isoformat()
daily_partitions = DailyPartitionsDefinition(start_date=GO_LIVE, timezone="UTC", end_offset=1)

# Days that have ended (the last partition is yesterday): for summaries a schedule builds after
# midnight, which must not pick the day that just opened.
_YESTERDAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
completed_daily_partitions = DailyPartitionsDefinition(
    start_date=min(dt.date.fromisoformat(GO_LIVE), _YESTERDAY).isoformat(), timezone="UTC"
)
