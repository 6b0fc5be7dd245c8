"""One-time conversion of the warehouse layouts of earlier versions to the Delta tables.

Two layouts are recognised:

* **Parquet days** (``LAYOUT 2``): ``warehouse/<table>/cohort_date=<D>/<key>~<version>.parquet``,
  the newest version of each key being current, behind a ``warehouse.duckdb`` file of views;
* **single file** (``LAYOUT 1``): every row inside ``warehouse.duckdb``.

:func:`migrate` (run by ``stroke warehouse migrate``, and by the first warehouse access of a
process that finds an old layout) holds the warehouse's migration lock, writes each day of each
table (each ``(day, source)`` of ``quarantine``) as a Delta commit, then reads every day back and
compares its row count and checksum with the old rows. Only when all match does it delete the old
Parquet files and the old entry point (a single file is kept as ``warehouse.v1.duckdb``). A crash
at any point leaves the old layout in place and the next access migrates again (each day's write
replaces the day, so nothing doubles). Old ``scores`` become the current slices of
``score_history``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from stroke_dagster.warehouse.store import (
    PARTITION_COLUMN,
    QUARANTINE_TABLE,
    SCORE_TABLE,
    Provenance,
    Warehouse,
    write_transaction,
)

if TYPE_CHECKING:
    from stroke_dagster.core.storage import StoragePath

log = logging.getLogger(__name__)

ENTRY_NAME = "warehouse.duckdb"
BACKUP_NAME = "warehouse.v1.duckdb"
OLD_SIDE_FILES = ("warehouse_snapshot.duckdb", "warehouse.lock", "warehouse.migrating.duckdb")
RENAMED = {"scores": SCORE_TABLE}  # old table name -> the table its rows now live in
LOCK_NAME = "_migration.lock"


@dataclass
class MigrationResult:
    rows: dict[str, int] = field(default_factory=dict)  # rows converted per (new) table
    days: int = 0  # (table, day[, source]) groups written and verified
    verified: bool = False
    files_removed: int = 0
    skipped_tables: list[str] = field(default_factory=list)  # not defined in sql/ddl
    backup: str | None = None

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "days": self.days,
            "verified": self.verified,
            "files_removed": self.files_removed,
            "skipped_tables": self.skipped_tables,
            "backup": self.backup,
        }


@dataclass
class _Group:
    """One day of one old table (and quarantine source), and where its rows come from."""

    old_table: str
    day: dt.date | None
    source: str | None
    rows: pa.Table

    @property
    def table(self) -> str:
        return RENAMED.get(self.old_table, self.old_table)


# -- finding the old layouts -------------------------------------------------------------------


def _single_file_tables(path: Path) -> set[str]:
    """Base tables of an old single-file warehouse (empty if ``path`` is not one)."""
    if not path.is_file():
        return set()
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return set()
    try:
        rows = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    finally:
        con.close()
    return {r[0] for r in rows} - {"warehouse_meta"}


def _old_files(warehouse: Warehouse) -> dict[tuple[str, str], list[StoragePath]]:
    """``(table, partition directory) -> [old files, oldest version first]`` of layout 2."""
    files = warehouse.files
    found: dict[tuple[str, str], list[StoragePath]] = {}
    if not files.exists(warehouse.data_dir):
        return found
    for table_dir in files.list_dirs(warehouse.data_dir):
        for directory in files.list_dirs(table_dir, "*=*"):
            old = [item.path for item in files.list_files(directory, "*~*.parquet")]
            if old:
                found[(table_dir.name, directory.name)] = old
    return found


def needs_migration(warehouse: Warehouse) -> bool:
    return bool(_single_file_tables(warehouse.home / ENTRY_NAME) or _old_files(warehouse))


def _layout2_groups(warehouse: Warehouse, tables: set[str]) -> list[_Group]:
    groups = []
    for (table, directory), paths in sorted(_old_files(warehouse).items()):
        if RENAMED.get(table, table) not in tables:
            continue
        value = directory.split("=", 1)[1]
        day = None if value == "NULL" else dt.date.fromisoformat(value)
        newest: dict[str, StoragePath] = {}  # the current version of each key
        for path in paths:
            newest[path.name.split("~", 1)[0]] = path  # names sort by version
        for key, path in sorted(newest.items()):
            if key == "_empty":  # the placeholder that kept the old views' globs matching
                continue
            rows = warehouse.files.read_parquet(path)
            sources = [None]
            if table == QUARANTINE_TABLE:
                sources = sorted(set(rows.column("source").to_pylist()))
            for source in sources:
                part = rows
                if source is not None:
                    part = rows.filter(pc.equal(rows.column("source"), source))
                groups.append(_Group(table, day, source, part))
    return groups


def _layout1_groups(path: Path, tables: set[str]) -> tuple[list[_Group], list[str]]:
    groups: list[_Group] = []
    con = duckdb.connect(str(path), read_only=True)
    try:
        present = _single_file_tables(path)
        skipped = sorted(t for t in present if RENAMED.get(t, t) not in tables)
        for table in sorted(t for t in present if RENAMED.get(t, t) in tables):
            keys = f"{PARTITION_COLUMN}" + (", source" if table == QUARANTINE_TABLE else "")
            for key in con.execute(f"SELECT DISTINCT {keys} FROM {table} ORDER BY ALL").fetchall():
                where = f"{PARTITION_COLUMN} IS NOT DISTINCT FROM ?"
                params: list = [key[0]]
                if table == QUARANTINE_TABLE:
                    where += " AND source = ?"
                    params.append(key[1])
                rows = con.sql(f"SELECT * FROM {table} WHERE {where}", params=params)
                source = key[1] if table == QUARANTINE_TABLE else None
                groups.append(_Group(table, key[0], source, rows.to_arrow_table()))
    finally:
        con.close()
    return groups, skipped


# -- writing and verifying ---------------------------------------------------------------------


def _write(warehouse: Warehouse, group: _Group) -> None:
    extra: dict[str, object] = {}
    data = group.rows.drop_columns(
        [c for c in (PARTITION_COLUMN, "source") if c in group.rows.column_names]
    )
    provenance = Provenance(run_id="migration")
    if group.table == SCORE_TABLE:
        versions = set(group.rows.column("model_version").to_pylist())
        extra["model_version"] = versions.pop() if len(versions) == 1 else "migrated"
        provenance.input_file = "migrated from the earlier warehouse layout"
    with write_transaction(warehouse, provenance) as batch:
        batch.stage(group.table, group.day, data, extra, source=group.source)


def _checksum(con: duckdb.DuckDBPyConnection, relation: str, columns: list[str]) -> tuple:
    cells = ", ".join(f'"{c}"::VARCHAR' for c in columns)
    sql = f"SELECT count(*), coalesce(sum(hash({cells})::HUGEINT), 0) FROM {relation}"
    return tuple(con.execute(sql).fetchall()[0])


def _verify(warehouse: Warehouse, groups: list[_Group]) -> None:
    """Each group's rows read back from the Delta table match the old rows (count, checksum)."""
    con = warehouse.connect()
    try:
        for group in groups:
            columns = [c for c in group.rows.column_names if c != PARTITION_COLUMN]
            con.register("_old_rows", group.rows.select(columns))
            where = f"{PARTITION_COLUMN} IS NOT DISTINCT FROM $day"
            params: dict[str, object] = {"day": group.day}
            if group.source is not None:
                where += " AND source = $source"
                params["source"] = group.source
            if group.table == SCORE_TABLE:
                where += " AND is_current"
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _new_rows AS SELECT * FROM {group.table} "
                f"WHERE {where}",
                params,
            )
            old = _checksum(con, "_old_rows", columns)
            new = _checksum(con, "_new_rows", columns)
            if old != new:
                name = f"{group.table} {group.day} {group.source or ''}".strip()
                raise RuntimeError(
                    f"warehouse migration of {name}: {new[0]} rows (checksum {new[1]}) in the "
                    f"Delta table against {old[0]} (checksum {old[1]}) in the old layout"
                )
            con.unregister("_old_rows")
    finally:
        con.close()


