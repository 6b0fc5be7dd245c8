"""Row-level validation against :mod:`schema`: typed valid rows out, every other row quarantined.

Whole-file problems (missing columns, a column with no usable numbers) raise :class:`InputError`;
row problems never raise: the row goes to the quarantine frame with a reason, so nothing is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import (
    BINARY_FIELDS,
    CATEGORICAL_FIELDS,
    FEATURES,
    ID,
    MISSING_MARKERS,
    NUMERIC_FIELDS,
    PATIENT_KEY,
    REQUIRED_COLUMNS,
    TARGET,
)

if TYPE_CHECKING:
    import pandas as pd

QUARANTINE_COLUMNS = ("row_number", "patient_id", "reason", "record")


class SeenIds:
    """The ids accepted so far in one file, kept compact so memory stays flat on huge cohorts.

    Canonical integer ids (the usual case) are stored as sorted ``int64`` runs (8 bytes an id,
    runs merged as they grow); any other id in a Python set. Membership is exact. Use it in place
    of a plain ``set`` for ``validate_patients(seen_ids=...)``.
    """

    _INTEGER = r"^(?:0|[1-9][0-9]{0,17})$"

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []
        self._other: set[str] = set()

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs) + len(self._other)

    def _split(self, ids: pd.Series) -> tuple[pd.Series, np.ndarray]:

        text = ids.astype("string[pyarrow]")
        integral = text.str.match(self._INTEGER).fillna(False).to_numpy(dtype=bool)
        return text, integral

    def contains(self, ids: pd.Series) -> np.ndarray:
        """Boolean mask: which of ``ids`` (text, no NA) were added before."""
        text, integral = self._split(ids)
        found = np.zeros(len(text), dtype=bool)
        if integral.any() and self._runs:
            numbers = text[integral].astype("int64").to_numpy()
            hit = np.zeros(len(numbers), dtype=bool)
            for run in self._runs:
                pos = np.searchsorted(run, numbers).clip(max=len(run) - 1)
                hit |= run[pos] == numbers
            found[integral] = hit
        if (~integral).any() and self._other:
            found[~integral] = text[~integral].isin(list(self._other)).to_numpy(dtype=bool)
        return found

    def contains_integers(self, numbers: np.ndarray) -> np.ndarray:
        """:meth:`contains` for ids given as their int64 values (canonical integer ids)."""
        found = np.zeros(len(numbers), dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, numbers).clip(max=len(run) - 1)
            found |= run[pos] == numbers
        return found

    def update_integers(self, numbers: np.ndarray) -> None:
        """:meth:`update` for canonical integer ids given as their int64 values."""
        self._runs.append(np.unique(numbers))
        self._merge()

    def _merge(self) -> None:
        """Merge runs of similar size: O(log n) runs, O(n log n) total work. A merge holds the
        two runs and their union only (an in-place sort, not ``np.union1d``'s four arrays); a
        repeated id would only repeat an entry, never change membership."""
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            last = self._runs.pop()
            merged = np.concatenate((self._runs.pop(), last))
            del last
            merged.sort(kind="stable")
            self._runs.append(merged)

    def update(self, ids: list[str] | pd.Series) -> None:
        import pandas as pd

        text, integral = self._split(pd.Series(ids, dtype=object))
        if integral.any():
            self._runs.append(np.unique(text[integral].astype("int64").to_numpy()))
            self._merge()
        self._other.update(text[~integral].tolist())


def _seen_before(ids: pd.Series, seen_ids: set[str] | SeenIds) -> np.ndarray:
    """Mask of ``ids`` already in ``seen_ids`` (cost proportional to the batch, not the set)."""

    present = ids.notna().to_numpy(dtype=bool)
    found = np.zeros(len(ids), dtype=bool)
    if not present.any():
        return found
    if isinstance(seen_ids, SeenIds):
        found[present] = seen_ids.contains(ids[present])
    else:
        found[present] = [i in seen_ids for i in ids[present].tolist()]
    return found


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


def _to_float(text: pd.Series) -> pd.Series:
    """``pd.to_numeric(text, errors="coerce")`` as float64; Arrow's cast when every value parses."""
    import pandas as pd

    try:
        values = pc.cast(text.array._pa_array, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, AttributeError):
        values = None
    if values is None or np.isinf(values).any():  # spellings pandas and Arrow read differently
        return pd.to_numeric(text, errors="coerce").astype("float64")
    return pd.Series(values, index=text.index, dtype="float64")


def _numeric(name: str, text: pd.Series) -> pd.Series:
    values = _to_float(text)
    present = text.notna()
    if present.any() and values[present].isna().all() and present.sum() >= 1:
        raise InputError(f"column '{name}' is not numeric")
    return values.astype("float64")


def _canonical_category(
    text: pd.Series, categories: tuple[str, ...]
) -> tuple[pd.Series, np.ndarray]:
    """Case-insensitive match of ``text`` to ``categories``: the category's spelling (or NA),
    and the mask of values that match none (missing ones included)."""
    import pandas as pd

    lowered = pc.utf8_lower(text.array._pa_array)
    index = pc.index_in(lowered, value_set=pa.array([c.lower() for c in categories]))
    codes = pc.fill_null(index, -1).to_numpy(zero_copy_only=False)
    spelled = np.array([*categories, np.nan], dtype=object)[codes]  # -1: no match -> NaN
    return pd.Series(spelled, index=text.index, dtype=object), codes < 0


_INTEGER_ID = r"^(?:0|[1-9][0-9]{0,14})$"  # at most 15 digits: exact as a float64


def _canonical_integers(ids: pd.Series) -> bool:
    """True when every present id is already an integer in canonical spelling (no sign, no
    leading zero), which the integer normalisation of ids would leave unchanged."""
    return bool(pc.all(pc.match_substring_regex(ids.array._pa_array, _INTEGER_ID)).as_py())


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
    seen_ids: set[str] | SeenIds | None = None,
    row_offset: int = 0,
) -> ValidationResult:
    """Type and check ``raw`` (text or typed columns) against the patient schema.

    ``seen_ids`` carries ids across batches of one file so that a duplicate in a later batch is
    caught; it is updated in place with the ids accepted here. ``row_offset`` numbers rows across
    batches (1-based data-row numbers, header excluded).
    """
    import pandas as pd

    check_columns(raw.columns, require_label=require_label)
    raw = raw.reset_index(drop=True)
    n = len(raw)
    reasons: list[pd.Series] = []
    out: dict[str, pd.Series] = {}

    def flag(mask: pd.Series, reason: str) -> None:
        if mask.any():
            # numpy's stubs leave None out of ArrayLike; at run time it makes an object array
            marked = np.where(mask, reason, None)  # type: ignore[call-overload]
            reasons.append(pd.Series(marked, dtype=object))

    ids = _text(raw[ID])
    # Integral floats from typed sources (Parquet, JSON) keep the integer spelling: 4711, not 4711.0
    if not _canonical_integers(ids):  # else already spelled as integers (the common case)
        as_num = pd.to_numeric(ids, errors="coerce")
        integral = as_num.notna() & (as_num == np.floor(as_num))
        ids = ids.mask(integral, as_num[integral].astype("Int64").astype("string"))
    flag(ids.isna(), "id is missing")
    out[ID] = ids
    if PATIENT_KEY in raw.columns:  # carried through for the split (see schema.PATIENT_KEY)
        keys = _text(raw[PATIENT_KEY])
        flag(keys.isna() & ids.notna(), "patient key is missing")
        out[PATIENT_KEY] = keys.astype(object)

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

    for categorical in CATEGORICAL_FIELDS:
        text = _text(raw[categorical.name])
        canonical, unknown = _canonical_category(text, categorical.categories)
        flag(text.isna(), f"{categorical.name} is missing")
        flag(
            text.notna() & unknown,
            f"{categorical.name} is not one of {', '.join(categorical.categories)}",
        )
        out[categorical.name] = canonical.astype(object)

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
    if seen_ids:
        dup_before = ok_so_far & pd.Series(_seen_before(ids, seen_ids), index=raw.index)
    else:
        dup_before = pd.Series(False, index=raw.index)
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
    order = [ID, *FEATURES, TARGET, PATIENT_KEY]
    return [c for c in order if c in columns]


