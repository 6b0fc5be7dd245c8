"""Outcome labels, and the one reader of labelled cohorts.

Outcome labels of day D arrive as ``labels/D.csv`` with columns ``id,stroke`` in the file storage
(``STROKE_HOME`` or ``storage.url``). Everything that needs outcomes reads them here:

* :func:`day_labels`: the day's known outcomes, one per id (the last line wins), to join with
  the day's scores (realized performance, calibration, alert burden, the shadow comparison);
* :func:`labelled_cohort`: the day's cohort rows that have a label, as read (text), with the
  patient key; training (:func:`labelled_cohorts`) and site recalibration validate them like
  any raw patient file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Literal, overload

import pandas as pd

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import (
    ID,
    MISSING_MARKERS,
    PATIENT_KEY,
    RAW_COLUMNS,
    REQUIRED_COLUMNS,
    TARGET,
)
from stroke_dagster.core.settings import Settings
from stroke_dagster.core.storage import Storage, StoragePath, storage_for
from stroke_dagster.io.readers import canonical_column, read_patient_file

log = logging.getLogger(__name__)


def labels_file(day: str, settings: Settings) -> StoragePath | None:
    """``labels/<day>.csv`` when it exists."""
    path = settings.labels_dir / f"{day}.csv"
    return path if settings.files.is_file(path) else None


def labelled_days(settings: Settings) -> list[str]:
    """Every ``YYYY-MM-DD`` with a labels file ``labels/YYYY-MM-DD.csv``, oldest first.

    Other names (``2026-W10-1.csv``, ``20260302.csv``) are skipped with a log line, as the
    ``file_arrivals`` sensor skips them.
    """
    from stroke_dagster.io.arrivals import parse_day

    days = []
    for info in settings.files.list_files(settings.labels_dir, "*.csv"):
        if parse_day(info.path.stem) is None:
            log.info("skipped labels/%s: name is not a day (expected YYYY-MM-DD.csv)", info.name)
            continue
        days.append(info.path.stem)
    return sorted(days)


def _label_text(path: PurePath, storage: Storage | None) -> pd.DataFrame:
    """``id`` and ``stroke`` of a labels file as stripped text (header names canonicalised)."""
    try:
        with storage_for(path, storage).open(path, "rb") as handle:
            raw = pd.read_csv(handle, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read labels {path.name}: {exc}") from None
    raw.columns = [canonical_column(c) for c in raw.columns]
    missing = [c for c in (ID, TARGET) if c not in raw.columns]
    if missing:
        raise InputError(f"labels {path.name} lack column(s): {', '.join(missing)}")
    return pd.DataFrame({ID: raw[ID].str.strip(), TARGET: raw[TARGET].str.strip()})


def _outcome(label: pd.Series) -> pd.Series:
    """0.0/1.0 for a valid label (``1``, ``1.0``, ...), NaN for a missing or invalid one."""
    values = pd.to_numeric(label.mask(label.isin(MISSING_MARKERS)), errors="coerce")
    return values.where(values.isin([0.0, 1.0]))


def read_labels(path: str | PurePath, storage: Storage | None = None) -> pd.DataFrame:
    """``id`` (text) and ``stroke`` (0/1 as float; NaN when not 0/1) of a labels file
    (``storage``: the file storage holding it; default, a local file)."""
    path = storage.as_path(path) if storage is not None and isinstance(path, str) else path
    path = Path(path) if isinstance(path, str) else path
    text = _label_text(path, storage)
    return pd.DataFrame({ID: text[ID], TARGET: _outcome(text[TARGET])})


def day_labels(day: str, settings: Settings) -> pd.DataFrame | None:
    """The day's known outcomes (``id``, ``stroke`` 0/1), one per id, the last line winning;
    ``None`` when no labels file arrived."""
    path = labels_file(day, settings)
    if path is None:
        return None
    labels = read_labels(path, settings.files).dropna(subset=[TARGET])
    return labels.drop_duplicates(subset=[ID], keep="last")


@overload
def labelled_cohort(
    day: str, settings: Settings, *, strict: Literal[True] = True
) -> pd.DataFrame: ...
@overload
def labelled_cohort(day: str, settings: Settings, *, strict: bool) -> pd.DataFrame | None: ...
def labelled_cohort(day: str, settings: Settings, *, strict: bool = True) -> pd.DataFrame | None:
    """The day's cohort rows that have a label line, unvalidated.

    Columns: the cohort's ``REQUIRED_COLUMNS`` as read (text), ``stroke`` (``0``/``1`` for a valid
    label, else the text as given, so that validation quarantines it with its reason) and
    ``patient_key`` (the cohort's id, or the column ``scoring.patient_key_column`` where a site
    sends a separate patient identifier). A cohort row without a label line is not returned;
    several label lines for one id: the last wins.

    A day without its labels file, cohort file or required columns raises :class:`InputError`
    when ``strict``; otherwise it is skipped with a log line (``None``).
    """
    labels_path, cohort_path = labels_file(day, settings), settings.incoming_file(day)
    problem = None
    if labels_path is None:
        problem = f"no labels for {day} in {settings.labels_dir}"
    elif cohort_path is None:
        problem = f"labels for {day} have no cohort file in {settings.incoming_dir}"
    if problem is None:
        assert cohort_path is not None and labels_path is not None
        with settings.files.local_copy(cohort_path) as local:
            cohort = read_patient_file(local)
        missing = [c for c in REQUIRED_COLUMNS if c not in cohort.columns]
        if missing:
            problem = f"cohort {cohort_path.name} lacks {', '.join(missing)}"
        else:
            try:
                labels = _label_text(labels_path, settings.files)
            except InputError as exc:
                problem = str(exc)
    if problem is not None:
        if strict:
            raise InputError(problem)
        log.warning("%s: skipped", problem)
        return None
    key_column = settings.scoring.patient_key_column
    patient = cohort[key_column] if key_column in cohort.columns else cohort[ID]
    rows = cohort[list(REQUIRED_COLUMNS)].copy()
    rows[PATIENT_KEY] = patient.astype(str).str.strip().to_numpy()
    rows[ID] = rows[ID].astype(str).str.strip()
    labels = labels.drop_duplicates(subset=[ID], keep="last")
    outcome = _outcome(labels[TARGET])
    labels[TARGET] = labels[TARGET].where(outcome.isna(), outcome.map({0.0: "0", 1.0: "1"}))
    return rows.merge(labels, on=ID, how="inner")


def labelled_cohorts(settings: Settings, days: Iterable[str] | None = None) -> pd.DataFrame:
    """Every labelled cohort received so far (or of ``days``), in the raw schema, oldest first.

    :func:`labelled_cohort` of each day (days lacking a file are skipped with a log line), as
    ``RAW_COLUMNS`` plus ``patient_key``; pass the frame through ``validate_patients(...,
    require_label=True)`` like any raw training file. Ids become ``<day>/<id>`` so that a patient
    seen on several days, or an id reused by another source, is not dropped as a duplicate; the
    patient stays known as ``patient_key``, which every split groups by.
    """
    frames = []
    for day in labelled_days(settings) if days is None else days:
        rows = labelled_cohort(day, settings, strict=False)
        if rows is not None:
            frames.append(rows.assign(**{ID: day + "/" + rows[ID]})[[*RAW_COLUMNS, PATIENT_KEY]])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (*RAW_COLUMNS, PATIENT_KEY)})
    return pd.concat(frames, ignore_index=True)
