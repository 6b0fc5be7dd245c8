"""Scoring patient records with a registered model, fast enough for one patient per request.

``pipeline.predict_proba`` on a one-row DataFrame costs ~13 ms for the default 300-tree forest
(pandas column handling in the ColumnTransformer, then one Python-level call per tree), and ~3x
more with ``n_jobs=-1`` (joblib dispatch). :class:`Scorer` keeps a private copy of the pipeline
with ``n_jobs=1`` and, when the pipeline has the known shape (impute [+ missing flags] + scale /
one-hot columns, then a random forest), a *compiled* path: the preprocessing as plain numpy
arithmetic and all trees walked at once over flattened node arrays. It performs the same
floating-point operations in the same order as scikit-learn (float32 inputs to the trees, per-tree
leaf fractions summed tree by tree, divided by the number of trees), and it is only switched on
after it reproduced the pipeline's probabilities *exactly* on a few hundred probe patients drawn
from the schema. Any other pipeline shape is scored by the pipeline itself.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stroke_dagster.schema import (
    BINARY_FIELDS,
    CATEGORICAL_FIELDS,
    FEATURES,
    NUMERIC_FIELDS,
)

log = logging.getLogger(__name__)

# The compiled path walks this many patients at a time (bounds its (rows x trees) arrays).
CHUNK_ROWS = 1024
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


@dataclass
class _Block:
    """One ColumnTransformer block: numeric (impute + scale) or one-hot."""

    columns: list[str]
    fill: np.ndarray | None = None  # imputation values, numeric blocks
    indicator: np.ndarray | None = None  # columns whose missing flags are appended (imputer)
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    positions: list[dict[str, int]] | None = None  # category -> output offset, one-hot blocks
    width: int = 0

    def __post_init__(self) -> None:
        # the same float64 values as Python floats, for the one-record path
        self.fill_list = [] if self.fill is None else [float(v) for v in self.fill]
        self.mean_list = [] if self.mean is None else [float(v) for v in self.mean]
        self.scale_list = [] if self.scale is None else [float(v) for v in self.scale]


class CompiledPipeline:
    """The known pipeline shape as numpy operations (see the module docstring)."""

    def __init__(self, blocks: list[_Block], forest: Any) -> None:
        self.blocks = blocks
        self.width = sum(b.width for b in blocks)
        self.n_trees = len(forest.estimators_)
        positive = list(forest.classes_).index(1)
        lefts, rights, features, thresholds, values, nan_left = [], [], [], [], [], []
        offset = 0
        depth = 0
        for tree in (e.tree_ for e in forest.estimators_):
            n = tree.node_count
            own = np.arange(offset, offset + n)
            leaf = tree.children_left < 0
            # A leaf points at itself and compares against +inf, so walking it again is a no-op.
            lefts.append(np.where(leaf, own, tree.children_left + offset))
            rights.append(np.where(leaf, own, tree.children_right + offset))
            features.append(np.where(leaf, 0, tree.feature))
            thresholds.append(np.where(leaf, np.inf, tree.threshold))
            values.append(tree.value[:, 0, positive])
            nan_left.append(np.asarray(tree.missing_go_to_left, dtype=bool) & ~leaf)
            offset += n
            depth = max(depth, int(tree.max_depth))
        self.roots = np.cumsum([0] + [len(v) for v in values[:-1]])
        self.left = np.concatenate(lefts)
        self.right = np.concatenate(rights)
        # children[2 * node + 1] is the right child: one gather per level on the fast walk
        self.children = np.stack([self.left, self.right], axis=1).ravel()
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        self.value = np.concatenate(values)
        self.nan_left = np.concatenate(nan_left)
        self.depth = depth

    def transform_one(self, record: dict[str, Any]) -> np.ndarray:
        """:meth:`transform` of one record in plain Python floats (the same float64 operations,
        element by element), without the per-block numpy calls a batch needs."""
        out = [0.0] * self.width
        start = 0
        for block in self.blocks:
            if block.positions is None:
                raw = [record[c] for c in block.columns]
                missing = [v is None or v != v for v in raw]
                fills = zip(raw, missing, block.fill_list, strict=True)
                x = [f if m else float(v) for v, m, f in fills]
                if block.indicator is not None:
                    x += [1.0 if missing[i] else 0.0 for i in block.indicator]
                if block.mean is not None:
                    x = [a - b for a, b in zip(x, block.mean_list, strict=True)]
                if block.scale is not None:
                    x = [a / b for a, b in zip(x, block.scale_list, strict=True)]
                out[start : start + block.width] = x
            else:
                for column, positions in zip(block.columns, block.positions, strict=True):
                    hit = positions.get(record[column])
                    if hit is not None:
                        out[start + hit] = 1.0
            start += block.width
        return np.array([out], dtype=np.float32)

    def transform(self, records: list[dict[str, Any]]) -> np.ndarray:
        """The preprocessed matrix, as float32 (what the trees compare against)."""
        if len(records) == 1:
            return self.transform_one(records[0])
        out = np.zeros((len(records), self.width), dtype=np.float64)
        start = 0
        for block in self.blocks:
            if block.positions is None:
                x = np.array(
                    [[np.nan if r[c] is None else r[c] for c in block.columns] for r in records],
                    dtype=np.float64,
                )
                missing = np.isnan(x)
                x = np.where(missing, block.fill, x)
                if block.indicator is not None:
                    x = np.hstack([x, missing[:, block.indicator].astype(np.float64)])
                if block.mean is not None:
                    x -= block.mean
                if block.scale is not None:
                    x /= block.scale
                out[:, start : start + block.width] = x
            else:
                for i, record in enumerate(records):
                    for column, positions in zip(block.columns, block.positions, strict=True):
                        hit = positions.get(record[column])
                        if hit is not None:
                            out[i, start + hit] = 1.0
            start += block.width
        return out.astype(np.float32)

    def predict_proba(self, records: list[dict[str, Any]]) -> np.ndarray:
        x = self.transform(records).astype(np.float64)
        if np.isnan(x).any():
            return self._walk_with_missing(x)
        # Every row walks every tree with flat gathers (``take``): a few numpy calls per level,
        # whatever the number of rows. Without NaN, ``value > threshold`` means "go right".
        n = len(records)
        flat = x.ravel()
        feature, threshold, children = self.feature, self.threshold, self.children
        if n == 1:
            node = self.roots
            for _ in range(self.depth):
                right = flat.take(feature.take(node)) > threshold.take(node)
                node = children.take(2 * node + right)
            return self._average(self.value.take(node).reshape(1, self.n_trees))
        node = np.tile(self.roots, n)
        base = np.repeat(np.arange(n) * self.width, self.n_trees)
        for _ in range(self.depth):
            right = flat.take(base + feature.take(node)) > threshold.take(node)
            node = children.take(2 * node + right)
        return self._average(self.value.take(node).reshape(n, self.n_trees))

    def _walk_with_missing(self, x: np.ndarray) -> np.ndarray:
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), self.n_trees)).copy()
        for _ in range(self.depth):
            value = x[rows, self.feature[node]]
            go_left = (value <= self.threshold[node]) | (np.isnan(value) & self.nan_left[node])
            node = np.where(go_left, self.left[node], self.right[node])
        return self._average(self.value[node])

    def _average(self, leaves: np.ndarray) -> np.ndarray:
        # scikit-learn adds the trees' leaf fractions one tree after the other, starting from 0.
        return np.add.accumulate(leaves, axis=1)[:, -1] / self.n_trees


def _compile(pipeline: Any) -> CompiledPipeline | None:
    """A :class:`CompiledPipeline` when ``pipeline`` has the known shape, else ``None``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    (_, pre), (_, forest) = pipeline.steps
    if not isinstance(pre, ColumnTransformer) or type(forest) is not RandomForestClassifier:
        return None
    if forest.n_outputs_ != 1 or 1 not in list(forest.classes_):
        return None
    blocks: list[_Block] = []
    for _, transformer, columns in pre.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            return None
        columns = list(columns)
        if isinstance(transformer, Pipeline):
            steps = [s for _, s in transformer.steps]
            if (
                len(steps) != 2
                or type(steps[0]) is not SimpleImputer
                or type(steps[1]) is not StandardScaler
                or not np.isnan(steps[0].missing_values)
                or np.isnan(steps[0].statistics_).any()
            ):
                return None
            imputer, scaler = steps
            # add_indicator: flags of the columns that had missing values in training, appended
            indicator = np.asarray(imputer.indicator_.features_) if imputer.add_indicator else None
            blocks.append(
                _Block(
                    columns,
                    fill=np.asarray(imputer.statistics_, dtype=np.float64),
                    indicator=indicator,
                    mean=scaler.mean_ if scaler.with_mean else None,
                    scale=scaler.scale_ if scaler.with_std else None,
                    width=len(columns) + (0 if indicator is None else len(indicator)),
                )
            )
        elif type(transformer) is OneHotEncoder:
            if (
                transformer.drop_idx_ is not None
                or transformer.handle_unknown != "ignore"
                or getattr(transformer, "_infrequent_enabled", False)
                or transformer.sparse_output
            ):
                return None
            positions, width = [], 0
            for cats in transformer.categories_:
                positions.append({str(c): width + i for i, c in enumerate(cats)})
                width += len(cats)
            blocks.append(_Block(columns, positions=positions, width=width))
        else:
            return None
    return CompiledPipeline(blocks, forest)


