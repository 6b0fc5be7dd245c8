"""Row-level validation against :mod:`schema`: typed valid rows out, every other row quarantined.

Whole-file problems (missing columns, a column with no usable numbers) raise :class:`InputError`;
row problems never raise: the row goes to the quarantine frame with a reason, so nothing is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stroke_dagster.errors import InputError
from stroke_dagster.schema import (
    BINARY_FIELDS,
    CATEGORICAL_FIELDS,
    FEATURES,
    ID,
    MISSING_MARKERS,
    NUMERIC_FIELDS,
    REQUIRED_COLUMNS,
    TARGET,
)

QUARANTINE_COLUMNS = ("row_number", "patient_id", "reason", "record")


@dataclass
class ValidationResult:
    """``valid`` holds typed rows (id as text); ``quarantine`` one row per rejected input row."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame

    @property
    def rows_in(self) -> int:
        return len(self.valid) + len(self.quarantine)


def _text(series: pd.Series) -> pd.Series:
    """Stripped text with every missing marker turned into NA."""
    text = series.astype("string[pyarrow]").str.strip()
    return text.mask(text.isin(MISSING_MARKERS) | text.isna())


def _numeric(name: str, text: pd.Series) -> pd.Series:
    values = pd.to_numeric(text, errors="coerce")
    present = text.notna()
    if present.any() and values[present].isna().all() and present.sum() >= 1:
        raise InputError(f"column '{name}' is not numeric")
    return values.astype("float64")


def check_columns(columns: list[str] | pd.Index, *, require_label: bool = False) -> None:
    """Raise :class:`InputError` naming every required column that is absent."""
    required = (*REQUIRED_COLUMNS, TARGET) if require_label else REQUIRED_COLUMNS
    missing = [c for c in required if c not in set(columns)]
    if missing:
        raise InputError(f"missing required column(s): {', '.join(missing)}")


def validate_patients(
    raw: pd.DataFrame,
    *,
    require_label: bool = False,
    seen_ids: set[str] | None = None,
    row_offset: int = 0,
) -> ValidationResult:
    """Type and check ``raw`` (text or typed columns) against the patient schema.

    ``seen_ids`` carries ids across batches of one file so that a duplicate in a later batch is
    caught; it is updated in place with the ids accepted here. ``row_offset`` numbers rows across
    batches (1-based data-row numbers, header excluded).
    """
    check_columns(raw.columns, require_label=require_label)
    raw = raw.reset_index(drop=True)
    n = len(raw)
    reasons: list[pd.Series] = []
    out: dict[str, pd.Series] = {}

    def flag(mask: pd.Series, reason: str) -> None:
        if mask.any():
            reasons.append(pd.Series(np.where(mask, reason, None), dtype=object))

    ids = _text(raw[ID])
    # Integral floats from typed sources (Parquet, JSON) keep the integer spelling: 9046, not 9046.0
    as_num = pd.to_numeric(ids, errors="coerce")
    integral = as_num.notna() & (as_num == np.floor(as_num))
    ids = ids.mask(integral, as_num[integral].astype("Int64").astype("string"))
    flag(ids.isna(), "id is missing")
    out[ID] = ids

    for field in NUMERIC_FIELDS:
        text = _text(raw[field.name])
        values = _numeric(field.name, text)
        flag(text.notna() & values.isna(), f"{field.name} is not a number")
        if not field.nullable:
            flag(text.isna(), f"{field.name} is missing")
        flag(
            values.notna() & ~values.between(field.low, field.high),
            f"{field.name} out of range [{field.low:g}, {field.high:g}]",
        )
        out[field.name] = values

    for field in BINARY_FIELDS:
        text = _text(raw[field.name])
        values = _numeric(field.name, text)
        flag(text.isna(), f"{field.name} is missing")
        flag(text.notna() & ~values.isin([0.0, 1.0]), f"{field.name} must be 0 or 1")
        out[field.name] = values

    for field in CATEGORICAL_FIELDS:
        text = _text(raw[field.name])
        lookup = {c.lower(): c for c in field.categories}
        canonical = text.str.lower().map(lookup)
        flag(text.isna(), f"{field.name} is missing")
        flag(
            text.notna() & canonical.isna(),
            f"{field.name} is not one of {', '.join(field.categories)}",
        )
        out[field.name] = canonical.astype(object)

    if require_label or TARGET in raw.columns:
        text = _text(raw[TARGET])
        values = pd.to_numeric(text, errors="coerce")
        if require_label:
            flag(~values.isin([0.0, 1.0]), f"{TARGET} must be 0 or 1")
        out[TARGET] = values

    reason = _join_reasons(reasons, n)
    # Duplicates: the first occurrence of an id wins; later ones (here or in earlier batches) go.
    ok_so_far = reason.isna() & ids.notna()
    dup_here = ok_so_far & ids.where(ok_so_far).duplicated(keep="first")
    dup_before = ok_so_far & ids.isin(seen_ids) if seen_ids else pd.Series(False, index=raw.index)
    reason = reason.mask(dup_here | dup_before, "duplicate id")
    bad = reason.notna().to_numpy()

    typed = pd.DataFrame(out)
    valid = typed.loc[~bad].reset_index(drop=True)
    for field in BINARY_FIELDS:
        valid[field.name] = valid[field.name].astype("int64")
    valid[ID] = valid[ID].astype(object)
    if TARGET in valid.columns and require_label:
        valid[TARGET] = valid[TARGET].astype("int64")
    if seen_ids is not None:
        seen_ids.update(valid[ID].tolist())
    quarantine = _quarantine_frame(raw.loc[bad], ids[bad], reason[bad], row_offset)
    return ValidationResult(valid=valid[_ordered(valid.columns)], quarantine=quarantine)


def _ordered(columns: pd.Index) -> list[str]:
    order = [ID, *FEATURES, TARGET]
    return [c for c in order if c in columns]


def _join_reasons(reasons: list[pd.Series], n: int) -> pd.Series:
    if not reasons:
        return pd.Series([None] * n, dtype=object)
    stacked = pd.concat(reasons, axis=1)
    joined = stacked.apply(lambda row: "; ".join(r for r in row if r is not None) or None, axis=1)
    return joined.astype(object).where(joined.notna(), None)


def _quarantine_frame(
    rows: pd.DataFrame, ids: pd.Series, reasons: pd.Series, row_offset: int
) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS}).astype(
            {"row_number": "int64"}
        )
    records = [
        json.dumps({k: (None if pd.isna(v) else str(v)) for k, v in rec.items()})
        for rec in rows.to_dict(orient="records")
    ]
    return pd.DataFrame(
        {
            "row_number": (rows.index.to_numpy() + 1 + row_offset).astype("int64"),
            "patient_id": ids.astype(object).where(ids.notna(), None).to_numpy(),
            "reason": reasons.to_numpy(),
            "record": records,
        }
    )
