"""Metadata a person reads at a glance in Dagster's UI: rounded numbers, links, tables.

* :func:`readable` rounds every float to :data:`SIGNIFICANT` significant digits (values stay
  numbers, so Dagster's asset plots chart them across days; full precision stays in MLflow),
  recursively inside JSON values.
* :func:`pct` turns a share into a percentage (``0.088`` -> ``8.8``).
* :func:`mlflow_version_url`, :func:`mlflow_run_url`, :func:`dagster_run_url`: links between
  the two UIs (``STROKE_MLFLOW_URL`` and ``STROKE_DAGSTER_URL``, local defaults otherwise).
* :func:`table_schema`: ``dagster/column_schema`` of a warehouse table from its one definition
  (``sql/ddl/<table>.sql``), with each column's comment as its description.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from typing import Any

import dagster as dg

from stroke_dagster.core.settings import MODEL_NAME, Settings

SIGNIFICANT = 4
ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"


def round_sig(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` rounded to ``digits`` significant digits (NaN and infinities unchanged)."""
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _round_json(value: Any) -> Any:
    if isinstance(value, float):
        return round_sig(value)
    if isinstance(value, dict):
        return {k: _round_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_json(v) for v in value]
    return value


def readable(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with every float (plain, ``MetadataValue.float`` or inside JSON) rounded."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, bool) or value is None:
            out[key] = value
        elif isinstance(value, float):
            out[key] = round_sig(value)
        elif isinstance(value, dg.FloatMetadataValue) and value.value is not None:
            out[key] = dg.MetadataValue.float(round_sig(value.value))
        elif isinstance(value, dg.JsonMetadataValue):
            out[key] = dg.MetadataValue.json(_round_json(value.data))
        else:
            out[key] = value
    return out


def pct(share: float | None) -> float | None:
    """A share (0-1) as a percentage with 4 significant digits."""
    return None if share is None else round_sig(100.0 * float(share))


def mlflow_version_url(settings: Settings, version: str) -> dg.UrlMetadataValue:
    return dg.MetadataValue.url(
        f"{settings.alerts.mlflow_ui}/#/models/{MODEL_NAME}/versions/{version}"
    )


def mlflow_run_url(settings: Settings, run_id: str, experiment_id: str | None = None) -> Any:
    """Link to an MLflow run (its experiment looked up when not given)."""
    if experiment_id is None:
        from stroke_dagster.model import registry

        try:
            experiment_id = registry.client(settings).get_run(run_id).info.experiment_id
        except Exception:  # a link is a courtesy: no registry, no link
            return run_id
    return dg.MetadataValue.url(
        f"{settings.alerts.mlflow_ui}/#/experiments/{experiment_id}/runs/{run_id}"
    )


def dagster_run_url(settings: Settings, run_id: str) -> dg.UrlMetadataValue:
    return dg.MetadataValue.url(f"{settings.alerts.dagster_ui}/runs/{run_id}")


_COLUMN = re.compile(r"^\s*(\w+)\s+([A-Z][A-Z0-9_]*(?:\[\])?)[^-]*?(?:--\s*(.*))?$")


@functools.cache
def table_schema(table: str) -> dg.TableSchema:
    """The columns of warehouse table ``table`` as its DDL defines them."""
    from stroke_dagster.warehouse.store import DDL_DIR

    columns = []
    for line in (DDL_DIR / f"{table}.sql").read_text().splitlines():
        if line.lstrip().startswith(("--", "CREATE", ")", "PRIMARY", "UNIQUE")):
            continue
        match = _COLUMN.match(line)
        if match:
            name, kind, comment = match.groups()
            columns.append(
                dg.TableColumn(
                    name,
                    kind.lower(),
                    description=(comment or "").strip() or None,
                    constraints=dg.TableColumnConstraints(nullable="NOT NULL" not in line),
                )
            )
    return dg.TableSchema(columns=columns)


def table_metadata(table: str) -> dict[str, Any]:
    """Static metadata of an asset that writes warehouse table ``table``."""
    return {COLUMN_SCHEMA: table_schema(table), "warehouse_table": table}


def _checks(results: Any) -> Any:
    return [
        r._replace(metadata=readable(dict(r.metadata or {}))) if hasattr(r, "_replace") else r
        for r in results or []
    ]


def glance(result: Any) -> Any:
    """An asset's result (``MaterializeResult`` or ``Output``) with :func:`readable` metadata,
    its check results' metadata included."""
    if isinstance(result, dg.Output):
        return result.with_metadata(readable(dict(result.metadata or {})))
    return result._replace(
        metadata=readable(dict(result.metadata or {})),
        check_results=_checks(result.check_results),
    )


@functools.cache
def patient_schema(labelled: bool = False) -> dg.TableSchema:
    """The patient columns as :mod:`stroke_dagster.core.schema` defines them (with ``stroke``)."""
    from stroke_dagster.core import schema

    columns = [dg.TableColumn(schema.ID, "varchar", description="the patient's id")]
    for name in schema.FEATURES:
        field = schema.FIELDS_BY_NAME[name]
        if isinstance(field, schema.CategoricalField):
            kind, text = "varchar", f"one of {', '.join(field.categories)}"
            nullable = False
        else:
            kind = "integer" if field.integer else "double"
            text = f"{field.description} Range {field.low:g}-{field.high:g}.".strip()
            nullable = field.nullable
        columns.append(
            dg.TableColumn(
                name,
                kind,
                description=text,
                constraints=dg.TableColumnConstraints(nullable=nullable),
            )
        )
    if labelled:
        columns.append(dg.TableColumn(schema.TARGET, "integer", description="1: stroke"))
    return dg.TableSchema(columns=columns)


def records_table(rows: Iterable[dict[str, Any]], columns: dict[str, str]) -> Any:
    """Rows as a table the UI shows inline (floats rounded; NaN and absent values empty).

    ``columns`` maps each column to its Dagster type (``string``, ``int``, ``float``, ``bool``).
    """
    records = []
    for row in rows:
        data: dict[str, Any] = {}
        for name, kind in columns.items():
            value = row.get(name)  # a column no row has (all groups too small) stays empty
            if value is None or (isinstance(value, float) and value != value):
                data[name] = None
            elif kind == "float":
                data[name] = round_sig(float(value))
            elif kind == "int":
                data[name] = int(value)
            elif kind == "bool":
                data[name] = bool(value)
            else:
                data[name] = str(value)
        records.append(dg.TableRecord(data))
    schema = dg.TableSchema(columns=[dg.TableColumn(n, k) for n, k in columns.items()])
    return dg.MetadataValue.table(records, schema=schema)


def frame_table(frame: Any, columns: dict[str, str]) -> Any:
    """Columns of a DataFrame as a table (see :func:`records_table`)."""
    return records_table(frame.to_dict("records"), columns)
