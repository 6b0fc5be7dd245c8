"""Alert burden of a cohort day: how many patients the scores flag, and what a flag is worth.

Clinical governance asks two things of a risk score in use: is the workload it creates stable
(alert fatigue), and are its flags worth acting on. Per day and model version of the ``scores``
view (what the clinicians were shown), :func:`day_burden` computes and :func:`write_burden` stores
in ``alert_burden``:

- tier shares ``n_<tier> / n_patients`` and alerts per 100 patients ``100 * n_alerts /
  n_patients``; an *alert* is a patient in ``alert_burden.alert_from_tier`` or above (default
  ``high``, the tier clinicians are asked to act on);
- once ``labels/<day>.csv`` arrived, over the labelled patients and at each tier threshold
  ``t`` (flagged: tier at or above ``t``, for elevated and high): PPV = TP / flagged,
  sensitivity = TP / strokes and NNE = 1 / PPV (patients evaluated per stroke found); ``None``
  when a denominator is 0;
- the day's ``feedback`` (latest record per ``feedback_id``, of the row's version or naming
  none): records, overrides, and the override rate among the day's alerts = alerted patients
  whose latest feedback is ``overridden`` / alerts (an alert nobody answered is not overridden).

:func:`burden_band` judges the day's high-tier share against the daily shares of the days
before it (mean +- k sd, learned, not a fixed cut-off).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from stroke_dagster.core.risk import TIERS
from stroke_dagster.core.schema import ID, TARGET
from stroke_dagster.io.labels import day_labels

if TYPE_CHECKING:
    import duckdb

    from stroke_dagster.core.settings import AlertBurdenSettings, Settings

TABLE = "alert_burden"
THRESHOLDS = ("elevated", "high")  # the tier thresholds PPV, sensitivity and NNE are given at
OVERRIDDEN = "overridden"
_INT, _FLOAT, _TEXT = "Int64", "float64", "object"
COLUMNS: dict[str, str] = {
    "model_name": _TEXT,
    "model_version": _TEXT,
    "n_patients": _INT,
    **{f"n_{tier}": _INT for tier in TIERS},
    **{f"share_{tier}": _FLOAT for tier in TIERS},
    "alert_from_tier": _TEXT,
    "n_alerts": _INT,
    "alerts_per_100": _FLOAT,
    "n_labelled": _INT,
    "n_positive": _INT,
    **{
        f"{name}_{tier}": kind
        for tier in THRESHOLDS
        for name, kind in (
            ("flagged", _INT),
            ("tp", _INT),
            ("ppv", _FLOAT),
            ("sensitivity", _FLOAT),
            ("nne", _FLOAT),
        )
    },
    "n_feedback": _INT,
    "n_overridden": _INT,
    "alerts_with_feedback": _INT,
    "alerts_overridden": _INT,
    "override_rate": _FLOAT,
}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _rank(tiers: pd.Series) -> pd.Series:
    """The position of each tier in ``TIERS`` (low 0, elevated 1, high 2)."""
    return tiers.map({tier: i for i, tier in enumerate(TIERS)}).astype(int)


def _day_scores(con: duckdb.DuckDBPyConnection, day: dt.date) -> pd.DataFrame:
    return con.execute(
        "SELECT patient_id, risk_tier, model_name, model_version FROM scores WHERE cohort_date = ?",
        [day],
    ).df()


def _day_feedback(con: duckdb.DuckDBPyConnection, day: dt.date) -> pd.DataFrame:
    """The day's feedback records, a re-sent ``feedback_id`` counted once (its latest)."""
    return con.execute(
        "SELECT patient_id, model_version, action, recorded_at FROM feedback"
        " WHERE cohort_date = ?"
        " QUALIFY row_number() OVER (PARTITION BY feedback_id ORDER BY recorded_at DESC) = 1",
        [day],
    ).df()


def _labelled_figures(group: pd.DataFrame, labels: pd.DataFrame | None) -> dict[str, Any]:
    if labels is None:
        return {}
    joined = group.merge(labels, left_on="patient_id", right_on=ID, how="inner")
    y = joined[TARGET].astype(int)
    rank = _rank(joined["risk_tier"])
    positives = int(y.sum())
    out: dict[str, Any] = {"n_labelled": len(joined), "n_positive": positives}
    for tier in THRESHOLDS:
        flagged = rank >= TIERS.index(tier)
        n_flagged, tp = int(flagged.sum()), int((flagged & (y == 1)).sum())
        out |= {
            f"flagged_{tier}": n_flagged,
            f"tp_{tier}": tp,
            f"ppv_{tier}": _ratio(tp, n_flagged),
            f"sensitivity_{tier}": _ratio(tp, positives),
            f"nne_{tier}": _ratio(n_flagged, tp),  # 1 / PPV
        }
    return out


