"""Schemathesis hooks for the contract test (loaded through ``SCHEMATHESIS_HOOKS``).

An inference request has rules JSON Schema cannot state: every feature tensor once, all with
the same number of rows, ``data`` as long as ``shape`` says. The OpenAPI document states them in
words and the service answers 422 when they are broken; for the *positive* cases of the two
``infer`` operations this hook applies exactly those rules to the generated body (each tensor
stays as generated, only repeated/missing tensors and lengths are reconciled), so "valid by
the document" means valid. Negative cases are sent as generated.
"""

from __future__ import annotations

import copy
from typing import Any

import schemathesis

from stroke_dagster.api.kserve import EXAMPLE_INFER
from stroke_dagster.core.schema import FEATURES


def _values(tensor: dict[str, Any]) -> list[Any]:
    return [v[0] if isinstance(v, list) else v for v in tensor["data"]]


def consistent_inputs(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each feature once (missing ones from the example), equal row counts, shapes to match."""
    by_name: dict[str, dict[str, Any]] = {}
    for tensor in inputs:
        by_name.setdefault(tensor["name"], copy.deepcopy(tensor))
    for example in EXAMPLE_INFER["inputs"]:
        by_name.setdefault(example["name"], copy.deepcopy(example))
    rows = len(_values(next(iter(by_name.values()))))
    fixed = []
    for tensor in by_name.values():
        values = _values(tensor)
        tensor["data"] = [values[i % len(values)] for i in range(rows)]
        tensor["shape"] = [rows, 1] if len(tensor["shape"]) == 2 else [rows]
        fixed.append(tensor)
    assert {t["name"] for t in fixed} >= set(FEATURES)
    return fixed


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if (
        meta is not None
        and meta.generation.mode.is_positive
        and case.operation.path.endswith("/infer")
        and isinstance(case.body, dict)
        and isinstance(case.body.get("inputs"), list)
        and case.body["inputs"]
    ):
        body = dict(case.body)
        body["inputs"] = consistent_inputs(body["inputs"])
        case.body = body
    return case
