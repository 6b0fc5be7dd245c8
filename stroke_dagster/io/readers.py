"""Reading patient files as they arrive: CSV (BOM or not, LF or CRLF, ``N/A`` markers) or Parquet.

Files are read as text; typing and checking every value is the job of :mod:`validation`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stroke_dagster.core.errors import InputError
from stroke_dagster.core.schema import RAW_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_BATCH_ROWS = 100_000
_CANONICAL = {c.lower(): c for c in RAW_COLUMNS}


def canonical_column(name: str) -> str:
    """Map a header as found in the wild (BOM, spaces, other case) to the schema's spelling."""
    cleaned = str(name).replace("\ufeff", "").strip()
    return _CANONICAL.get(cleaned.lower(), cleaned)


def _arrow_strings(arrow_type: pa.DataType) -> pd.StringDtype[Literal["pyarrow"]] | None:
    import pandas as pd

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


def _to_text_frame(table: pa.Table | pa.RecordBatch, arrow_strings: bool = False) -> pd.DataFrame:

    frame = table.to_pandas(types_mapper=_arrow_strings if arrow_strings else None)
    frame.columns = [canonical_column(c) for c in frame.columns]
    if frame.columns.duplicated().any():
        dupes = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise InputError(f"duplicate columns in input: {', '.join(dupes)}")
    return frame


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if not path.is_file():
        raise InputError(f"input is not a file: {path}")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"}


def iter_patient_batches(
    path: str | Path, batch_rows: int = DEFAULT_BATCH_ROWS, *, arrow_strings: bool = False
) -> Iterator[pd.DataFrame]:
    """Stream a patient file as text DataFrames of at most ``batch_rows`` rows.

    CSV columns are read as strings so that nothing is coerced before validation; Parquet
    columns keep their types (validation accepts both). ``arrow_strings`` keeps text columns
    Arrow-backed (``string[pyarrow]`` rather than Python objects): same values, read faster.
    """
    import pandas as pd

    for table in _iter_tables(path, batch_rows):
        if isinstance(table, list):  # a CSV with a header only
            yield pd.DataFrame({canonical_column(c): pd.Series(dtype=object) for c in table})
        else:
            yield _to_text_frame(table, arrow_strings)


def iter_patient_tables(
    path: str | Path, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.Table]:
    """:func:`iter_patient_batches` as Arrow tables (schema spelling of the column names, CSV
    columns as strings): the same batches without building DataFrames."""
    for table in _iter_tables(path, batch_rows):
        if isinstance(table, list):
            names = list(dict.fromkeys(canonical_column(c) for c in table))
            yield pa.table({n: pa.array([], pa.string()) for n in names})
        else:
            yield canonical_table(table)


def canonical_table(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """``table`` with :func:`canonical_column` names; duplicate columns raise ``InputError``."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    names = [canonical_column(c) for c in table.column_names]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"duplicate columns in input: {', '.join(dupes)}")
    return table.rename_columns(names)


def _iter_tables(path: str | Path, batch_rows: int) -> Iterator[pa.Table | pa.RecordBatch | list]:
    """Raw batches of a patient file (or the header list of a CSV without rows)."""
    path = Path(path)
    _check_path(path)
    try:
        if _is_parquet(path):
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
            return
        header = _read_header(path)
        convert = pacsv.ConvertOptions(
            # pyarrow drops a UTF-8 BOM from the first name; map both spellings to text.
            column_types={n: pa.string() for name in header for n in (name, name.lstrip("\ufeff"))},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        read = pacsv.ReadOptions(block_size=1 << 22, encoding="utf8")
        reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
        emitted = False
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= batch_rows:
                emitted = True
                table = pa.Table.from_batches(pending)
                for offset in range(0, table.num_rows - table.num_rows % batch_rows, batch_rows):
                    yield table.slice(offset, batch_rows)
                rest = table.num_rows % batch_rows
                pending = table.slice(table.num_rows - rest).to_batches() if rest else []
                pending_rows = rest
        if pending_rows:
            yield pa.Table.from_batches(pending)
        elif not emitted:
            yield header
    except InputError:
        raise
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {path.name}: {message}") from None


def _read_header(path: Path) -> list[str]:
    """The header exactly as pyarrow will see it (BOM included), for the column-type map."""
    with open(path, "rb") as handle:
        raw = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    if not raw.replace("\ufeff", "").strip():
        raise InputError(f"{path.name} is empty (no header line)")
    return next(csv.reader([raw]))


def read_patient_file(path: str | Path) -> pd.DataFrame:
    """Read a whole patient file (CSV or Parquet) into one DataFrame."""
    import pandas as pd

    frames = list(iter_patient_batches(path, batch_rows=1 << 40))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
