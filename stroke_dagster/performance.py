"""Realized performance once outcomes arrive, and the labelled cohorts retraining learns from.

Outcome labels of day D arrive as ``STROKE_HOME/labels/D.csv`` with columns ``id,stroke`` (in the
file storage: ``STROKE_HOME`` or ``storage.url``). Joined with that day's ``scores`` they give the
realized ROC AUC and Brier score of the model that scored the day (``performance_metrics``); joined
with the day's cohort file they give labelled patients in the raw schema for the next training run
(:func:`labeled_cohorts`).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from stroke_dagster.errors import InputError
from stroke_dagster.ingest import canonical_column, read_patient_file
from stroke_dagster.schema import (
    ID,
    MISSING_MARKERS,
    PATIENT_KEY,
    RAW_COLUMNS,
    REQUIRED_COLUMNS,
    TARGET,
)
from stroke_dagster.settings import Settings
from stroke_dagster.storage import Storage, StoragePath, storage_for

log = logging.getLogger(__name__)

TABLE = "performance_metrics"


def labels_file(day: str, settings: Settings) -> StoragePath | None:
    path = settings.labels_dir / f"{day}.csv"
    return path if settings.files.is_file(path) else None


def labelled_days(settings: Settings) -> list[str]:
    """Every ``YYYY-MM-DD`` with a labels file ``labels/YYYY-MM-DD.csv``, oldest first.

    Other names (``2026-W10-1.csv``, ``20260302.csv``) are skipped with a log line, as the
    ``file_arrivals`` sensor skips them.
    """
    from stroke_dagster.arrivals import parse_day

    days = []
    for info in settings.files.list_files(settings.labels_dir, "*.csv"):
        if parse_day(info.path.stem) is None:
            log.info("skipped labels/%s: name is not a day (expected YYYY-MM-DD.csv)", info.name)
            continue
        days.append(info.path.stem)
    return sorted(days)


def _read_csv_text(path: PurePath, storage: Storage | None) -> pd.DataFrame:
    with storage_for(path, storage).open(path, "rb") as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False)


def read_labels(path: str | PurePath, storage: Storage | None = None) -> pd.DataFrame:
    """``id`` (text) and ``stroke`` (0/1 as float; NaN when not 0/1) of a labels file
    (``storage``: the file storage holding it; default, a local file)."""
    path = storage.as_path(path) if storage is not None and isinstance(path, str) else path
    path = Path(path) if isinstance(path, str) else path
    try:
        raw = _read_csv_text(path, storage)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read labels {path.name}: {exc}") from None
    raw.columns = [canonical_column(c) for c in raw.columns]
    missing = [c for c in (ID, TARGET) if c not in raw.columns]
    if missing:
        raise InputError(f"labels {path.name} lack column(s): {', '.join(missing)}")
    ids = raw[ID].str.strip()
    label = raw[TARGET].str.strip()
    values = pd.to_numeric(label.mask(label.isin(MISSING_MARKERS)), errors="coerce")
    return pd.DataFrame({ID: ids, TARGET: values.where(values.isin([0.0, 1.0]))})


def day_performance(day: str, settings: Settings) -> pd.DataFrame | None:
    """One row per model version that scored ``day``; ``None`` when no labels arrived yet."""
    from stroke_dagster import warehouse

    path = labels_file(day, settings)
    if path is None:
        return None
    labels = read_labels(path, settings.files)
    labels = labels.dropna(subset=[TARGET]).drop_duplicates(subset=[ID], keep="last")
    scores = warehouse.query_df(
        "SELECT patient_id, stroke_probability, model_name, model_version FROM scores"
        " WHERE cohort_date = ?",
        [dt.date.fromisoformat(day)],
        settings=settings,
    )
    if scores.empty:
        raise InputError(f"labels arrived for {day} but the day has no scores")
    joined = scores.merge(labels, how="left", left_on="patient_id", right_on=ID)
    rows = []
    for (name, version), group in joined.groupby(["model_name", "model_version"], sort=True):
        labelled = group.dropna(subset=[TARGET])
        y = labelled[TARGET].to_numpy(dtype=int)
        p = labelled["stroke_probability"].to_numpy(dtype=float)
        rows.append(
            {
                "model_name": name,
                "model_version": str(version),
                "n_scored": len(group),
                "n_labelled": len(labelled),
                "n_positive": int(y.sum()),
                "roc_auc": _roc_auc(y, p),
                "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
                "mean_probability": float(p.mean()) if len(p) else None,
                "observed_rate": float(y.mean()) if len(y) else None,
            }
        )
    return pd.DataFrame(rows)


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def write_performance(day: str, frame: pd.DataFrame, settings: Settings) -> int:
    """Replace the day's ``performance_metrics`` partition (atomically)."""
    from stroke_dagster import warehouse

    return warehouse.replace_partition(
        TABLE, day, frame, extra={"computed_at": dt.datetime.now(dt.UTC)}, settings=settings
    )


def labeled_cohorts(settings: Settings) -> pd.DataFrame:
    """Every labelled cohort received so far, in the raw schema (``RAW_COLUMNS``), oldest first.

    Rows are the cohort file's rows (as read, before validation) that have a label, with the label
    taken from ``labels/<day>.csv`` as given; pass the frame through ``validate_patients(...,
    require_label=True)`` like any raw training file. Ids become ``<day>/<id>`` so that a patient
    seen on several days, or an id reused by another source, is not dropped as a duplicate; the
    patient stays known as ``patient_key`` (the cohort's id, or the column named by
    ``scoring.patient_key_column`` where a site sends a separate patient identifier), which every
    split groups by.
    """
    key_column = settings.scoring.patient_key_column
    frames = []
    files = settings.files
    for day in labelled_days(settings):
        cohort_path = settings.incoming_file(day)
        if cohort_path is None:
            log.warning(
                "labels for %s have no cohort file in %s: skipped", day, settings.incoming_dir
            )
            continue
        with files.local_copy(cohort_path) as local:
            cohort = read_patient_file(local)
        missing = [c for c in REQUIRED_COLUMNS if c not in cohort.columns]
        if missing:
            log.warning("cohort %s lacks %s: skipped", cohort_path.name, ", ".join(missing))
            continue
        patient = cohort[key_column] if key_column in cohort.columns else cohort[ID]
        cohort = cohort[list(REQUIRED_COLUMNS)].copy()
        cohort["_key"] = cohort[ID].astype(str).str.strip()
        cohort[PATIENT_KEY] = patient.astype(str).str.strip().to_numpy()
        labels = _read_csv_text(settings.labels_dir / f"{day}.csv", files)
        labels.columns = [canonical_column(c) for c in labels.columns]
        if ID not in labels.columns or TARGET not in labels.columns:
            log.warning("labels %s.csv lack id/stroke columns: skipped", day)
            continue
        labels = labels.assign(_key=labels[ID].str.strip())[["_key", TARGET]]
        labels = labels.drop_duplicates(subset=["_key"], keep="last")
        joined = cohort.merge(labels, on="_key", how="inner")
        joined[ID] = day + "/" + joined["_key"]
        frames.append(joined[[*RAW_COLUMNS, PATIENT_KEY]])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (*RAW_COLUMNS, PATIENT_KEY)})
    return pd.concat(frames, ignore_index=True)
