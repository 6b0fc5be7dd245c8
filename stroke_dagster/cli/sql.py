"""``stroke sql``: run an analyst query on the warehouse.

``stroke sql FILE [--param NAME=VALUE ...]`` runs a file of SQL (e.g. ``sql/queries/*.sql``) and
prints the result of its last statement; ``-c SQL`` runs a statement given inline; without either
the SQL is read from stdin. Each ``--param`` becomes ``SET VARIABLE NAME = 'VALUE'`` before the
query (queries read it with ``getvariable('NAME')`` and cast it) and, when the SQL names ``$NAME``,
the value of that prepared-statement parameter (a number when it reads as one). The query runs on
the latest snapshot of every Delta table (:func:`stroke_dagster.warehouse.store.connect`): it never
waits
for the pipeline and never makes it wait; in Python, ``warehouse.connect(settings)`` opens the
same connection.
"""

from __future__ import annotations

import argparse
import re
import sys

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _typed(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="file of SQL to run (default: stdin)")
    parser.add_argument("-c", dest="sql_text", metavar="SQL", help="SQL to run instead of a file")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a query variable (SET VARIABLE NAME = 'VALUE'); repeatable",
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default: an aligned table)",
    )


def parse_params(items: list[str]) -> dict[str, str]:
    from stroke_dagster.core.errors import InputError

    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name.strip()):
            raise InputError(f"--param must be NAME=VALUE with a plain name, got {item!r}")
        params[name.strip()] = value
    return params


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import duckdb
    import pandas as pd

    from stroke_dagster.core.errors import InputError
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.warehouse import store as warehouse

    params = parse_params(args.param)
    if args.sql_text is not None:
        sql = args.sql_text
    elif args.file:
        path = Path(args.file)
        if not path.is_file():
            raise InputError(f"SQL file not found: {args.file}")
        sql = path.read_text(encoding="utf-8")
    else:
        sql = sys.stdin.read()
    con = warehouse.connect(load_settings())
    try:
        for name, value in params.items():
            con.execute(f"SET VARIABLE {name} = '{value.replace(chr(39), chr(39) * 2)}'")
        named = {name: _typed(params[name]) for name in set(_DOLLAR.findall(sql)) if name in params}
        try:
            result = con.execute(sql, named) if named else con.execute(sql)
            frame = result.df() if result.description else pd.DataFrame()
        except duckdb.Error as exc:
            raise InputError(str(exc).splitlines()[0]) from None
    finally:
        con.close()
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(frame.to_json(orient="records", date_format="iso"))
    else:
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(frame.to_string(index=False) if len(frame.columns) else "")
    return 0
