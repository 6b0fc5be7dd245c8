"""The labelled patients a model learns from: the raw Kaggle file (or synthetic stand-in).

Shared by the ``raw_patients`` asset and ``stroke train`` so both read the same rows the same way.
Synthetic patients stand in only when ``settings.allow_synthetic`` says so
(``STROKE_ALLOW_SYNTHETIC``: on by default, off in the Docker image), and every version trained
from them carries the tag ``training_data=synthetic``: a model never learns from made-up patients
unnoticed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.settings import MODEL_NAME, Settings
from stroke_dagster.io.readers import read_patient_file

log = logging.getLogger(__name__)

SYNTHETIC_WARNING = (
    "RAW DATA NOT FOUND at {path}: training on {rows} SYNTHETIC patients instead. "
    "Download the Kaggle 'Stroke Prediction Dataset' and set STROKE_RAW_CSV to its path."
)
# Tags of every registered version: where its training rows came from.
SOURCE_TAG = "training_data"  # "real" (a labelled file) or "synthetic" (the generator)
SOURCE_PATH_TAG = "training_data_path"
SOURCE_SHA256_TAG = "training_data_sha256"  # of the labelled file (real data only)


@dataclass
class RawTrainingData:
    """Raw text rows plus where they came from."""

    frame: pd.DataFrame
    source: str
    synthetic: bool


def missing_raw_file(settings: Settings) -> str | None:
    """One line saying why training cannot start (no raw file, synthetic patients not allowed),
    or ``None`` when it can."""
    path = Path(settings.raw_csv)
    if path.is_file() or settings.allow_synthetic:
        return None
    return (
        f"no training data: {path} does not exist and STROKE_ALLOW_SYNTHETIC is off "
        "(put the labelled Kaggle file there, or set STROKE_RAW_CSV to it)"
    )


def load_raw_training_data(
    settings: Settings, *, synthetic_rows: int = 5110, seed: int = 0
) -> RawTrainingData:
    """Read ``settings.raw_csv``; when it is absent, fall back (loudly) to synthetic patients if
    ``settings.allow_synthetic``, else raise :class:`InputError` (one line)."""
    path = Path(settings.raw_csv)
    if path.is_file():
        return RawTrainingData(read_patient_file(path), source=str(path), synthetic=False)
    refusal = missing_raw_file(settings)
    if refusal is not None:
        raise InputError(refusal)
    from stroke_dagster.simulate.generator import simulate_patients

    log.warning(SYNTHETIC_WARNING.format(path=path, rows=synthetic_rows))
    frame = simulate_patients(synthetic_rows, seed=seed, with_label=True)
    return RawTrainingData(
        frame, source=f"synthetic(n={synthetic_rows}, seed={seed})", synthetic=True
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def source_tags(settings: Settings) -> dict[str, str]:
    """The version tags naming the training source: the raw file (with its sha256) when it
    exists, else the synthetic generator (the decision :func:`load_raw_training_data` made)."""
    path = Path(settings.raw_csv)
    if path.is_file():
        return {
            SOURCE_TAG: "real",
            SOURCE_PATH_TAG: str(path),
            SOURCE_SHA256_TAG: file_sha256(path),
        }
    return {SOURCE_TAG: "synthetic", SOURCE_PATH_TAG: str(path)}


def tag_versions(client: Any, versions: Iterable[str], settings: Settings) -> dict[str, str]:
    """Set :func:`source_tags` on each registered version (``client``: an ``MlflowClient``)."""
    tags = source_tags(settings)
    for version in dict.fromkeys(map(str, versions)):
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version, key, value)
    return tags


def combine_labelled(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack validated labelled frames (raw file first, then labelled cohorts by day).

    Ids are only unique within a source: a cohort's patient 17 is not the raw file's patient 17.
    """
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