def probe_records(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """Patients spread over the whole schema (ranges, categories, missing bmi), for checks."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for field in NUMERIC_FIELDS:
        values = rng.uniform(field.low, field.high, n)
        for i, row in enumerate(rows):
            row[field.name] = None if field.nullable and i % 7 == 0 else float(values[i])
    for field in BINARY_FIELDS:
        for row, v in zip(rows, rng.integers(0, 2, n), strict=True):
            row[field.name] = int(v)
    for field in CATEGORICAL_FIELDS:
        for row, v in zip(rows, rng.choice(field.categories, n), strict=True):
            row[field.name] = str(v)
    return rows


class Scorer:
    """Stroke probabilities for validated patient records from one registered model version."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = copy.deepcopy(pipeline)
        jobs = {k: 1 for k in self.pipeline.get_params() if k.endswith("n_jobs")}
        if jobs:
            self.pipeline.set_params(**jobs)
        try:
            self.compiled = _compile(self.pipeline)
            if self.compiled is not None and not self._compiled_matches():
                log.warning("compiled scoring path disagrees with the pipeline: not used")
                self.compiled = None
        except Exception:  # an unforeseen pipeline detail: the pipeline itself always works
            log.warning("compiled scoring path unavailable", exc_info=True)
            self.compiled = None

    def _compiled_matches(self) -> bool:
        assert self.compiled is not None
        probes = probe_records()
        expected = self.pipeline.predict_proba(records_frame(probes))[:, 1]
        batch = self.compiled.predict_proba(probes)
        single = np.concatenate([self.compiled.predict_proba([r]) for r in probes[:20]])
        return bool(np.array_equal(batch, expected) and np.array_equal(single, expected[:20]))

    @property
    def fast(self) -> bool:
        return self.compiled is not None

    def predict(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Probability of stroke for each record (dicts with the FEATURES keys)."""
        if not records:
            return np.zeros(0, dtype=float)
        if self.compiled is not None:
            return np.concatenate(
                [
                    self.compiled.predict_proba(records[i : i + CHUNK_ROWS])
                    for i in range(0, len(records), CHUNK_ROWS)
                ]
            )
        return self.pipeline.predict_proba(records_frame(records))[:, 1]
