"""The scoring engine: the registered pipeline's ``predict_proba`` compiled to flat arrays, exact.

:meth:`ForestEngine.compile` reads a fitted pipeline of the project's shape (a ColumnTransformer
of impute [+ missing flags] + scale blocks and ``OneHotEncoder(handle_unknown="ignore")`` blocks,
then a random forest) into plain numpy arrays; anything else gives ``None`` and the caller keeps
the pipeline. The engine then needs numpy only (pyarrow columns are accepted too); it is saved as
``.npz`` + JSON, never pickled, and loading it imports neither scikit-learn nor numba.

Exactness (equal to ``pipeline.predict_proba[:, 1]`` within :data:`PARITY_TOLERANCE`, in
practice to the last bit):

- preprocessing performs scikit-learn's float64 operations in the same order (fill, flags,
  ``x -= mean``, ``x /= scale``; one-hot 0/1, unknown categories all zeros), then casts to
  float32 as the forest does;
- a tree sends a row left when ``float32 x <= float64 t``; that equals ``x <= t32`` where ``t32``
  is the largest float32 <= ``t``, so thresholds are stored as float32 rounded down;
- the positive-class leaf fractions are summed tree by tree in float64 from 0, then divided by
  the number of trees (scikit-learn's order, bit-identical to a sequential ``predict_proba``).

NaN never reaches the trees: every numeric block has an imputer (a pipeline that could send NaN
to a tree is not compiled).

A site-recalibrated version (:class:`stroke_dagster.clinical.recalibration.RecalibratedModel`
around the
pipeline) compiles to the same engine plus its logistic map, applied after the forest exactly as
``RecalibratedModel.predict_proba`` does it: ``p`` clipped to ``[eps, 1 - eps]``
(:data:`stroke_dagster.clinical.calibration.EPS`), ``z = log(p / (1 - p))``, ``q = 1 / (1 + exp(-(a
+ b *
z)))`` with the wrapper's intercept ``a`` and slope ``b`` (:class:`LogisticMap`). The same float64
operations in the same order, except that ``exp`` is numpy's where scipy's ``expit`` calls the C
library's: the two differ by at most one unit in the last place (2.2e-16 over 20 M values), far
inside :data:`PARITY_TOLERANCE`.

Checks. :func:`parity` compares the engine with the registered model's ``predict_proba`` (the
recalibrated model's for a recalibrated version) on the probe patients through every input path
the platform uses: numpy columns, the typed Arrow table production batches take
(:func:`arrow_probe_columns`: float64, int64 and dictionary-encoded text, as
:func:`stroke_dagster.io.validation.validate_table` gives them), a pandas frame and patient records
(batch and one at a time). A loaded engine is re-checked against the stored probe outputs with
:meth:`ForestEngine.max_difference` (numpy path; ``arrow=True`` adds the Arrow path, whose
conversions import pandas).

Walking the trees. Each tree's nodes are packed breadth-first with siblings adjacent, so a node
keeps one child index (``right = left + 1``) and a step is ``node = child[node] + (x > t)``. A
leaf points at itself with a +inf threshold, so every row takes exactly the tree's depth in
steps without a branch. Large batches go to a numba kernel (imported on first use, compiled
once and cached on disk). It compares integers: a float32's bits, sign-folded, order like the
float (``-0.0`` read as ``+0.0``), so each node is one int64 word (threshold key, feature,
child) and a step is two loads. Rows go in blocks so a tree's nodes stay in L1 across the block,
eight rows walk together for instruction-level parallelism, and the blocks are spread over
threads (the kernel releases the GIL). Small batches and single records use a vectorised
numpy walk (all rows and trees one level at a time), which needs no compilation.

Why this engine (``benchmarks/engines.py``: the same fitted pipeline, 1M rows, the default forest
and the deepest of the search space, 350 trees of depth 12, 2 cores): the numba kernel took
2.90 s / 3.34 s against 8.40 s / 10.66 s for scikit-learn's ``predict_proba`` (618 M / 750 M node
visits per second), within 1.1e-16 of it. ONNX Runtime through skl2onnx was about as fast as
scikit-learn (8.21 s / 9.52 s) and not exact (float32 thresholds and sums: up to 2.7e-7).
treelite 4.8's GTIL was exact but an interpreter (33.6 s / 44.3 s; its compiled path needs a C
toolchain where a model loads). The numpy walk (30.4 s / 51.8 s) stays for small batches and
single records, where numba's import and dispatch would cost more than the walk.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stroke_dagster.core.schema import (
    BINARY_FIELDS,
    CATEGORICAL_FIELDS,
    FEATURES,
    NUMERIC_FIELDS,
)

if TYPE_CHECKING:
    import pandas as pd

PARITY_TOLERANCE = 1e-12
FORMAT = "stroke-forest-engine/1"
# An engine with an output map (a recalibrated version): readers that predate maps refuse it.
FORMAT_MAPPED = "stroke-forest-engine/2"
ENGINE_CHOICE = (
    "numba kernel over breadth-first packed trees (float32 thresholds rounded down, integer "
    "keys, one word per node, self-loop leaves, row blocks, 8 interleaved rows, threads); "
    "numpy walk for small batches"
)
# Batches at least this large use the numba kernel (importing numba costs ~0.5 s once).
KERNEL_MIN_ROWS = 20_000
# Rows per block of the kernel (a block's rows walk one tree before the next tree).
BLOCK_ROWS = 256
# The numpy walk processes this many rows at a time (bounds its rows x trees arrays).
NUMPY_CHUNK_ROWS = 2048
_ARRAYS = ("feature", "threshold", "child", "value", "roots", "depths")


@dataclass
class _Block:
    """One ColumnTransformer block: numeric (impute [+ flags] [+ scale]) or one-hot."""

    kind: str  # "numeric" | "onehot"
    columns: list[str]
    fill: np.ndarray | None = None  # imputation values (numeric)
    indicator: np.ndarray | None = None  # positions of the columns whose missing flags follow
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    categories: list[list[str]] | None = None  # one-hot

    def __post_init__(self) -> None:
        if self.kind == "onehot":
            assert self.categories is not None
            self.positions, offset = [], 0
            for cats in self.categories:
                self.positions.append({c: offset + i for i, c in enumerate(cats)})
                offset += len(cats)
            self.width = offset
            self.value_sets: list[Any] = [None] * len(self.categories)
        else:
            flags = 0 if self.indicator is None else len(self.indicator)
            self.width = len(self.columns) + flags
            # the same float64 values as Python floats, for the one-record path
            self.fill_list = [float(v) for v in self.fill]  # type: ignore[union-attr]
            self.mean_list = None if self.mean is None else [float(v) for v in self.mean]
            self.scale_list = None if self.scale is None else [float(v) for v in self.scale]

    def meta(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "columns": self.columns}
        if self.kind == "onehot":
            out["categories"] = self.categories
        else:
            out["has"] = [
                k for k in ("fill", "indicator", "mean", "scale") if getattr(self, k) is not None
            ]
        return out

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        if self.kind == "onehot":
            return {}
        return {
            f"block{index}_{k}": np.asarray(getattr(self, k))
            for k in ("fill", "indicator", "mean", "scale")
            if getattr(self, k) is not None
        }


@dataclass(frozen=True)
class LogisticMap:
    """``RecalibratedModel``'s map of the forest's probability, in the same float64 operations:
    ``p`` clipped to ``[clip, 1 - clip]``, ``z = log(p / (1 - p))``, ``expit(intercept + slope *
    z)`` (see the module docstring for ``exp``)."""

    intercept: float
    slope: float
    clip: float

    def __post_init__(self) -> None:
        values = (self.intercept, self.slope, self.clip)
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            raise ValueError(f"logistic map needs finite floats, got {values!r}")
        if not 0.0 <= self.clip < 0.5:
            raise ValueError(f"logistic map clip must be in [0, 0.5), got {self.clip!r}")

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=np.float64), self.clip, 1.0 - self.clip)
        z = np.log(p / (1.0 - p))
        with np.errstate(over="ignore"):  # exp(-z) = inf gives q = 0, as expit does
            return 1.0 / (1.0 + np.exp(-(self.intercept + self.slope * z)))

    def meta(self) -> dict[str, Any]:
        return {
            "kind": "logistic",
            "intercept": self.intercept,
            "slope": self.slope,
            "clip": self.clip,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> LogisticMap:
        if meta.get("kind") != "logistic":
            raise ValueError(f"unknown output map {meta.get('kind')!r}")
        return cls(float(meta["intercept"]), float(meta["slope"]), float(meta["clip"]))


class ForestEngine:
    """A compiled pipeline: FEATURES columns in, P(stroke) out (see the module docstring).

    ``maps``: what a recalibrated version applies to the forest's probability (innermost first;
    empty for a plain pipeline).
    """

    def __init__(
        self,
        blocks: list[_Block],
        arrays: Mapping[str, np.ndarray],
        *,
        probe_expected: np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
        maps: tuple[LogisticMap, ...] | list[LogisticMap] = (),
    ) -> None:
        self.blocks = blocks
        self.maps = tuple(maps)
        self.width = sum(b.width for b in blocks)
        self.feature = np.ascontiguousarray(arrays["feature"], dtype=np.int32)
        self.threshold = np.ascontiguousarray(arrays["threshold"], dtype=np.float32)
        self.child = np.ascontiguousarray(arrays["child"], dtype=np.int32)
        self.value = np.ascontiguousarray(arrays["value"], dtype=np.float64)
        self.roots = np.ascontiguousarray(arrays["roots"], dtype=np.int32)
        self.depths = np.ascontiguousarray(arrays["depths"], dtype=np.int32)
        self.n_trees = len(self.roots)
        self.max_depth = int(self.depths.max()) if self.n_trees else 0
        if self.n_trees == 0 or len(self.feature) != len(self.threshold) != len(self.child):
            raise ValueError("malformed forest arrays")
        if int(self.feature.max()) >= self.width or int(self.child.max()) >= len(self.child):
            raise ValueError("forest arrays do not match the preprocessing width")
        if len(self.child) >= 1 << 24 or self.width > 256:
            raise ValueError("forest too large for the engine (2**24 nodes, 256 features)")
        self.probe_expected = probe_expected
        self.info = dict(info or {})
        self._words: np.ndarray | None = None  # the kernel's packed nodes, built on first use

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def compile(cls, pipeline: Any) -> ForestEngine | None:
        """The engine of a fitted pipeline of the known shape, or of a ``RecalibratedModel``
        around one (the forest, then its logistic map), else ``None``.

        The engine keeps the model's probabilities on :func:`probe_frame` (``probe_expected``)
        so that a saved engine can be re-checked at load with numpy only (:meth:`self_check`).
        """
        base, maps = _unwrap_recalibration(pipeline)
        if base is None:
            return None
        spec = _read_pipeline(base)
        if spec is None:
            return None
        blocks, forest = spec
        arrays = _pack_forest(forest)
        import sklearn

        info = {
            "sklearn_version": sklearn.__version__,
            "n_trees": len(forest.estimators_),
            "forest": type(forest).__name__,
        }
        if maps:
            info["recalibrated"] = True
        engine = cls(blocks, arrays, info=info, maps=maps)
        if engine.width != forest.n_features_in_:
            return None
        engine.probe_expected = np.asarray(
            pipeline.predict_proba(probe_frame())[:, 1], dtype=np.float64
        )
        return engine

    def save(self, directory: Path) -> None:
        """``engine.npz`` (arrays, ``allow_pickle=False`` readable) and ``engine.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        for i, block in enumerate(self.blocks):
            arrays.update(block.arrays(i))
        if self.probe_expected is not None:
            arrays["probe_expected"] = self.probe_expected
        meta: dict[str, Any] = {
            "format": FORMAT_MAPPED if self.maps else FORMAT,
            "blocks": [b.meta(i) for i, b in enumerate(self.blocks)],
            "info": self.info,
            "probe": {"n": PROBE_ROWS, "seed": PROBE_SEED},
        }
        if self.maps:
            meta["maps"] = [m.meta() for m in self.maps]
        tmp = directory / f".engine.{os.getpid()}.{threading.get_ident()}"
        np.savez(f"{tmp}.npz", **arrays)
        Path(f"{tmp}.json").write_text(json.dumps(meta, indent=1))
        os.replace(f"{tmp}.npz", directory / "engine.npz")
        os.replace(f"{tmp}.json", directory / "engine.json")

    @classmethod
    def load(cls, directory: Path) -> ForestEngine:
        """An engine written by :meth:`save` (numpy only; raises ``ValueError`` if malformed)."""
        directory = Path(directory)
        meta = json.loads((directory / "engine.json").read_text())
        if meta.get("format") not in (FORMAT, FORMAT_MAPPED):
            raise ValueError(f"not a {FORMAT_MAPPED} engine: {meta.get('format')!r}")
        maps = [LogisticMap.from_meta(m) for m in meta.get("maps") or []]
        if bool(maps) != (meta["format"] == FORMAT_MAPPED):
            raise ValueError("engine format and output maps disagree")
        with np.load(directory / "engine.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        blocks = []
        for i, spec in enumerate(meta["blocks"]):
            if spec["kind"] == "onehot":
                categories = [[str(c) for c in cats] for cats in spec["categories"]]
                blocks.append(_Block("onehot", list(spec["columns"]), categories=categories))
            elif spec["kind"] == "numeric":
                parts = {k: arrays[f"block{i}_{k}"] for k in spec["has"]}
                blocks.append(_Block("numeric", list(spec["columns"]), **parts))
            else:
                raise ValueError(f"unknown block kind {spec['kind']!r}")
        return cls(
            blocks,
            arrays,
            probe_expected=arrays.get("probe_expected"),
            info=meta.get("info"),
            maps=maps,
        )

    # -- checks -------------------------------------------------------------------------------

    def max_difference(
        self, columns: Mapping[str, Any], expected: np.ndarray, *, arrow: bool = False
    ) -> float:
        """``max |engine - expected|`` on ``columns`` (inf if shapes differ or a value is NaN).

        ``arrow=True`` (numpy columns as :func:`probe_columns` gives them) scores them a second
        time as the typed Arrow table production batches are (:func:`arrow_probe_columns`) and
        returns the larger gap. pyarrow's conversions import pandas, so the default (numpy
        columns as given) is what a load check without pandas uses.
        """
        gap = _gap(self.predict_columns(columns), expected)
        if arrow:
            gap = max(gap, _gap(self.predict_columns(arrow_probe_columns(columns)), expected))
        return gap

    def self_check(self, *, arrow: bool = False) -> float:
        """:meth:`max_difference` on the probe patients against the model's stored outputs
        (inf when none are stored): re-checks a loaded engine without scikit-learn (and with
        ``arrow=True`` on the Arrow path too)."""
        if self.probe_expected is None:
            return math.inf
        return self.max_difference(probe_columns(), self.probe_expected, arrow=arrow)

    # -- predicting ---------------------------------------------------------------------------

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """P(stroke) for FEATURES columns (numpy arrays, pyarrow arrays or chunked arrays)."""
        x = self.transform_columns(columns)
        return self.predict_matrix(x)

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        """P(stroke) for the rows of a DataFrame holding the FEATURES columns."""
        return self.predict_columns({name: df[name] for name in self.input_columns})

    def predict_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        """P(stroke) for patient dicts (FEATURES keys, ``None`` for missing) - the API's path."""
        if len(records) == 1:
            return self._finish(self._walk_numpy(self.transform_one(records[0])))
        columns = {
            name: np.array([r.get(name) for r in records], dtype=object)
            for name in self.input_columns
        }
        return self.predict_columns(columns)

    @property
    def input_columns(self) -> list[str]:
        return [c for b in self.blocks for c in b.columns]

    def transform_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The float32 matrix the trees see (rows x width, C order)."""
        n = None
        out: np.ndarray | None = None
        start = 0
        for block in self.blocks:
            if block.kind == "numeric":
                x = np.column_stack([_floats(columns[c]) for c in block.columns])
                if n is None:
                    n = len(x)
                    out = np.empty((n, self.width), dtype=np.float32)
                missing = np.isnan(x)
                if missing.any():
                    assert block.fill is not None  # every numeric block has its imputation values
                    x = np.where(missing, block.fill, x)
                if block.indicator is not None:
                    x = np.hstack([x, missing[:, block.indicator].astype(np.float64)])
                if block.mean is not None:
                    x -= block.mean
                if block.scale is not None:
                    x /= block.scale
                assert out is not None
                out[:, start : start + block.width] = x
            else:
                codes_list = [_codes(columns[c], block, j) for j, c in enumerate(block.columns)]
                if n is None:
                    n = len(codes_list[0])
                    out = np.empty((n, self.width), dtype=np.float32)
                assert out is not None
                part = np.zeros((n, block.width), dtype=np.float32)
                offset = 0
                for j, codes in enumerate(codes_list):
                    if len(codes) != n:
                        raise ValueError("columns of different lengths")
                    known = codes >= 0
                    part[np.nonzero(known)[0], offset + codes[known]] = 1.0
                    offset += len(block.categories[j])  # type: ignore[index]
                out[:, start : start + block.width] = part
            start += block.width
        assert out is not None
        return out

    def transform_one(self, record: Mapping[str, Any]) -> np.ndarray:
        """:meth:`transform_columns` of one record in plain Python floats (the same float64
        operations element by element), without the per-block numpy calls a batch needs."""
        out = [0.0] * self.width
        start = 0
        for block in self.blocks:
            if block.kind == "numeric":
                raw = [record[c] for c in block.columns]
                missing = [v is None or v != v for v in raw]
                fills = zip(raw, missing, block.fill_list, strict=True)
                x = [f if m else float(v) for v, m, f in fills]
                if block.indicator is not None:
                    x += [1.0 if missing[i] else 0.0 for i in block.indicator]
                if block.mean_list is not None:
                    x = [a - b for a, b in zip(x, block.mean_list, strict=True)]
                if block.scale_list is not None:
                    x = [a / b for a, b in zip(x, block.scale_list, strict=True)]
                out[start : start + block.width] = x
            else:
                for column, positions in zip(block.columns, block.positions, strict=True):
                    value = record[column]
                    hit = positions.get(value) if isinstance(value, str) else None
                    if hit is not None:
                        out[start + hit] = 1.0
            start += block.width
        return np.array([out], dtype=np.float32)

    def predict_matrix(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """P(stroke) for a float32 matrix from :meth:`transform_columns` (the forest's mean,
        then the output maps of a recalibrated version)."""
        n = len(x)
        if n == 0:
            return np.empty(0, dtype=np.float64)
        if n < KERNEL_MIN_ROWS:
            return self._finish(self._walk_numpy(x))
        return self._finish(self._walk_kernel(x, threads=threads))

    def _finish(self, p: np.ndarray) -> np.ndarray:
        """The forest's probabilities through the output maps (innermost first)."""
        for output_map in self.maps:
            p = output_map.apply(p)
        return p

    def _walk_numpy(self, x: np.ndarray) -> np.ndarray:
        """All rows and trees one level at a time with flat gathers (no compilation)."""
        out = np.empty(len(x), dtype=np.float64)
        for lo in range(0, len(x), NUMPY_CHUNK_ROWS):
            part = np.ascontiguousarray(x[lo : lo + NUMPY_CHUNK_ROWS], dtype=np.float32)
            n = len(part)
            flat = part.ravel()
            if n == 1:
                node = self.roots
                for _ in range(self.max_depth):
                    right = flat.take(self.feature.take(node)) > self.threshold.take(node)
                    node = self.child.take(node) + right
            else:
                node = np.tile(self.roots, n)
                base = np.repeat(np.arange(n, dtype=np.int64) * self.width, self.n_trees)
                for _ in range(self.max_depth):
                    right = flat.take(base + self.feature.take(node)) > self.threshold.take(node)
                    node = self.child.take(node) + right
            leaves = self.value.take(node).reshape(n, self.n_trees)
            # tree after tree from 0, as scikit-learn adds them
            out[lo : lo + n] = np.add.accumulate(leaves, axis=1)[:, -1] / self.n_trees
        return out

    def _walk_kernel(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        kernel = _kernel()
        if self._words is None:
            self._words = _node_words(self.feature, self.threshold, self.child)
        keys = _float_keys(np.ascontiguousarray(x, dtype=np.float32))
        out = np.empty(len(keys), dtype=np.float64)
        parts = _split(len(keys), threads or _cpu_count())
        args = (self._words, self.value, self.roots, self.depths)
        if len(parts) == 1:
            kernel(keys, *args, out, BLOCK_ROWS)
            return out

        def walk(lo: int, hi: int) -> None:
            kernel(keys[lo:hi], *args, out[lo:hi], BLOCK_ROWS)

        with ThreadPoolExecutor(len(parts)) as pool:
            futures = [pool.submit(walk, lo, hi) for lo, hi in parts]
            for f in futures:
                f.result()
        return out


def parity(engine: ForestEngine, pipeline: Any) -> float:
    """``max |engine - pipeline.predict_proba[:, 1]|`` on the probe patients, over every input
    path (:func:`parity_report`). ``pipeline`` is the registered model: a pipeline or a
    ``RecalibratedModel``."""
    return max(parity_report(engine, pipeline).values())


# Probe patients also scored one record at a time (the API's one-record path).
PARITY_SINGLE_RECORDS = 40


def parity_report(engine: ForestEngine, pipeline: Any) -> dict[str, float]:
    """``max |engine - pipeline.predict_proba[:, 1]|`` on the probe patients per input path:
    ``numpy`` columns, the ``arrow`` table production batches take (:func:`arrow_probe_columns`),
    a ``pandas`` frame, ``records`` (one batch) and ``record`` (one at a time)."""
    frame = probe_frame()
    expected = np.asarray(pipeline.predict_proba(frame)[:, 1], dtype=np.float64)
    columns = probe_columns()
    records = _records(columns)
    single = PARITY_SINGLE_RECORDS
    return {
        "numpy": _gap(engine.predict_columns(columns), expected),
        "arrow": _gap(engine.predict_columns(arrow_probe_columns(columns)), expected),
        "pandas": _gap(engine.predict_frame(frame), expected),
        "records": _gap(engine.predict_records(records), expected),
        "record": _gap(
            np.concatenate([engine.predict_records([r]) for r in records[:single]]),
            expected[:single],
        ),
    }


def _gap(got: np.ndarray, expected: Any) -> float:
    """``max |got - expected|`` (0 when empty; inf when shapes differ or a value is NaN)."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        return math.inf
    if len(got) == 0:
        return 0.0
    diff = np.abs(got - expected)
    return math.inf if np.isnan(diff).any() else float(diff.max())


def _records(columns: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Numpy columns as patient dicts (``None`` for a missing number), the API's records."""
    names = list(columns)
    rows = zip(*(columns[name].tolist() for name in names), strict=True)
    return [
        {k: None if isinstance(v, float) and v != v else v for k, v in zip(names, row, strict=True)}
        for row in rows
    ]


# -- probes ------------------------------------------------------------------------------------

PROBE_ROWS = 300
PROBE_SEED = 0


def probe_columns(n: int = PROBE_ROWS, seed: int = PROBE_SEED) -> dict[str, np.ndarray]:
    """Patients spread over the whole schema (ranges, categories, missing bmi) as numpy
    columns: float64 numbers (NaN = missing), 0/1 int64 flags, object arrays of category names.
    A few rows carry a category the schema does not know (must score as "none of them")."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for field in NUMERIC_FIELDS:
        values = rng.uniform(field.low, field.high, n)
        if field.nullable:
            values[np.arange(n) % 7 == 0] = np.nan
        columns[field.name] = values
    for field in BINARY_FIELDS:
        columns[field.name] = rng.integers(0, 2, n).astype(np.int64)
    for categorical in CATEGORICAL_FIELDS:
        names = rng.choice(np.array(categorical.categories, dtype=object), n)
        names[np.arange(n) % 29 == 5] = "unknown-category"
        columns[categorical.name] = names.astype(object)
    return {name: columns[name] for name in FEATURES}


def probe_frame(n: int = PROBE_ROWS, seed: int = PROBE_SEED) -> pd.DataFrame:
    """:func:`probe_columns` as the pipeline's input DataFrame."""
    import pandas as pd

    return pd.DataFrame(probe_columns(n, seed))


def arrow_probe_columns(columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Numpy columns (as :func:`probe_columns` gives them) as the typed Arrow table that
    :func:`stroke_dagster.io.validation.validate_table` gives production batches, column by column
    (single-chunk ``ChunkedArray``): float64 with NaN for missing, int64 flags, and text
    dictionary-encoded over the schema's categories in its spelling (values the schema does not
    know appended to the dictionary)."""
    import pyarrow as pa

    known = {field.name: list(field.categories) for field in CATEGORICAL_FIELDS}
    arrays: dict[str, Any] = {}
    for name, values in columns.items():
        if values.dtype == object:
            words = list(known.get(name, []))
            position = {w: i for i, w in enumerate(words)}
            codes = []
            for v in values.tolist():
                if v not in position:
                    position[v] = len(words)
                    words.append(v)
                codes.append(position[v])
            arrays[name] = pa.DictionaryArray.from_arrays(
                pa.array(codes, type=pa.int32()), pa.array(words, type=pa.string())
            )
        elif values.dtype.kind in "iub":
            arrays[name] = pa.array(values.astype(np.int64))
        else:
            arrays[name] = pa.array(values.astype(np.float64), type=pa.float64())
    table = pa.table(arrays)
    return {name: table[name] for name in columns}


# -- input columns -----------------------------------------------------------------------------


def _floats(column: Any) -> np.ndarray:
    """A column as float64 (missing -> NaN)."""
    if hasattr(column, "to_numpy") and not isinstance(column, np.ndarray):
        if _is_arrow(column):
            return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        return column.to_numpy(dtype=np.float64, na_value=np.nan)  # pandas
    array = np.asarray(column)
    if array.dtype == object:
        return np.array([np.nan if v is None else v for v in array], dtype=np.float64)
    return array.astype(np.float64, copy=False)


def _is_arrow(column: Any) -> bool:
    return type(column).__module__.startswith("pyarrow")


def _codes(column: Any, block: _Block, j: int) -> np.ndarray:
    """Position of each value among the block's j-th categories, -1 when unknown or missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    categories = block.categories[j]  # type: ignore[index]
    if isinstance(column, np.ndarray) and column.dtype.kind in "OU":
        return _codes_python(column, categories)  # (pa.array would import pandas)
    if type(column).__module__.startswith("pandas") and column.dtype == object:
        import pandas as pd  # a hash lookup in C; -1 for anything not a category

        return pd.Categorical(column, categories=categories).codes.astype(np.int64)
    try:
        array = column if _is_arrow(column) else pa.array(column, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
        if pa.types.is_dictionary(array.type):  # map the dictionary, then take
            if block.value_sets[j] is None:
                block.value_sets[j] = pa.array(categories, type=pa.string())
            words = array.dictionary.cast(pa.string())
            mapped = pc.fill_null(pc.index_in(words, value_set=block.value_sets[j]), -1)
            lookup = np.append(mapped.to_numpy(zero_copy_only=False), -1).astype(np.int64)
            indices = pc.fill_null(array.indices, len(words)).to_numpy(zero_copy_only=False)
            return lookup[indices]
        if pa.types.is_large_string(array.type):
            array = array.cast(pa.string())
        if not pa.types.is_string(array.type):
            raise TypeError(array.type)
        if block.value_sets[j] is None:
            block.value_sets[j] = pa.array(categories, type=pa.string())
        index = pc.index_in(array, value_set=block.value_sets[j])
        return np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    except (pa.ArrowException, TypeError):  # mixed Python objects
        return _codes_python(column, categories)


def _codes_python(column: Any, categories: list[str]) -> np.ndarray:
    """:func:`_codes` by dict lookup (anything but a str is unknown)."""
    positions = {c: i for i, c in enumerate(categories)}
    values = column.tolist() if hasattr(column, "tolist") else list(column)
    return np.fromiter(
        (positions.get(v, -1) if isinstance(v, str) else -1 for v in values),
        dtype=np.int64,
        count=len(values),
    )


# -- compiling a pipeline ----------------------------------------------------------------------


def _unwrap_recalibration(model: Any) -> tuple[Any, tuple[LogisticMap, ...]]:
    """``(pipeline, maps)`` of a model: a ``RecalibratedModel`` (exactly that type: a subclass
    may map differently) gives its base and its map, nested ones innermost first; anything else
    is its own pipeline with no map. ``(None, ())`` when a wrapper's map is not finite."""
    if type(model).__name__ != "RecalibratedModel":
        return model, ()
    from stroke_dagster.clinical.calibration import EPS
    from stroke_dagster.clinical.recalibration import RecalibratedModel

    maps: list[LogisticMap] = []
    while type(model) is RecalibratedModel:
        try:
            maps.append(LogisticMap(float(model.intercept), float(model.slope), float(EPS)))
        except (TypeError, ValueError):
            return None, ()
        model = model.base
    return model, tuple(reversed(maps))


def _read_pipeline(pipeline: Any) -> tuple[list[_Block], Any] | None:
    """The preprocessing blocks and the forest of a pipeline of the known shape, else None."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    (_, pre), (_, forest) = pipeline.steps
    if not isinstance(pre, ColumnTransformer) or type(forest) not in (
        RandomForestClassifier,
        ExtraTreesClassifier,
    ):
        return None
    if forest.n_outputs_ != 1 or 1 not in list(forest.classes_):
        return None
    if getattr(pre, "sparse_output_", False):
        return None
    blocks: list[_Block] = []
    for _, transformer, columns in pre.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            return None  # passthrough: raw values (and NaN) would reach the trees
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            return None
        columns = list(columns)
        if not columns:
            continue  # a transformer given no columns contributes nothing
        steps = (
            [s for _, s in transformer.steps]
            if isinstance(transformer, Pipeline)
            else [transformer]
        )
        if type(steps[0]) is OneHotEncoder and len(steps) == 1:
            encoder = steps[0]
            if (
                encoder.drop_idx_ is not None
                or encoder.handle_unknown != "ignore"
                or getattr(encoder, "_infrequent_enabled", False)
                or encoder.sparse_output
                or not all(isinstance(v, str) for cats in encoder.categories_ for v in cats)
            ):
                return None
            categories = [[str(v) for v in cats] for cats in encoder.categories_]
            blocks.append(_Block("onehot", columns, categories=categories))
            continue
        imputer, scaler = steps[0], steps[1] if len(steps) == 2 else None
        if (
            type(imputer) is not SimpleImputer
            or len(steps) > 2
            or (scaler is not None and type(scaler) is not StandardScaler)
            or not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values))
            or len(imputer.statistics_) != len(columns)
            or not np.isfinite(np.asarray(imputer.statistics_, dtype=np.float64)).all()
        ):
            return None
        indicator = (
            np.asarray(imputer.indicator_.features_, dtype=np.int64)
            if imputer.add_indicator
            else None
        )
        if indicator is not None and imputer.indicator_.features != "missing-only":
            return None
        blocks.append(
            _Block(
                "numeric",
                columns,
                fill=np.asarray(imputer.statistics_, dtype=np.float64),
                indicator=indicator,
                mean=None
                if scaler is None or not scaler.with_mean
                else np.asarray(scaler.mean_, np.float64),
                scale=None
                if scaler is None or not scaler.with_std
                else np.asarray(scaler.scale_, np.float64),
            )
        )
    if not blocks:
        return None
    return blocks, forest


def _round_down_float32(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 threshold (``x32 <= t`` iff ``x32 <= result``)."""
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _pack_forest(forest: Any) -> dict[str, np.ndarray]:
    """Breadth-first packed trees: siblings adjacent, leaves as +inf self-loops."""
    positive = list(forest.classes_).index(1)
    features, thresholds, children, values, roots, depths = [], [], [], [], [], []
    offset = 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        left, right = tree.children_left, tree.children_right
        n = tree.node_count
        order = np.empty(n, dtype=np.int64)  # new position -> original node
        new = np.empty(n, dtype=np.int64)  # original node -> new position
        order[0], new[0], filled = 0, 0, 1
        for k in range(n):
            o = order[k]
            if left[o] >= 0:
                order[filled], order[filled + 1] = left[o], right[o]
                new[left[o]], new[right[o]] = filled, filled + 1
                filled += 2
        if filled != n:
            raise ValueError("tree is not a binary tree rooted at node 0")
        leaf = left[order] < 0
        child = np.where(leaf, np.arange(n), new[np.where(leaf, 0, left[order])]) + offset
        threshold = _round_down_float32(np.asarray(tree.threshold[order], dtype=np.float64))
        threshold[leaf] = np.inf
        features.append(np.where(leaf, 0, tree.feature[order]).astype(np.int32))
        thresholds.append(threshold)
        children.append(child.astype(np.int32))
        values.append(np.asarray(tree.value[order, 0, positive], dtype=np.float64))
        roots.append(offset)
        depths.append(int(tree.max_depth))
        offset += n
    if offset >= 2**31:
        raise ValueError("forest too large for int32 node indices")
    return {
        "feature": np.concatenate(features),
        "threshold": np.concatenate(thresholds),
        "child": np.concatenate(children),
        "value": np.concatenate(values),
        "roots": np.asarray(roots, dtype=np.int32),
        "depths": np.asarray(depths, dtype=np.int32),
    }


# -- the compiled kernel -----------------------------------------------------------------------


def _float_keys(x: np.ndarray) -> np.ndarray:
    """Signed int32 keys ordered like the float32 values (no NaN; -0.0 is read as +0.0)."""
    bits = (x + np.float32(0.0)).view(np.int32)  # + 0.0 turns -0.0 into +0.0
    return bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))


def _node_words(feature: np.ndarray, threshold: np.ndarray, child: np.ndarray) -> np.ndarray:
    """One int64 per node: threshold key (high 32 bits), feature (8 bits), child (24 bits)."""
    keys = _float_keys(threshold.astype(np.float32))
    keys[np.isposinf(threshold)] = np.iinfo(np.int32).max  # leaves: never go right
    low = child.astype(np.int64) | (feature.astype(np.int64) << 24)
    return (keys.astype(np.int64) << 32) | low


def _walk_words(x, word, value, roots, depths, out, block_rows):  # noqa: ANN001, ANN202
    """out[i] = mean over trees of the reached leaf's value (numba-compiled; see module doc).

    ``x``: int32 keys of the float32 features; ``word``: :func:`_node_words`. Rows go through
    a tree in blocks, eight rows at a time (independent chains of loads for the CPU to overlap).
    """
    n = x.shape[0]
    n_trees = roots.shape[0]
    for lo in range(0, n, block_rows):
        hi = min(n, lo + block_rows)
        for i in range(lo, hi):
            out[i] = 0.0
        for t in range(n_trees):
            r = roots[t]
            depth = depths[t]
            i = lo
            while i + 8 <= hi:
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = r
                for _ in range(depth):
                    w = word[a0]
                    a0 = (w & 0xFFFFFF) + (x[i, (w >> 24) & 0xFF] > (w >> 32))
                    w = word[a1]
                    a1 = (w & 0xFFFFFF) + (x[i + 1, (w >> 24) & 0xFF] > (w >> 32))
                    w = word[a2]
                    a2 = (w & 0xFFFFFF) + (x[i + 2, (w >> 24) & 0xFF] > (w >> 32))
                    w = word[a3]
                    a3 = (w & 0xFFFFFF) + (x[i + 3, (w >> 24) & 0xFF] > (w >> 32))
                    w = word[a4]
                    a4 = (w & 0xFFFFFF) + (x[i + 4, (w >> 24) & 0xFF] > (w >> 32))
                    w = word[a5]
                    a5 = (w & 0xFFFFFF) + (x[i + 5, (w >> 24) & 0xFF] > (w >> 32))
                    w = word[a6]
                    a6 = (w & 0xFFFFFF) + (x[i + 6, (w >> 24) & 0xFF] > (w >> 32))
                    w = word[a7]
                    a7 = (w & 0xFFFFFF) + (x[i + 7, (w >> 24) & 0xFF] > (w >> 32))
                out[i] += value[a0]
                out[i + 1] += value[a1]
                out[i + 2] += value[a2]
                out[i + 3] += value[a3]
                out[i + 4] += value[a4]
                out[i + 5] += value[a5]
                out[i + 6] += value[a6]
                out[i + 7] += value[a7]
                i += 8
            while i < hi:
                a = r
                for _ in range(depth):
                    w = word[a]
                    a = (w & 0xFFFFFF) + (x[i, (w >> 24) & 0xFF] > (w >> 32))
                out[i] += value[a]
                i += 1
        for i in range(lo, hi):
            out[i] /= n_trees


_KERNEL: Any = None
_KERNEL_LOCK = threading.Lock()


def _kernel() -> Callable[..., None]:
    """The numba-compiled :func:`_walk_words` (imported and compiled, or read from numba's
    on-disk cache, on first use)."""
    global _KERNEL
    with _KERNEL_LOCK:
        if _KERNEL is None:
            import numba

            _KERNEL = numba.njit(nogil=True, cache=True, boundscheck=False)(_walk_words)
    return _KERNEL


def preload_kernel() -> None:
    """Import numba and load the compiled kernel in a daemon thread (e.g. while a large input
    is being read), so that the first large batch does not wait for it."""
    if _KERNEL is None:
        threading.Thread(target=_kernel, daemon=True, name="engine-kernel-load").start()


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges of similar size (fewer for small ``n``)."""
    parts = max(1, min(parts, n // BLOCK_ROWS or 1))
    edges = [round(n * k / parts) for k in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
