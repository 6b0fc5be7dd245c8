"""The DuckDB warehouse: schema from ``sql/ddl``, short locked writes, retrying readers, a snapshot.

DuckDB lets one process hold a database file for writing, and refuses every other process (read-only
ones included) while it does. The rules here keep that from ever surfacing as a failure:

* Every access takes a lock file beside the database (``warehouse.lock``; ``fcntl.flock``):
  exclusive for writers, shared for readers. Waiting processes poll with backoff until a timeout.
* The DuckDB file itself is opened only inside that lock and only for one short operation, and
  opening it retries with backoff on DuckDB's own lock error (a ``duckdb`` CLI user who opened the
  live file directly, a process that does not use this module).
* A write is one transaction (``write_transaction``): a crash or an exception leaves the previous
  rows untouched. ``replace_partition`` deletes a day and inserts its rows in that one transaction.
* After each write the checkpointed file is copied atomically to ``warehouse_snapshot.duckdb``
  (``STROKE_WAREHOUSE_SNAPSHOT=0`` turns this off). Analysts open the snapshot read-only at any
  time: the pipeline never waits for them and they never wait for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from stroke_dagster.settings import SQL_DIR, get_settings

log = logging.getLogger(__name__)

DDL_DIR = SQL_DIR / "ddl"
SNAPSHOT_NAME = "warehouse_snapshot.duckdb"
LOCK_NAME = "warehouse.lock"
QUARANTINE_TABLE = "quarantine"
PARTITION_COLUMN = "cohort_date"
WRITE_TIMEOUT_S = float(os.environ.get("STROKE_WAREHOUSE_WRITE_TIMEOUT", "900"))
READ_TIMEOUT_S = float(os.environ.get("STROKE_WAREHOUSE_READ_TIMEOUT", "120"))
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_schema_ready: set[Path] = set()
_schema_guard = threading.Lock()

Data = pd.DataFrame | pa.Table | Path | str


class WarehouseBusyError(TimeoutError):
    """The warehouse stayed locked by another process for longer than the timeout."""


# --------------------------------------------------------------------------------------------
# Paths and schema
# --------------------------------------------------------------------------------------------


def warehouse_path() -> Path:
    return get_settings().warehouse_path


def snapshot_path() -> Path:
    return warehouse_path().with_name(SNAPSHOT_NAME)


def ddl_statements(home: Path | None = None) -> list[tuple[str, str]]:
    """``(file name, SQL)`` of every ``sql/ddl/*.sql`` by name, ``{stroke_home}`` filled in."""
    home = Path(home) if home is not None else get_settings().home
    return [
        (path.name, path.read_text(encoding="utf-8").replace("{stroke_home}", str(home)))
        for path in sorted(DDL_DIR.glob("*.sql"))
    ]


def apply_ddl(con: duckdb.DuckDBPyConnection, home: Path | None = None) -> None:
    """Create every table and view of ``sql/ddl`` (all files use ``IF NOT EXISTS``)."""
    for name, sql in ddl_statements(home):
        try:
            con.execute(sql)
        except duckdb.IOException as exc:
            # A view over Parquet files that do not exist yet (e.g. no telemetry written so far):
            # it is created on a later write, once its files appear. Nothing else is skipped.
            log.info("sql/ddl/%s not applied yet: %s", name, str(exc).splitlines()[0])
        except duckdb.Error as exc:
            raise RuntimeError(f"sql/ddl/{name}: {str(exc).splitlines()[0]}") from exc


# --------------------------------------------------------------------------------------------
# Locking and connections
# --------------------------------------------------------------------------------------------


def _backoff(attempt: int) -> float:
    return min(0.02 * (2**attempt), 1.0)


@contextlib.contextmanager
def _file_lock(db_path: Path, *, exclusive: bool, timeout: float) -> Iterator[None]:
    """Hold the lock file beside ``db_path`` (exclusive for writers, shared for readers)."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(db_path.with_name(LOCK_NAME), "a+b") as handle:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    kind = "write" if exclusive else "read"
                    raise WarehouseBusyError(
                        f"warehouse {db_path} busy: no {kind} lock after {timeout:.0f} s"
                    ) from None
                time.sleep(_backoff(attempt))
                attempt += 1
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _is_lock_error(exc: duckdb.Error) -> bool:
    text = str(exc).lower()
    return "lock" in text or "different configuration" in text


def _open(db_path: Path, *, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file, retrying with backoff while another process holds it."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_error(exc) or time.monotonic() >= deadline:
                if _is_lock_error(exc):
                    raise WarehouseBusyError(
                        f"warehouse {db_path} held by another process for {timeout:.0f} s"
                    ) from None
                raise
            time.sleep(_backoff(attempt))
            attempt += 1


def _ensure_schema(db_path: Path, timeout: float) -> None:
    """Create the database and its tables once per process (cheap afterwards)."""
    with _schema_guard:
        if db_path in _schema_ready and db_path.exists():
            return
    with _file_lock(db_path, exclusive=True, timeout=timeout):
        con = _open(db_path, read_only=False, timeout=timeout)
        try:
            apply_ddl(con, db_path.parent)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        _publish_snapshot(db_path)
    with _schema_guard:
        _schema_ready.add(db_path)


@contextlib.contextmanager
def connect(
    read_only: bool = False, *, timeout: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse held under the lock file for the ``with`` block only.

    Writers (``read_only=False``) get the tables of ``sql/ddl`` created, and on a clean exit the
    file is checkpointed and published as the snapshot. Keep the block short: every other process
    waits for it. Readers wait (up to ``STROKE_WAREHOUSE_READ_TIMEOUT`` s) instead of failing.
    """
    db_path = warehouse_path()
    timeout = (READ_TIMEOUT_S if read_only else WRITE_TIMEOUT_S) if timeout is None else timeout
    _ensure_schema(db_path, timeout)
    with _file_lock(db_path, exclusive=not read_only, timeout=timeout):
        con = _open(db_path, read_only=read_only, timeout=timeout)
        ok = False
        try:
            if not read_only:
                apply_ddl(con, db_path.parent)
            yield con
            ok = True
            if not read_only:
                con.execute("CHECKPOINT")
        finally:
            con.close()
        if ok and not read_only:
            _publish_snapshot(db_path)


@contextlib.contextmanager
def write_transaction(*, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction: committed when the block ends, rolled back if it raises."""
    with connect(read_only=False, timeout=timeout) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def _publish_snapshot(db_path: Path) -> None:
    """Copy the (checkpointed, closed, locked) database to the snapshot path atomically."""
    if os.environ.get("STROKE_WAREHOUSE_SNAPSHOT", "1") == "0" or not db_path.exists():
        return
    target = db_path.with_name(SNAPSHOT_NAME)
    tmp = target.with_name(f".{SNAPSHOT_NAME}.{os.getpid()}.tmp")
    shutil.copyfile(db_path, tmp)
    os.replace(tmp, target)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _as_date(value: str | dt.date | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _source_relation(con: duckdb.DuckDBPyConnection, data: Data, name: str) -> str:
    """Make ``data`` (DataFrame, Arrow table or Parquet path) readable as the view ``name``."""
    if isinstance(data, str | Path):
        path = str(data).replace("'", "''")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    else:
        con.register(name, data)
    return name


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    return [d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description]


def insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, data: Data, extra: dict[str, object] | None = None
) -> int:
    """Insert ``data`` into ``table`` by column name; ``extra`` columns are set to constants."""
    table = _check_identifier(table)
    source = _source_relation(con, data, "_incoming_rows")
    extra = extra or {}
    keep = [c for c in _columns(con, source) if c not in extra]
    select = ", ".join(
        [*(f'"{c}"' for c in keep), *(f'$e{i} AS "{c}"' for i, c in enumerate(extra))]
    )
    params = {f"e{i}": v for i, v in enumerate(extra.values())}
    sql = f"INSERT INTO {table} BY NAME SELECT {select} FROM {source}"
    inserted = con.execute(sql, params).fetchone()[0]
    with contextlib.suppress(duckdb.Error):
        con.unregister(source)
    return int(inserted)


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    cohort_date: str | dt.date,
    data: Data,
    extra: dict[str, object] | None = None,
) -> int:
    """Inside an open transaction: delete ``table``'s rows of the day, insert ``data`` for it."""
    day = _as_date(cohort_date)
    table = _check_identifier(table)
    con.execute(f"DELETE FROM {table} WHERE {PARTITION_COLUMN} = ?", [day])
    return insert_rows(con, table, data, {**(extra or {}), PARTITION_COLUMN: day})


def replace_partition(
    table: str,
    cohort_date: str | dt.date,
    data: Data,
    *,
    extra: dict[str, object] | None = None,
    timeout: float | None = None,
) -> int:
    """Replace the rows of one day of ``table`` by ``data`` in one transaction; rows written.

    ``data`` is a DataFrame, an Arrow table, or the path of a Parquet file (read by DuckDB
    directly, so a large day never has to fit in memory). Its ``cohort_date`` column, if any, is
    overwritten with ``cohort_date``; ``extra`` sets further columns to one value for every row.
    Re-running never duplicates; a failure (exception or crash) leaves the previous rows.
    """
    with write_transaction(timeout=timeout) as con:
        return replace_rows(con, table, cohort_date, data, extra)


def replace_quarantine_rows(
    con: duckdb.DuckDBPyConnection,
    data: Data,
    source: str,
    cohort_date: str | dt.date | None,
    quarantined_at: dt.datetime | None = None,
) -> int:
    """Inside an open transaction: replace the quarantine rows of ``(source, cohort_date)``."""
    day = _as_date(cohort_date)
    con.execute(
        f"DELETE FROM {QUARANTINE_TABLE} WHERE source = ? AND cohort_date IS NOT DISTINCT FROM ?",
        [source, day],
    )
    extra = {
        "source": source,
        "cohort_date": day,
        "quarantined_at": quarantined_at or dt.datetime.now(dt.UTC),
    }
    return insert_rows(con, QUARANTINE_TABLE, data, extra)


def write_quarantine(
    df: Data,
    source: str,
    cohort_date: str | dt.date | None,
    *,
    timeout: float | None = None,
) -> int:
    """Record rejected rows (``row_number, patient_id, reason, record``) with their origin.

    The rows replace any earlier ones of the same ``source`` and ``cohort_date`` (``None`` for
    inputs that are not a daily cohort), so a re-run never duplicates them.
    """
    with write_transaction(timeout=timeout) as con:
        return replace_quarantine_rows(con, df, source, cohort_date)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def query_df(
    sql: str, params: list | dict | None = None, *, timeout: float | None = None
) -> pd.DataFrame:
    """Run one read-only query on the live warehouse (waits while a writer holds it)."""
    with connect(read_only=True, timeout=timeout) as con:
        return con.execute(sql, params).df() if params is not None else con.execute(sql).df()