def migrate(warehouse: Warehouse) -> MigrationResult:
    """Convert an old warehouse of ``warehouse``'s storage, if any (see the module docstring)."""
    result = MigrationResult()
    files = warehouse.files
    warehouse.ensure(migrate=False)
    with files.lock(warehouse.data_dir / LOCK_NAME):
        entry = warehouse.home / ENTRY_NAME
        tables = set(warehouse.schema().tables)
        single = bool(_single_file_tables(entry))
        old_files = _old_files(warehouse)
        if not single and not old_files:
            return result  # another process migrated it while this one waited
        groups = _layout2_groups(warehouse, tables)
        if single:
            more, result.skipped_tables = _layout1_groups(entry, tables)
            groups += more
        for group in groups:
            _write(warehouse, group)
            result.rows[group.table] = result.rows.get(group.table, 0) + group.rows.num_rows
        _verify(warehouse, groups)
        result.days, result.verified = len(groups), True
        for paths in old_files.values():
            for path in paths:
                result.files_removed += files.delete(path)
        if files.is_local:  # the emptied partition directories of the old layout
            for table, directory in old_files:
                with contextlib.suppress(OSError):
                    (Path(warehouse.data_dir) / table / directory).rmdir()
                if table not in tables:
                    with contextlib.suppress(OSError):
                        (Path(warehouse.data_dir) / table).rmdir()
        if single:
            os.replace(entry, warehouse.home / BACKUP_NAME)
            result.backup = str(warehouse.home / BACKUP_NAME)
        else:
            entry.unlink(missing_ok=True)  # layout 2's file of views over the old globs
        for name in (*OLD_SIDE_FILES, f"{ENTRY_NAME}.wal"):
            (warehouse.home / name).unlink(missing_ok=True)
    log.info("warehouse migrated to Delta tables: %s", result.as_dict())
    return result
