"""Model inputs and the train/holdout split.

The feature lists come from :mod:`schema` (the one place columns are defined); this module only
groups them the way the model's preprocessing treats them.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from stroke_dagster.errors import InputError
from stroke_dagster.schema import (
    BINARY_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    TARGET,
)

# Imputed + scaled: the continuous measurements and the 0/1 flags (a binary column passes the
# scaler unharmed and must never be dropped by the column transformer).
SCALED_FEATURES: tuple[str, ...] = (*NUMERIC_FEATURES, *BINARY_FEATURES)
ONE_HOT_FEATURES: tuple[str, ...] = CATEGORICAL_FEATURES
MODEL_FEATURES: tuple[str, ...] = FEATURES

assert set(SCALED_FEATURES) | set(ONE_HOT_FEATURES) == set(FEATURES)


def feature_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns of ``df``, in schema order."""
    return df[list(FEATURES)]


def split_train_holdout(
    df: pd.DataFrame, holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified (on ``stroke``), seeded split of labelled patients into train and holdout frames.

    Both frames keep every column of ``df`` and get a fresh 0..n-1 index.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if TARGET not in df.columns:
        raise InputError(f"training data needs the '{TARGET}' label column")
    counts = df[TARGET].value_counts()
    if len(counts) < 2 or counts.min() < 10:
        raise InputError(
            f"training data needs at least 10 patients of each class, got {counts.to_dict()}"
        )
    train, holdout = train_test_split(
        df, test_size=holdout_fraction, stratify=df[TARGET], random_state=seed
    )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)
