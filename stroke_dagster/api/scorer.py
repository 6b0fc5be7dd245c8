"""Scoring validated patient records for the API with the core engine, or the pipeline itself.

``pipeline.predict_proba`` on a one-row DataFrame costs ~13 ms for the default 300-tree forest
(pandas column handling in the ColumnTransformer, then one Python-level call per tree).
:class:`Scorer` scores with :class:`stroke_dagster.model.engine.ForestEngine` (the pipeline
compiled to
flat arrays, exact to the last bit) when the pipeline has the known shape and the engine
reproduces its probabilities on the probe patients; any other pipeline is scored by a private
copy of the pipeline with ``n_jobs=1`` (joblib dispatch costs more than it saves on one row).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.core.schema import BINARY_FIELDS, FEATURES, NUMERIC_FIELDS
from stroke_dagster.model.engine import (
    PARITY_TOLERANCE,
    ForestEngine,
    parity,
    probe_columns,
)

log = logging.getLogger(__name__)

_NUMBER_COLUMNS = tuple(f.name for f in (*NUMERIC_FIELDS, *BINARY_FIELDS))


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Validated patient dicts as the model's typed input frame (FEATURES, NaN for missing)."""
    columns: dict[str, Any] = {}
    for name in FEATURES:
        values = [r.get(name) for r in records]
        if name in _NUMBER_COLUMNS:
            columns[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
        else:
            columns[name] = np.array(values, dtype=object)
    frame = pd.DataFrame(columns)
    for field in BINARY_FIELDS:
        if not frame[field.name].isna().any():
            frame[field.name] = frame[field.name].astype("int64")
    return frame


def probe_records(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """The engine's probe patients (:func:`stroke_dagster.model.engine.probe_columns`) as dicts."""
    columns = probe_columns(n, seed)
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, values in columns.items():
        for row, v in zip(rows, values.tolist(), strict=True):
            row[name] = None if isinstance(v, float) and v != v else v
    return rows


class Scorer:
    """Stroke probabilities for validated patient records from one registered model version.

    ``engine``: an already compiled (and checked) engine for ``pipeline``, e.g. from the model
    loader's cache; otherwise the pipeline is compiled here and checked against itself.
    """

    def __init__(self, pipeline: Any, engine: ForestEngine | None = None) -> None:
        self.pipeline = copy.deepcopy(pipeline)
        jobs = {k: 1 for k in self.pipeline.get_params() if k.endswith("n_jobs")}
        if jobs:
            self.pipeline.set_params(**jobs)
        if engine is None:
            try:
                engine = ForestEngine.compile(self.pipeline)
                if engine is not None and not parity(engine, self.pipeline) <= PARITY_TOLERANCE:
                    log.warning("compiled scoring engine disagrees with the pipeline: not used")
                    engine = None
            except Exception:  # an unforeseen pipeline detail: the pipeline itself always works
                log.warning("compiled scoring engine unavailable", exc_info=True)
                engine = None
        self.engine = engine

    @property
    def fast(self) -> bool:
        return self.engine is not None

    def predict(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Probability of stroke for each record (dicts with the FEATURES keys)."""
        if not records:
            return np.zeros(0, dtype=float)
        if self.engine is not None:
            return self.engine.predict_records(records)
        return self.pipeline.predict_proba(records_frame(records))[:, 1]