def _join_reasons(reasons: list[pd.Series], n: int) -> pd.Series:
    import pandas as pd

    if not reasons:
        return pd.Series(np.full(n, None, dtype=object))
    stacked = pd.concat(reasons, axis=1)
    joined = [
        "; ".join(r for r in row if r is not None) or None
        for row in stacked.itertuples(index=False, name=None)
    ]
    return pd.Series(joined, index=stacked.index, dtype=object)


def _quarantine_frame(
    rows: pd.DataFrame, ids: pd.Series, reasons: pd.Series, row_offset: int
) -> pd.DataFrame:
    import pandas as pd

    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS}).astype(
            {"row_number": "int64"}
        )
    records = [
        json.dumps({k: (None if pd.isna(v) else str(v)) for k, v in rec.items()})
        for rec in rows.to_dict(orient="records")
    ]
    # pandas-stubs leave None out of `where`'s `other`; pandas puts None in the missing slots
    patient_ids = ids.astype(object).where(ids.notna(), None)  # type: ignore[call-overload]
    return pd.DataFrame(
        {
            "row_number": (rows.index.to_numpy() + 1 + row_offset).astype("int64"),
            "patient_id": patient_ids.to_numpy(),
            "reason": reasons.to_numpy(),
            "record": records,
        }
    )


