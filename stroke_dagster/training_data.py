"""The labelled patients a model learns from: the raw Kaggle file (or synthetic stand-in).

Shared by the ``raw_patients`` asset and ``stroke train`` so both read the same rows the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stroke_dagster.ingest import read_patient_file
from stroke_dagster.settings import Settings

log = logging.getLogger(__name__)

SYNTHETIC_WARNING = (
    "RAW DATA NOT FOUND at {path}: training on {rows} SYNTHETIC patients instead. "
    "Download the Kaggle 'Stroke Prediction Dataset' and set STROKE_RAW_CSV to its path."
)


@dataclass
class RawTrainingData:
    """Raw text rows plus where they came from."""

    frame: pd.DataFrame
    source: str
    synthetic: bool


def load_raw_training_data(
    settings: Settings, *, synthetic_rows: int = 5110, seed: int = 0
) -> RawTrainingData:
    """Read ``settings.raw_csv``; when it is absent, fall back (loudly) to synthetic patients."""
    path = Path(settings.raw_csv)
    if path.is_file():
        return RawTrainingData(read_patient_file(path), source=str(path), synthetic=False)
    from stroke_dagster.simulate import simulate_patients

    log.warning(SYNTHETIC_WARNING.format(path=path, rows=synthetic_rows))
    frame = simulate_patients(synthetic_rows, seed=seed, with_label=True)
    return RawTrainingData(
        frame, source=f"synthetic(n={synthetic_rows}, seed={seed})", synthetic=True
    )


def combine_labelled(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack validated labelled frames (raw file first, then labelled cohorts by day).

    Ids are only unique within a source: a cohort's patient 17 is not the raw file's patient 17.
    """
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