def _feedback_figures(
    alerted: set[str], version: str, feedback: pd.DataFrame, n_alerts: int
) -> dict[str, Any]:
    mine = feedback[feedback["model_version"].isna() | (feedback["model_version"] == version)]
    latest = mine.sort_values("recorded_at").groupby("patient_id")["action"].last()
    answered = latest[latest.index.isin(alerted)]
    overridden = int((answered == OVERRIDDEN).sum())
    return {
        "n_feedback": len(mine),
        "n_overridden": int((mine["action"] == OVERRIDDEN).sum()),
        "alerts_with_feedback": len(answered),
        "alerts_overridden": overridden,
        "override_rate": _ratio(overridden, n_alerts),
    }


def day_burden(day: str, settings: Settings) -> pd.DataFrame:
    """The day's alert burden, one row per scoring model version (no rows: not scored)."""
    from stroke_dagster.warehouse import store as warehouse

    alert_from = settings.alert_burden.alert_from_tier
    with warehouse.connect(settings) as con:
        scores = _day_scores(con, dt.date.fromisoformat(day))
        feedback = _day_feedback(con, dt.date.fromisoformat(day))
    labels = day_labels(day, settings) if len(scores) else None
    feedback["model_version"] = feedback["model_version"].astype("string")
    rows = []
    for (name, version), group in scores.groupby(["model_name", "model_version"], sort=True):
        n = len(group)
        counts = group["risk_tier"].value_counts()
        alerts = _rank(group["risk_tier"]) >= TIERS.index(alert_from)
        n_alerts = int(alerts.sum())
        rows.append(
            {
                "model_name": name,
                "model_version": str(version),
                "n_patients": n,
                **{f"n_{tier}": int(counts.get(tier, 0)) for tier in TIERS},
                **{f"share_{tier}": int(counts.get(tier, 0)) / n for tier in TIERS},
                "alert_from_tier": alert_from,
                "n_alerts": n_alerts,
                "alerts_per_100": 100.0 * n_alerts / n,
                **_labelled_figures(group, labels),
                **_feedback_figures(
                    set(group.loc[alerts, "patient_id"]), str(version), feedback, n_alerts
                ),
            }
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype(COLUMNS)


def write_burden(day: str, frame: pd.DataFrame, settings: Settings) -> int:
    """Replace the day's ``alert_burden`` rows by ``frame`` (atomically); rows written."""
    from stroke_dagster.warehouse import store as warehouse

    return warehouse.replace_partition(
        TABLE, day, frame, extra={"computed_at": dt.datetime.now(dt.UTC)}, settings=settings
    )


@dataclass(frozen=True)
class Band:
    """The day's high-tier share against the band learned from the days before it."""

    day: str
    share: float | None  # the day's high-tier share (None: no scored patients)
    reference_days: int  # days of the window with a stored share
    mean: float | None = None
    sd: float | None = None  # sample sd of the reference shares
    low: float | None = None  # mean - k sd
    high: float | None = None  # mean + k sd
    passed: bool = True
    reason: str = ""


def _daily_high_shares(settings: Settings, first: dt.date, last: dt.date) -> dict[dt.date, float]:
    from stroke_dagster.warehouse import store as warehouse

    rows = warehouse.query_df(
        f"SELECT cohort_date, sum(n_high)::DOUBLE / sum(n_patients) AS share FROM {TABLE}"
        " WHERE cohort_date BETWEEN ? AND ? GROUP BY cohort_date HAVING sum(n_patients) > 0",
        [first, last],
        settings=settings,
    )
    days = (pd.Timestamp(d).date() for d in rows["cohort_date"])
    return dict(zip(days, rows["share"].astype(float), strict=True))


def burden_band(day: str, settings: Settings) -> Band:
    """Whether ``day``'s high-tier share (as stored) lies within mean +- k sd of the daily shares
    of the ``band_days`` days before it (the day itself excluded)."""
    config: AlertBurdenSettings = settings.alert_burden
    today = dt.date.fromisoformat(day)
    shares = _daily_high_shares(settings, today - dt.timedelta(days=config.band_days), today)
    share = shares.pop(today, None)
    reference = list(shares.values())
    if share is None:
        return Band(day, None, len(reference), reason=f"{day}: no scored patients")
    if len(reference) < config.band_min_days:
        return Band(
            day,
            share,
            len(reference),
            reason=f"not enough reference days: {len(reference)} of the {config.band_min_days} "
            f"needed in the {config.band_days} days before {day}; high-tier share {share:.1%}",
        )
    mean = sum(reference) / len(reference)
    sd = math.sqrt(sum((s - mean) ** 2 for s in reference) / (len(reference) - 1))
    low, high = mean - config.band_k * sd, mean + config.band_k * sd
    passed = low <= share <= high
    where = "within" if passed else ("above" if share > high else "below")
    return Band(
        day,
        share,
        len(reference),
        mean,
        sd,
        low,
        high,
        passed,
        f"high-tier share {share:.1%} {where} the band {max(low, 0.0):.1%}-{high:.1%} "
        f"(mean {mean:.1%} +- {config.band_k:g} sd of {len(reference)} days before {day})",
    )