# -- the all-valid fast path --------------------------------------------------------------------

_MARKERS = pa.array(sorted(MISSING_MARKERS), type=pa.string())


def validate_table(table: pa.Table, *, seen_ids: SeenIds | None = None) -> pa.Table | None:
    """The typed valid rows of a batch whose rows are *all* valid and plainly spelled, without
    pandas; ``None`` (and ``seen_ids`` untouched) when any row needs :func:`validate_patients`.

    Plainly spelled: ids are canonical integers (no sign, no leading zero, at most 15 digits),
    and no value needs stripping. On such a batch :func:`validate_patients` accepts every row
    with these values: the same numbers (Arrow's float parsing, which it also uses), missing
    markers, ranges, 0/1 flags, case-insensitive categories (given in the schema's spelling, as
    dictionary-encoded strings) and duplicate checks (within the batch and against
    ``seen_ids``). Files with a ``stroke`` column always take the general path.
    """
    names = set(table.column_names)
    if not set(REQUIRED_COLUMNS) <= names or TARGET in names or table.num_rows == 0:
        return None
    ids = _plain(table[ID])
    if pa.types.is_integer(ids.type):
        if ids.null_count or pc.any(pc.less(ids, 0)).as_py():
            return None
        ids = pc.cast(ids, pa.string())
    if not pa.types.is_string(ids.type) or ids.null_count:
        return None
    if not pc.all(pc.match_substring_regex(ids, _INTEGER_ID)).as_py():
        return None
    numbers = pc.cast(ids, pa.int64()).to_numpy()
    if len(np.unique(numbers)) != len(numbers):
        return None
    if seen_ids is not None and seen_ids.contains_integers(numbers).any():
        return None
    out: dict[str, pa.Array] = {ID: ids}
    for field in (*NUMERIC_FIELDS, *BINARY_FIELDS):
        values = _plain_numbers(_plain(table[field.name]))
        if values is None:
            return None
        missing = np.isnan(values)
        if missing.any() and (not field.nullable or field in BINARY_FIELDS):
            return None
        present = values[~missing] if missing.any() else values
        if field in BINARY_FIELDS:
            if not np.isin(present, (0.0, 1.0)).all():
                return None
            out[field.name] = pa.array(values.astype(np.int64))
        else:
            if len(present) and (present.min() < field.low or present.max() > field.high):
                return None
            out[field.name] = pa.array(values, type=pa.float64())
    for categorical in CATEGORICAL_FIELDS:
        text = _plain(table[categorical.name])
        if not pa.types.is_string(text.type):
            return None
        lowered = pa.array([c.lower() for c in categorical.categories], type=pa.string())
        codes = pc.index_in(pc.utf8_lower(text), value_set=lowered)
        if codes.null_count:
            return None
        out[categorical.name] = pa.DictionaryArray.from_arrays(
            codes, pa.array(categorical.categories, type=pa.string())
        )
    if seen_ids is not None:
        seen_ids.update_integers(numbers)
    return pa.table({name: out[name] for name in (ID, *FEATURES)})


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array (large strings as strings)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    return column


def _plain_numbers(column: pa.Array) -> np.ndarray | None:
    """float64 values, NaN where missing; ``None`` when a value is not a plain finite number."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        return None if np.isinf(values).any() else values
    if not pa.types.is_string(column.type) or column.null_count:
        return None
    marked = pc.is_in(column, value_set=_MARKERS)
    text = (
        pc.if_else(marked, pa.scalar(None, pa.string()), column)
        if pc.any(marked).as_py()
        else column
    )
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(
        values[~marked.to_numpy(zero_copy_only=False)]
    ).all():  # nan / inf spelled out
        return None
    return values
