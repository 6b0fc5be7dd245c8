"""One-time conversion of a single-file warehouse (tables in ``warehouse.duckdb``) to Parquet days.

Earlier versions kept every row inside ``warehouse.duckdb`` (plus ``warehouse_snapshot.duckdb``
and ``warehouse.lock``). :func:`migrate` (run by ``stroke warehouse migrate``, and automatically by
the first warehouse access that finds the old file):

1. renames the old file to ``warehouse.migrating.duckdb`` (one process wins the rename);
2. writes every day of every table (every ``(day, source)`` of ``quarantine``) as its partition
   file, with the lowest version number: a newer write of that partition made meanwhile stays
   the current one;
3. checks that each written partition holds exactly the rows of that day in the old file;
4. builds the entry point of views and keeps the old file as ``warehouse.v1.duckdb``.

A crash at any point is resumed by the next run (it writes the days again, as version 0). Tables
of the old file that the DDL does not define are left in the kept file and reported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import duckdb

from stroke_dagster.warehouse import (
    DEFAULT_KEY,
    PARTITION_COLUMN,
    QUARANTINE_TABLE,
    Warehouse,
    versions,
)

MIGRATING_NAME = "warehouse.migrating.duckdb"
BACKUP_NAME = "warehouse.v1.duckdb"
OLD_SIDE_FILES = ("warehouse_snapshot.duckdb", "warehouse.lock")


@dataclass
class MigrationResult:
    rows: dict[str, int] = field(default_factory=dict)  # rows converted per table
    partitions: int = 0
    superseded: list[str] = field(default_factory=list)  # partitions newer writes replaced
    skipped_tables: list[str] = field(default_factory=list)  # not defined in sql/ddl
    backup: Path | None = None

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "partitions": self.partitions,
            "superseded": self.superseded,
            "skipped_tables": self.skipped_tables,
            "backup": str(self.backup) if self.backup else None,
        }


def _base_tables(path: Path) -> set[str] | None:
    """Base tables of a DuckDB file; ``None`` when it cannot be opened read-only."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    finally:
        con.close()


def is_old_layout(path: Path, tables: set[str]) -> bool:
    """Whether ``path`` is a warehouse of the single-file layout (holds one of ``tables``)."""
    if not path.is_file():
        return False
    found = _base_tables(path)
    return bool(found and found & tables)


def needs_migration(warehouse: Warehouse) -> bool:
    if (warehouse.home / MIGRATING_NAME).exists():
        return True
    return is_old_layout(warehouse.entry_path, set(warehouse.schema().tables))


def _rename(src: Path, dst: Path) -> bool:
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        return False
    return True


def _open_exclusive(path: Path, timeout: float) -> duckdb.DuckDBPyConnection | None:
    """Open the file being migrated; ``None`` once another process finished migrating it."""
    deadline = time.monotonic() + timeout
    while True:
        if not path.exists():
            return None
        try:
            return duckdb.connect(str(path))
        except duckdb.Error as exc:  # another process is migrating it
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _groups(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    if table == QUARANTINE_TABLE:
        sql = f"SELECT DISTINCT {PARTITION_COLUMN}, source FROM {table} ORDER BY 1, 2"
    else:
        sql = f"SELECT DISTINCT {PARTITION_COLUMN} FROM {table} ORDER BY 1"
    return con.execute(sql).fetchall()


def _count_file(warehouse: Warehouse, path: PurePath) -> int:
    with duckdb.connect() as con:
        warehouse.files.register(con)
        sql = "SELECT count(*) FROM read_parquet(?)"
        return int(con.execute(sql, [warehouse.files.uri(path)]).fetchone()[0])


def migrate(warehouse: Warehouse, *, timeout: float = 600.0) -> MigrationResult:
    """Convert the single-file warehouse of ``warehouse.home``, if any; see the module docstring."""
    result = MigrationResult()
    home = warehouse.home
    migrating = home / MIGRATING_NAME
    schema = warehouse.schema()
    old = is_old_layout(warehouse.entry_path, set(schema.tables))
    if old and _rename(warehouse.entry_path, migrating):
        _rename(Path(f"{warehouse.entry_path}.wal"), Path(f"{migrating}.wal"))
    con = _open_exclusive(migrating, timeout)
    if con is None:
        return result
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        result.skipped_tables = sorted(present - set(schema.tables))
        for table in sorted(present & set(schema.tables)):
            result.rows[table] = 0
            for group in _groups(con, table):
                day: dt.date | None = group[0]
                where = f"{PARTITION_COLUMN} IS NOT DISTINCT FROM ?"
                params: list = [day]
                key = DEFAULT_KEY
                if table == QUARANTINE_TABLE:
                    where += " AND source = ?"
                    params.append(group[1])
                    key = Warehouse.quarantine_key(group[1])
                sql = f"SELECT * FROM {table} WHERE {where}"
                rows = con.sql(sql, params=params).to_arrow_table()
                staged = warehouse.stage(table, day, rows, key=key)
                name = f"{table}/{staged.directory.name}/{key}"
                if staged.rows != rows.num_rows:
                    raise RuntimeError(f"migration of {name}: {staged.rows} of {rows.num_rows}")
                # Version 0: a partition written by a newer run meanwhile stays the current one.
                published = warehouse.publish(staged, version=0)
                if _count_file(warehouse, published) != rows.num_rows:
                    raise RuntimeError(f"migration of {name} lost rows")
                result.partitions += 1
                if versions(staged.directory, key, warehouse.files)[-1] != published:
                    result.superseded.append(name)
                result.rows[table] += rows.num_rows
    finally:
        con.close()
    warehouse.publish_entry(schema)
    backup = home / BACKUP_NAME
    if _rename(migrating, backup):
        _rename(Path(f"{migrating}.wal"), Path(f"{backup}.wal"))
        result.backup = backup
    for name in OLD_SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()
    return result
