"""The warehouse: immutable Parquet files per table and day; a DuckDB file of views to open.

Layout under ``STROKE_HOME``::

    warehouse.duckdb                        the entry point: views + a small metadata table only
    warehouse/<table>/cohort_date=<D>/data~<version>.parquet            a day of a table
    warehouse/quarantine/cohort_date=<D|NULL>/source-<hash>~<version>.parquet   (day, source)
    telemetry/date=<D>/*.parquet            the API's request log (see ``api.telemetry``)

* **A write costs O(day).** A day is written to a hidden temporary file, then renamed to a new
  version name (``<key>~<version>.parquet``, version = publication time in ns). Nothing else is read
  or rewritten, whatever the history holds.
* **A day is seen whole or not at all.** A file is never modified or renamed over: DuckDB opens a
  Parquet path several times per query (metadata at bind, data at scan), so replacing the content
  behind a path could mix two versions. Each view reads every file of its glob and keeps, per day
  and key, only the newest file that a ``glob()`` listing taken at execution shows; if a new
  version lands between the two listings, that day is absent from that one query (never mixed).
  A superseded version is deleted once its successor is older than the grace period (an hour by
  default), by the next write of that day or ``stroke warehouse vacuum``.
* **Readers never wait and are never waited for.** Writers never open ``warehouse.duckdb``; its
  views expand their globs at every query, so a session open for hours (DuckDB CLI, Python,
  ``stroke sql``) sees a new day on its next query. There is no lock file.
* **Writers run in parallel.** Different days or tables are different files; two writers of the
  same day each publish a whole version and the later one wins.
* **Crash safety.** A writer killed before its rename leaves only a ``.*.tmp`` file (never matched
  by the views' globs, removed by the next write of that day); the previous version stays current.

**Object storage.** With ``storage.url = s3://bucket/prefix`` the data files (``warehouse/`` and
``telemetry/``) live under that prefix instead of ``STROKE_HOME`` (:mod:`stroke_dagster.storage`):
a day is staged in a private local scratch file and published by one ``PUT`` under its new
version name (S3 shows an object whole or not at all), listings come from the bucket, and the
views of the entry point glob ``s3://`` URLs. ``warehouse.duckdb`` stays a local file of views per
reader (under ``STROKE_HOME``); :meth:`Warehouse.connect` registers the storage's fsspec filesystem
on each connection, through which DuckDB reads the files (its ``httpfs`` extension is not used).
That filesystem keeps a directory listing for two seconds (instead of one ``HEAD`` request per
size or time lookup); each new connection starts from fresh listings, so a connection kept open
sees another machine's new day at most two seconds late.

The views are (re)built from ``sql/ddl`` only when their definition changes (a fingerprint of the
DDL and the home path kept in ``warehouse_meta``): written to a temporary file and renamed over the
entry point, so analysts holding the old file open are not disturbed. A warehouse written by the
single-file layout of earlier versions is converted once (:mod:`stroke_dagster.warehouse_migrate`).

The core takes its location and options as arguments (:class:`Warehouse`); the module-level
functions are the historical call surface and take the platform ``Settings``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa

from stroke_dagster.settings import SQL_DIR
from stroke_dagster.storage import Storage, StoragePath, fsync_dir
from stroke_dagster.warehouse_files import (
    VERSION_SEP,
    remove_superseded,
    sequence_name,
    version_name,
    version_number,
    versions,
)

if TYPE_CHECKING:
    from stroke_dagster.settings import Settings

log = logging.getLogger(__name__)

DDL_DIR = SQL_DIR / "ddl"
LAYOUT_VERSION = 2
ENTRY_NAME = "warehouse.duckdb"
DATA_DIR_NAME = "warehouse"
TELEMETRY_DIR_NAME = "telemetry"
META_TABLE = "warehouse_meta"
QUARANTINE_TABLE = "quarantine"
PARTITION_COLUMN = "cohort_date"
DEFAULT_KEY = "data"
PLACEHOLDER_KEY = "_empty"  # an empty file of the table's columns, in the NULL-day partition
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)
_ready: set[tuple[Path, str]] = set()
_ready_guard = threading.Lock()

Data = pd.DataFrame | pa.Table | Path | str  # a Path or str: a local Parquet file


# DuckDB's memory while it types and checks one partition before writing it (it spills beyond).
STAGE_MEMORY_LIMIT = "256MB"


class WarehouseBusyError(TimeoutError):
    """Kept for callers' error handlers: the Parquet layout never makes a reader or writer wait."""


