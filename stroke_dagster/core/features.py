"""Model inputs and the train/holdout split.

The feature lists come from :mod:`schema` (the one place columns are defined); this module only
groups them the way the model's preprocessing treats them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import (
    BINARY_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURES,
    ID,
    NUMERIC_FEATURES,
    PATIENT_KEY,
    TARGET,
)

# Imputed + scaled: the continuous measurements and the 0/1 flags (a binary column passes the
# scaler unharmed and must never be dropped by the column transformer).
SCALED_FEATURES: tuple[str, ...] = (*NUMERIC_FEATURES, *BINARY_FEATURES)
ONE_HOT_FEATURES: tuple[str, ...] = CATEGORICAL_FEATURES
HASH_BUCKETS = 1000

assert set(SCALED_FEATURES) | set(ONE_HOT_FEATURES) == set(FEATURES)


def feature_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns of ``df``, in schema order."""
    return df[list(FEATURES)]


def holdout_mask(ids: pd.Series | list[object], holdout_fraction: float = 0.2) -> np.ndarray:
    """True for the patients whose id falls in the holdout, fixed per patient.

    ``blake2b(id) mod 1000 < 1000 * holdout_fraction``: the same patient is always on the same
    side, whatever the seed, and a patient's side does not change as more data arrives. The split
    is not stratified; on average each class keeps ``holdout_fraction`` of its patients in the
    holdout (on the Kaggle file: 1,017 of 5,110 patients, 48 of the 249 strokes).
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    cut = round(HASH_BUCKETS * holdout_fraction)
    buckets = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(str(v).strip().encode(), digest_size=8).digest(), "big")
            % HASH_BUCKETS
            for v in pd.Series(ids, dtype=object)
        ),
        dtype=np.int64,
        count=len(ids),
    )
    return buckets < cut


def patient_keys(df: pd.DataFrame) -> pd.Series:
    """The patient of each row: ``patient_key`` where present, else the row's ``id``."""
    ids = df[ID].astype(str).str.strip()
    if PATIENT_KEY not in df.columns:
        return ids
    return df[PATIENT_KEY].astype("string").str.strip().fillna(ids).astype(str)


def has_recurring_patients(df: pd.DataFrame) -> bool:
    """Whether some patient has several rows (then splits must group by patient)."""
    return PATIENT_KEY in df.columns and not patient_keys(df).is_unique


def split_train_holdout(
    df: pd.DataFrame, holdout_fraction: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split labelled rows into train and holdout frames by :func:`holdout_mask` of the patient.

    A patient's rows (:func:`patient_keys`: one per labelled day it was seen) all fall on the same
    side, so "patients the model never trained on" holds per patient, not per row. Both frames
    keep every column of ``df`` and get a fresh 0..n-1 index.
    """
    if TARGET not in df.columns:
        raise InputError(f"training data needs the '{TARGET}' label column")
    if ID not in df.columns:
        raise InputError(f"training data needs the '{ID}' column (the holdout is fixed per id)")
    counts = df[TARGET].value_counts()
    if len(counts) < 2 or counts.min() < 10:
        raise InputError(
            f"training data needs at least 10 patients of each class, got {counts.to_dict()}"
        )
    mask = holdout_mask(patient_keys(df), holdout_fraction)
    train, holdout = df.loc[~mask], df.loc[mask]
    for name, part in (("train", train), ("holdout", holdout)):
        if part[TARGET].nunique() < 2:
            raise InputError(f"the {name} split has patients of one class only ({len(part)} rows)")
    return train.reset_index(drop=True), holdout.reset_index(drop=True)
