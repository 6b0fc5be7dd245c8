"""Scoring engines for the project's forest, compared on the same fitted pipeline and rows.

    .venv/bin/python benchmarks/engines.py [--rows 1000000] [--repeats 3] [--slow-repeats 1] \
        [--forest default|deep|both]

Fits the project's pipeline (``build_pipeline``) on 5,110 simulated patients twice: the default
forest (300 trees, depth 8) and the largest the search space allows (350 trees, depth 12,
``min_samples_leaf`` 10, ``max_features`` 0.6, ``max_samples`` 0.9). Then scores ``--rows``
simulated patients with:

- sklearn: ``pipeline.predict_proba`` (``n_jobs=-1``), from the DataFrame;
- numpy walk: the engine's vectorised numpy walk (the former API scorer's method);
- numba: :class:`stroke_dagster.model.engine.ForestEngine` (its compiled kernel, all cores);
- treelite GTIL: ``treelite.sklearn.import_model`` + ``treelite.gtil.predict`` (all cores);
- ONNX Runtime: the forest converted by skl2onnx (``TreeEnsembleClassifier``, no zipmap).

The tree engines get the preprocessed float32 matrix (the engine's own preprocessing, timed
once separately, as is sklearn's ColumnTransformer); the sklearn row includes its
preprocessing. Per engine: median seconds over the repeats of this one run, rows/s, node visits
per second (visits: per row, the depth of the reached leaf summed over the trees, counted with
``forest.apply``) and ``max |p - sklearn p|`` (exact means <= 1e-12). The engine kernel also
walks each tree to its full depth (leaves are self-loops): its executed steps are printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

FORESTS: dict[str, dict[str, Any]] = {
    "default (300 trees, depth 8)": {},
    "deep (350 trees, depth 12)": {
        "n_estimators": 350,
        "max_depth": 12,
        "min_samples_leaf": 10,
        "max_features": 0.6,
        "max_samples": 0.9,
    },
}


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds of ``repeats`` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t)
    assert result is not None
    return statistics.median(seconds), np.asarray(result)


def node_visits(forest: Any, x: np.ndarray, chunk: int = 50_000) -> int:
    """Sum over rows and trees of the depth of the leaf each row reaches."""
    depths = []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        depth = np.zeros(tree.node_count, dtype=np.int64)
        for node in range(tree.node_count):  # parents come before their children
            if tree.children_left[node] >= 0:
                depth[tree.children_left[node]] = depth[tree.children_right[node]] = depth[node] + 1
        depths.append(depth)
    total = 0
    for lo in range(0, len(x), chunk):
        leaves = forest.apply(x[lo : lo + chunk])
        for t, depth in enumerate(depths):
            total += int(depth[leaves[:, t]].sum())
    return total


def onnx_session(forest: Any, width: int) -> Any:
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        forest,
        initial_types=[("X", FloatTensorType([None, width]))],
        options={id(forest): {"zipmap": False}},
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(
        onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def compare(
    label: str,
    params: dict[str, Any],
    train: Any,
    rows: Any,
    columns: dict[str, np.ndarray],
    args: argparse.Namespace,
) -> None:
    """Fit one forest and print its table."""
    import treelite

    from stroke_dagster.core.schema import FEATURES
    from stroke_dagster.model.engine import ForestEngine
    from stroke_dagster.model.training import build_pipeline

    pipeline = build_pipeline({**params, "n_jobs": -1})
    pipeline.fit(train[list(FEATURES)], train["stroke"])
    forest = pipeline.named_steps["model"]
    engine = ForestEngine.compile(pipeline)
    assert engine is not None
    engine.predict_columns({c: v[:50_000] for c, v in columns.items()})  # numba warm-up

    sk_seconds, reference = timed(lambda p=pipeline: p.predict_proba(rows)[:, 1], args.repeats)
    pre_seconds, x = timed(lambda e=engine: e.transform_columns(columns), args.repeats)
    sk_pre_seconds, sk_x = timed(
        lambda p=pipeline: p.named_steps["preprocess"].transform(rows), args.repeats
    )
    assert np.array_equal(sk_x.astype(np.float32), x), "preprocessing differs"
    del sk_x
    visits = node_visits(forest, x)
    steps = len(x) * int(engine.depths.sum())

    tl_model = treelite.sklearn.import_model(forest)
    session = onnx_session(forest, engine.width)
    runs: list[tuple[str, Callable[[], np.ndarray], int]] = [
        ("numba kernel (engine)", lambda e=engine: e.predict_matrix(x), args.repeats),
        ("numpy walk", lambda e=engine: e._walk_numpy(x), args.slow_repeats),
        (
            "treelite 4.8 GTIL",
            lambda m=tl_model: treelite.gtil.predict(m, x).reshape(len(x), -1)[:, -1],
            args.slow_repeats,
        ),
        (
            "ONNX Runtime (skl2onnx)",
            lambda s=session: s.run(["probabilities"], {"X": x})[0][:, 1],
            args.repeats,
        ),
    ]
    forest_seconds, forest_p = timed(lambda f=forest: f.predict_proba(x)[:, 1], args.repeats)
    print(
        f"\n== {label}: {visits / len(x):.0f} node visits a row, kernel steps "
        f"{steps / len(x):.0f} a row =="
    )
    print(
        f"preprocessing: engine {pre_seconds:.2f} s, sklearn ColumnTransformer "
        f"{sk_pre_seconds:.2f} s (identical float32 matrix)"
    )
    header = f"{'engine':<34}{'seconds':>9}{'rows/s':>13}{'visits/s':>14}{'max |dp|':>11}"
    print(header)
    print("-" * len(header))

    def line(name: str, seconds: float, p: np.ndarray) -> None:
        gap = float(np.max(np.abs(p - reference)))
        print(
            f"{name:<34}{seconds:9.2f}{len(x) / seconds:13,.0f}"
            f"{visits / seconds / 1e6:11,.0f} M{gap:11.1e}"
        )

    line("sklearn pipeline predict_proba", sk_seconds, reference)
    line("sklearn forest only (float32 X)", forest_seconds, forest_p)
    for name, fn, repeats in runs:
        seconds, p = timed(fn, repeats)
        line(name, seconds, p)
    total, _ = timed(lambda e=engine: e.predict_columns(columns), args.repeats)
    line("engine: columns -> p (incl. prep.)", total, engine.predict_columns(columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--slow-repeats", type=int, default=1, help="for the numpy walk and treelite"
    )
    parser.add_argument("--forest", choices=["default", "deep", "both"], default="both")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)

    from stroke_dagster.core.schema import FEATURES
    from stroke_dagster.simulate.generator import simulate_patients

    train = simulate_patients(5110, seed=1)
    rows = simulate_patients(args.rows, seed=2, with_label=False)[list(FEATURES)]
    columns = {c: rows[c].to_numpy() for c in FEATURES}
    print(f"{args.rows:,} rows, {os.cpu_count()} cores, median of {args.repeats} repeats")
    forests = list(FORESTS.items())
    if args.forest != "both":
        forests = [f for f in forests if f[0].startswith(args.forest)]
    for label, params in forests:
        compare(label, params, train, rows, columns, args)


if __name__ == "__main__":
    main()