@dataclass(frozen=True)
class WarehouseConfig:
    """Options of the warehouse (the ``warehouse`` section of the platform settings)."""

    fsync: bool = True  # flush a day's file to disk before it is published
    telemetry_retention_days: int = 90  # telemetry days older than this are deleted
    grace_seconds: float = 3600.0  # superseded versions are kept this long for running queries


# --------------------------------------------------------------------------------------------
# Schema: sql/ddl
# --------------------------------------------------------------------------------------------


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _as_date(value: str | dt.date | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _sql_string(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class Schema:
    """The tables (``CREATE TABLE`` files) and views (every other file) of ``sql/ddl``."""

    tables: dict[str, str]
    views: dict[str, str]

    @classmethod
    def load(cls, ddl_dir: Path = DDL_DIR) -> Schema:
        tables, views = {}, {}
        for path in sorted(Path(ddl_dir).glob("*.sql")):
            sql = path.read_text(encoding="utf-8")
            match = _CREATE_TABLE.search(sql)
            if match:
                tables[match.group(1)] = sql
            else:
                views[path.stem] = sql
        return cls(tables, views)

    def fingerprint(self) -> str:
        text = repr((LAYOUT_VERSION, sorted(self.tables.items()), sorted(self.views.items())))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def table(self, name: str) -> str:
        if _check_identifier(name) not in self.tables:
            raise ValueError(f"unknown warehouse table {name!r} (tables: {sorted(self.tables)})")
        return self.tables[name]


def ddl_statements(home: Path, ddl_dir: Path = DDL_DIR) -> list[tuple[str, str]]:
    """``(file name, SQL)`` of every ``sql/ddl/*.sql`` by name, ``{stroke_home}`` filled in."""
    return [
        (path.name, path.read_text(encoding="utf-8").replace("{stroke_home}", str(home)))
        for path in sorted(Path(ddl_dir).glob("*.sql"))
    ]


# --------------------------------------------------------------------------------------------
# Staging rows: typed and checked by the table's DDL in an in-memory database
# --------------------------------------------------------------------------------------------


def _source_relation(con: duckdb.DuckDBPyConnection, data: Data, name: str) -> str:
    """Make ``data`` (DataFrame, Arrow table or Parquet path) readable as the view ``name``."""
    if isinstance(data, str | Path):
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({_sql_string(data)})"
        )
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(directory: Path) -> None:
    """Delete temporary files of writers that died before their rename (SIGKILL, power loss)."""
    for tmp in directory.glob(".*.tmp"):
        parts = tmp.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@dataclass
class StagedFile:
    tmp: Path  # a local file (beside its partition on a local root, in the scratch directory else)
    directory: StoragePath
    key: str
    rows: int


# --------------------------------------------------------------------------------------------
# The warehouse
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Warehouse:
    """The warehouse of one ``home`` directory (see the module docstring for the layout).

    ``storage`` holds the Parquet files (default: ``home`` itself); the entry point of views
    always stays in ``home``, a local file per reader. On object storage the views glob the
    storage's URLs and :meth:`connect` registers its filesystem on the connection.
    """

    home: Path
    config: WarehouseConfig = field(default_factory=WarehouseConfig)
    ddl_dir: Path = DDL_DIR
    storage: Storage | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        if self.storage is None:
            object.__setattr__(self, "storage", Storage.local(self.home, fsync=self.config.fsync))

    @classmethod
    def from_settings(cls, settings: Settings) -> Warehouse:
        section = settings.warehouse
        config = WarehouseConfig(
            fsync=section.fsync,
            telemetry_retention_days=section.telemetry_retention_days,
            grace_seconds=section.grace_seconds,
        )
        return cls(Path(settings.home), config, storage=settings.files)

    # -- paths -----------------------------------------------------------------------------

    @property
    def entry_path(self) -> Path:
        return self.home / ENTRY_NAME

    @property
    def files(self) -> Storage:
        assert self.storage is not None  # set by __post_init__
        return self.storage

    @property
    def data_dir(self) -> StoragePath:
        return self.files.path(DATA_DIR_NAME)

    @property
    def telemetry_dir(self) -> StoragePath:
        return self.files.path(TELEMETRY_DIR_NAME)

    def schema(self) -> Schema:
        return Schema.load(self.ddl_dir)

    def partition_dir(self, table: str, day: dt.date | None) -> StoragePath:
        value = day.isoformat() if day is not None else "NULL"
        return self.data_dir / _check_identifier(table) / f"{PARTITION_COLUMN}={value}"

    def current_file(
        self, table: str, day: dt.date | None, key: str = DEFAULT_KEY
    ) -> StoragePath | None:
        """The current version of one partition (``None`` before its first write)."""
        found = versions(self.partition_dir(table, day), key, self.files)
        return found[-1] if found else None

    @staticmethod
    def quarantine_key(source: str) -> str:
        return "source-" + hashlib.sha256(source.encode()).hexdigest()[:20]

    # -- the entry point --------------------------------------------------------------------

    def view_sql(self, schema: Schema | None = None) -> list[str]:
        """The statements that define every view of the entry point."""
        schema = schema or self.schema()
        statements = []
        scratch = duckdb.connect()
        try:
            for table, ddl in schema.tables.items():
                scratch.execute(ddl)
                columns = scratch.execute(
                    "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
                    "ORDER BY column_index",
                    [table],
                ).fetchall()
                typed = ", ".join(f'NULL::{kind} AS "{name}"' for name, kind in columns)
                glob = _sql_string(self.data_dir / table / "*" / f"*{VERSION_SEP}*.parquet")
                # (str() of a path in object storage is its URL: s3://bucket/prefix/...)
                # The typed empty SELECT fixes the names and types (columns added to the DDL
                # later read as NULL from older files); an empty placeholder file per table keeps
                # the glob matching before the first write (no `allow_empty`, so that DuckDB
                # clients older than the pinned library can read the views too).
                # The glob() listing, taken after read_parquet's, keeps the newest version of each
                # (day, key): see the module docstring.
                statements.append(
                    f"CREATE OR REPLACE VIEW {table} AS\n"
                    "SELECT * EXCLUDE (empty, filename) FROM (\n"
                    f"    SELECT NULL::BOOLEAN AS empty, {typed}, NULL::VARCHAR AS filename\n"
                    "    WHERE false\n"
                    "    UNION ALL BY NAME\n"
                    f"    SELECT * FROM read_parquet({glob}, hive_partitioning = true,\n"
                    f"        hive_types = {{'{PARTITION_COLUMN}': DATE}}, union_by_name = true,\n"
                    "        filename = true)\n"
                    ")\n"
                    f"WHERE filename IN (SELECT max(file) FROM glob({glob})\n"
                    "    GROUP BY parse_dirpath(file), "
                    f"split_part(parse_filename(file), '{VERSION_SEP}', 1))"
                )
        finally:
            scratch.close()
        for sql in schema.views.values():
            statements.append(sql.replace("{stroke_home}", self.files.url))
        return statements

    def _fingerprint(self, schema: Schema) -> str:
        return f"{schema.fingerprint()}:{self.files.url}"

    def _entry_fingerprint(self) -> str | None:
        """The fingerprint stored in the entry point; ``None`` if absent or not of this layout."""
        try:
            con = duckdb.connect(str(self.entry_path), read_only=True)
        except duckdb.Error:
            return None
        try:
            row = con.execute(
                f"SELECT value FROM {META_TABLE} WHERE key = 'fingerprint'"
            ).fetchone()
            return row[0] if row else None
        except duckdb.Error:
            return None
        finally:
            con.close()

    def publish_entry(self, schema: Schema | None = None) -> Path:
        """Write the views + metadata to a fresh file and rename it over the entry point."""
        schema = schema or self.schema()
        self.home.mkdir(parents=True, exist_ok=True)
        self._ensure_placeholders(schema)  # a view over a glob matching nothing would not bind
        tmp = self.home / f".{ENTRY_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            # Written in the oldest storage format that holds it, so that DuckDB clients older
            # than the pinned library (e.g. the 1.x CLI) open the entry point too.
            con = duckdb.connect(str(tmp), config={"storage_compatibility_version": "v1.0.0"})
            self.files.register(con)  # a view binds by reading its files
            try:
                for statement in self.view_sql(schema):
                    con.execute(statement)
                con.execute(f"CREATE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
                meta = {
                    "layout_version": str(LAYOUT_VERSION),
                    "fingerprint": self._fingerprint(schema),
                    "data_dir": str(self.data_dir),
                    "telemetry_dir": str(self.telemetry_dir),
                    "storage": self.files.url,
                    "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
                con.executemany(f"INSERT INTO {META_TABLE} VALUES (?, ?)", list(meta.items()))
                con.execute("CHECKPOINT")
            finally:
                con.close()
            os.replace(tmp, self.entry_path)
        finally:
            for leftover in (tmp, Path(f"{tmp}.wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return self.entry_path

    def ensure(self) -> Path:
        """The entry point, migrated from the old layout or (re)built when its views are stale.

        Cheap after the first call in a process (one fingerprint read on the first call).
        """
        schema = self.schema()
        key = (self.home.resolve(), self._fingerprint(schema))
        with _ready_guard:
            if key in _ready and self.entry_path.exists():
                return self.entry_path
        from stroke_dagster import warehouse_migrate

        current = self._entry_fingerprint()
        if (self.home / warehouse_migrate.MIGRATING_NAME).exists() or (
            current is None and warehouse_migrate.needs_migration(self)
        ):
            warehouse_migrate.migrate(self)
            current = self._entry_fingerprint()
        self._ensure_placeholders(schema)
        if current != self._fingerprint(schema):
            self.publish_entry(schema)
        with _ready_guard:
            _ready.add(key)
        return self.entry_path

    def _ensure_placeholders(self, schema: Schema) -> None:
        """An empty file per table (and for the telemetry log) so that every view's glob matches."""
        from stroke_dagster.api.telemetry import ensure_placeholders

        files = self.files
        for table, ddl in schema.tables.items():
            directory = self.partition_dir(table, None)
            if versions(directory, PLACEHOLDER_KEY, files):
                continue
            with files.staged_file(".parquet.tmp", near=directory) as tmp:
                with duckdb.connect() as con:
                    con.execute(ddl)
                    con.execute(
                        f"COPY (SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM {table}) TO "
                        f"{_sql_string(tmp)} (FORMAT parquet)"
                    )
                files.publish(tmp, directory / version_name(PLACEHOLDER_KEY, 0), fsync=False)
        ensure_placeholders(self.telemetry_dir, storage=files)

    # -- writing ----------------------------------------------------------------------------

    def stage(
        self,
        table: str,
        day: str | dt.date | None,
        data: Data,
        extra: dict[str, object] | None = None,
        *,
        key: str = DEFAULT_KEY,
    ) -> StagedFile:
        """Write the rows of one partition to a temporary file beside it (typed and checked).

        The rows go through the table's ``CREATE TABLE`` (types, ``NOT NULL``, ``CHECK``) in an
        in-memory database; a violation raises before anything is published.
        """
        day = _as_date(day)
        ddl = self.schema().table(table)
        directory = self.partition_dir(table, day)
        if self.files.is_local:  # beside the partition: published by a rename
            local_dir = Path(directory)
            local_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale_tmp(local_dir)
        else:  # a private scratch file: published by one upload
            local_dir = self.files.scratch
            _remove_stale_tmp(local_dir)  # left by writers killed before their upload
        tmp = local_dir / f".{key}.{uuid.uuid4().hex[:12]}.{os.getpid()}.parquet.tmp"
        # A bounded buffer that spills to private scratch: memory stays flat however big the day.
        spill = Path(self.files.scratch) / f"spill-{uuid.uuid4().hex[:12]}"
        config = {"memory_limit": STAGE_MEMORY_LIMIT, "temp_directory": str(spill)}
        con = self.files.register(duckdb.connect(config=config))  # ``data`` may be in storage
        try:
            con.execute(ddl)
            rows = insert_rows(con, table, data, {**(extra or {}), PARTITION_COLUMN: day})
            con.execute(
                f"COPY (SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM {table}) TO "
                f"{_sql_string(tmp)} (FORMAT parquet, COMPRESSION zstd)"
            )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
        return StagedFile(tmp, directory, key, rows)

    def publish(self, staged: StagedFile, version: int | None = None) -> StoragePath:
        """Give a staged file its version name: from now on it is the partition's current file.

        The version is the partition's next number (the newest version's plus one), claimed by
        an exclusive create (a hard link locally, a conditional ``PUT`` on object storage): of
        two writers that pick the same number, one wins and the other takes the next. So the
        newest version is the last one published, whatever the clocks of their machines say.
        ``version`` fixes the number instead (the migration publishes with version 0, so that
        any write made meanwhile stays current).
        """
        files = self.files
        if version is not None:
            target = staged.directory / version_name(staged.key, version)
            self._publish_file(staged, target, exclusive=False)
        else:
            while True:
                found = versions(staged.directory, staged.key, files)
                number = version_number(found[-1]) + 1 if found else 1
                target = staged.directory / sequence_name(staged.key, number)
                if self._publish_file(staged, target, exclusive=True):
                    break
        remove_superseded(staged.directory, staged.key, self.config.grace_seconds, files)
        return target

    def _publish_file(self, staged: StagedFile, target: StoragePath, *, exclusive: bool) -> bool:
        if not self.files.is_local:  # one PUT: the object appears whole
            return self.files.publish(staged.tmp, target, exclusive=exclusive)
        if self.config.fsync:
            with open(staged.tmp, "rb") as handle:
                os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(staged.tmp, target)
            except FileExistsError:
                return False
            os.unlink(staged.tmp)
        else:
            os.rename(staged.tmp, target)
        if self.config.fsync:
            fsync_dir(Path(staged.directory))
        return True

    def vacuum(self) -> int:
        """Delete every version superseded longer than the grace period; files removed."""
        removed = 0
        files = self.files
        for table_dir in files.list_dirs(self.data_dir):
            for directory in files.list_dirs(table_dir, "*=*"):
                if files.is_local:
                    _remove_stale_tmp(Path(directory))
                keys = {f.name.split(VERSION_SEP, 1)[0] for f in files.list_files(directory)}
                for key in sorted(keys):
                    removed += remove_superseded(directory, key, self.config.grace_seconds, files)
        return removed

    def replace_partition(
        self,
        table: str,
        day: str | dt.date | None,
        data: Data,
        extra: dict[str, object] | None = None,
        *,
        key: str = DEFAULT_KEY,
    ) -> int:
        """Replace one day of ``table`` by ``data``; the number of rows written."""
        self.ensure()
        staged = self.stage(table, day, data, extra, key=key)
        self.publish(staged)
        return staged.rows

    def partition_days(self, table: str) -> list[dt.date | None]:
        """The days that have a partition of ``table`` (``None`` for the NULL partition)."""
        days = []
        for directory in self.files.list_dirs(self.data_dir / _check_identifier(table), "*=*"):
            value = directory.name.split("=", 1)[1]
            days.append(None if value == "NULL" else dt.date.fromisoformat(value))
        return days

    # -- reading ----------------------------------------------------------------------------

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the entry point (close it when done).

        On object storage, the storage's filesystem is registered on the connection: the views
        read the Parquet files through it (DuckDB's own ``httpfs`` extension is not needed).
        """
        return self.files.register(duckdb.connect(str(self.ensure()), read_only=True))

    def query_df(self, sql: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run one query on the warehouse (never waits for a writer)."""
        con = self.connect()
        try:
            return con.execute(sql, params).df() if params is not None else con.execute(sql).df()
        finally:
            con.close()


class WriteBatch:
    """Partitions staged by one :func:`write_transaction` block, published when it ends."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.staged: list[StagedFile] = []

    def stage(self, table: str, day: Any, data: Data, extra: dict | None, key: str) -> int:
        staged = self.warehouse.stage(table, day, data, extra, key=key)
        self.staged.append(staged)
        return staged.rows

    def discard(self) -> None:
        for staged in self.staged:
            with contextlib.suppress(FileNotFoundError):
                staged.tmp.unlink()
        self.staged.clear()


# --------------------------------------------------------------------------------------------
# The call surface used across the platform (each call names its settings)
# --------------------------------------------------------------------------------------------


def of(settings: Settings) -> Warehouse:
    """The warehouse of ``settings`` (its home and its ``warehouse`` section)."""
    return Warehouse.from_settings(settings)


def _resolve(settings: Settings | Warehouse) -> Warehouse:
    if isinstance(settings, Warehouse):
        return settings
    return Warehouse.from_settings(settings)


def exists(settings: Settings | Warehouse) -> bool:
    """Whether anything was written to the warehouse yet (its entry point here, or, on object
    storage, data files that another machine wrote)."""
    wh = _resolve(settings)
    if wh.entry_path.exists():
        return True
    return not wh.files.is_local and bool(wh.files.list_dirs(wh.data_dir))


def warehouse_path(settings: Settings | Warehouse) -> Path:
    """The entry point file analysts open (``STROKE_HOME/warehouse.duckdb``)."""
    return _resolve(settings).entry_path


@contextlib.contextmanager
def write_transaction(
    settings: Settings | Warehouse, *, timeout: float | None = None
) -> Iterator[WriteBatch]:
    """Partitions replaced inside the block are published together when it ends.

    Each staged partition is checked and written in full before any is published; an exception
    (or a crash) publishes none of them. Publication renames one file per partition, so a reader
    may see a new day of one table a moment before the same day of the next table, never a mix
    within one.
    """
    del timeout  # nothing to wait for
    warehouse = _resolve(settings)
    warehouse.ensure()
    batch = WriteBatch(warehouse)
    try:
        yield batch
    except BaseException:
        batch.discard()
        raise
    for staged in batch.staged:
        warehouse.publish(staged)


def replace_rows(
    batch: WriteBatch,
    table: str,
    cohort_date: str | dt.date,
    data: Data,
    extra: dict[str, object] | None = None,
) -> int:
    """Inside :func:`write_transaction`: replace ``table``'s rows of the day by ``data``."""
    return batch.stage(table, _as_date(cohort_date), data, extra, DEFAULT_KEY)


def replace_partition(
    table: str,
    cohort_date: str | dt.date,
    data: Data,
    *,
    extra: dict[str, object] | None = None,
    settings: Settings | Warehouse,
    timeout: float | None = None,
) -> int:
    """Replace the rows of one day of ``table`` by ``data`` atomically; rows written.

    ``data`` is a DataFrame, an Arrow table, or the path of a Parquet file (read by DuckDB
    directly). Its ``cohort_date`` column, if any, is overwritten with ``cohort_date``; ``extra``
    sets further columns to one value for every row. Re-running never duplicates; a failure
    (exception or crash) leaves the previous rows.
    """
    del timeout
    return _resolve(settings).replace_partition(table, cohort_date, data, extra)


def replace_quarantine_rows(
    batch: WriteBatch,
    data: Data,
    source: str,
    cohort_date: str | dt.date | None,
    quarantined_at: dt.datetime | None = None,
) -> int:
    """Inside :func:`write_transaction`: replace the rows of ``(source, cohort_date)``."""
    extra = {"source": source, "quarantined_at": quarantined_at or dt.datetime.now(dt.UTC)}
    key = Warehouse.quarantine_key(source)
    return batch.stage(QUARANTINE_TABLE, _as_date(cohort_date), data, extra, key)


def write_quarantine(
    df: Data,
    source: str,
    cohort_date: str | dt.date | None,
    *,
    settings: Settings | Warehouse,
    timeout: float | None = None,
) -> int:
    """Record rejected rows (``row_number, patient_id, reason, record``) with their origin.

    The rows replace any earlier ones of the same ``source`` and ``cohort_date`` (``None`` for
    inputs that are not a daily cohort), so a re-run never duplicates them.
    """
    with write_transaction(settings, timeout=timeout) as batch:
        return replace_quarantine_rows(batch, df, source, cohort_date)


def connect(settings: Settings | Warehouse) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the entry point (the caller closes it)."""
    return _resolve(settings).connect()


def query_df(
    sql: str,
    params: list | dict | None = None,
    *,
    settings: Settings | Warehouse,
    timeout: float | None = None,
) -> pd.DataFrame:
    """Run one read-only query on the warehouse (never waits: there is no lock)."""
    del timeout
    return _resolve(settings).query_df(sql, params)
