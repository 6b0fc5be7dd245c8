"""Clinicians' feedback on flagged patients: accepted (acted on the flag) or overridden.

Feedback comes from ``POST /feedback`` (one record) or a CSV drop ``STROKE_HOME/feedback/<day>.csv``
(:func:`import_csv`; ``stroke feedback import``). Each record is linked to the prediction it
answers before it is kept: an API prediction by ``request_id`` (its ``prediction_audit``
record, or one the service has not flushed yet), a batch score by ``(cohort_date, patient_id,
model_version)`` in ``score_history`` (without a version: the day's current slice). Feedback that
names no known prediction is refused (the API answers 404) or, from a CSV, quarantined with the
reason (``quarantine``, source ``feedback``): every CSV row is recorded or quarantined.

Rows are appended to the ``feedback`` table (``sql/ddl/feedback.sql``); a record sent again with
the same ``feedback_id`` replaces the earlier one, and importing a file again replaces its rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from stroke_dagster.audit.records import AUDIT_TABLE, PREDICTION
from stroke_dagster.core.errors import InputError

if TYPE_CHECKING:
    from stroke_dagster.core.settings import Settings
    from stroke_dagster.warehouse.store import Warehouse

FEEDBACK_TABLE = "feedback"
QUARANTINE_SOURCE = "feedback"
ACTIONS = ("accepted", "overridden")
MAX_CODE = 64  # characters of a reason code, feedback id, clinician id
CSV_COLUMNS = (
    "feedback_id",
    "request_id",
    "row_in_request",
    "cohort_date",
    "patient_id",
    "model_version",
    "action",
    "reason_code",
    "clinician_id",
)
RETRIES = 20  # conditional commits refused by concurrent feedback of the same day


class FeedbackError(InputError):
    """Feedback that cannot be recorded: ``status`` 422 (malformed), 404 (no such prediction)
    or 409 (several patients of the request match)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Feedback:
    """One clinician action, as sent (see :func:`check` for the rules)."""

    action: str
    request_id: str | None = None
    row_in_request: int | None = None
    cohort_date: dt.date | None = None
    patient_id: str | None = None
    model_version: str | None = None
    reason_code: str | None = None
    clinician_id: str | None = None
    feedback_id: str | None = None


def check(item: Feedback) -> None:
    """Raise :class:`FeedbackError` (one line) unless the record can be linked and kept."""
    if item.action not in ACTIONS:
        raise FeedbackError(f"action must be one of {', '.join(ACTIONS)}, got {item.action!r}")
    if item.action == "overridden" and not item.reason_code:
        raise FeedbackError("reason_code is required when the flag was overridden")
    for name in ("reason_code", "feedback_id", "clinician_id"):
        value = getattr(item, name)
        if value is not None and not 0 < len(value) <= MAX_CODE:
            raise FeedbackError(f"{name} must be 1 to {MAX_CODE} characters")
    if item.request_id is None and (item.cohort_date is None or not item.patient_id):
        raise FeedbackError("give request_id (an API prediction) or cohort_date and patient_id")


def _requests(
    warehouse: Warehouse, ids: set[str], pending: Callable[[str], list[dict[str, Any]]] | None
) -> dict[str, list[dict[str, Any]]]:
    """The audit records of the requests ``ids``: not yet flushed (``pending``) or stored."""
    found: dict[str, list[dict[str, Any]]] = {}
    for request_id in ids:
        rows = pending(request_id) if pending is not None else []
        if rows:
            found[request_id] = rows
    missing = sorted(ids - set(found))
    if missing:
        table = warehouse.table(AUDIT_TABLE).to_pyarrow_dataset()
        rows = table.to_table(
            columns=["request_id", "row_in_request", "patient_id", "model_version", "ts"],
            filter=pc.field("request_id").isin(missing) & (pc.field("kind") == PREDICTION),
        )
        for row in rows.to_pylist():
            found.setdefault(row["request_id"], []).append(row)
    return found


def _scores(
    warehouse: Warehouse, keys: set[tuple[dt.date, str]]
) -> dict[tuple[dt.date, str], list[dict[str, Any]]]:
    """The score rows (every slice a clinician could have seen: not the shadow ones) of
    ``(cohort_date, patient_id)`` keys."""
    if not keys:
        return {}
    days = sorted({day for day, _ in keys})
    ids = sorted({patient for _, patient in keys})
    table = warehouse.table("score_history").to_pyarrow_dataset()
    rows = table.to_table(
        columns=["cohort_date", "patient_id", "model_version", "is_current"],
        filter=pc.field("cohort_date").isin(pa.array(days, pa.date32()))
        & pc.field("patient_id").isin(ids)
        & (pc.field("role").is_null() | (pc.field("role") != "shadow")),
    )
    found: dict[tuple[dt.date, str], list[dict[str, Any]]] = {}
    for row in rows.to_pylist():
        found.setdefault((row["cohort_date"], row["patient_id"]), []).append(row)
    return found


def _link_request(item: Feedback, records: list[dict[str, Any]]) -> dict[str, Any]:
    if item.row_in_request is not None:
        records = [r for r in records if r["row_in_request"] == item.row_in_request]
    elif item.patient_id:
        records = [r for r in records if r["patient_id"] == item.patient_id]
    if len(records) != 1:
        what = "no patient" if not records else f"{len(records)} patients"
        raise FeedbackError(
            f"request {item.request_id} has {what} matching this feedback "
            "(give its patient_id or row_in_request)",
            404 if not records else 409,
        )
    record = records[0]
    row = record["row_in_request"]
    return {
        "cohort_date": record["ts"].astimezone(dt.UTC).date(),
        "patient_id": record["patient_id"] or f"#{row}",
        "row_in_request": row,
        "model_version": record["model_version"],
    }


def _link_score(item: Feedback, rows: list[dict[str, Any]]) -> dict[str, Any]:
    where = f"patient {item.patient_id} on {item.cohort_date}"
    if not rows:
        raise FeedbackError(f"no score for {where}", 404)
    if item.model_version is not None:
        rows = [r for r in rows if r["model_version"] == item.model_version]
        if not rows:
            raise FeedbackError(f"no score by model version {item.model_version} for {where}", 404)
    else:
        rows = [r for r in rows if r["is_current"]] or rows
    return {
        "cohort_date": item.cohort_date,
        "patient_id": item.patient_id,
        "row_in_request": None,
        "model_version": rows[0]["model_version"],
    }


def link(
    warehouse: Warehouse,
    items: list[Feedback],
    pending: Callable[[str], list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any] | FeedbackError]:
    """Each item's link to its prediction (the feedback row's keys), or why it has none."""
    requests = _requests(warehouse, {i.request_id for i in items if i.request_id}, pending)
    keys = {(i.cohort_date, str(i.patient_id)) for i in items if not i.request_id}
    scores = _scores(warehouse, keys)  # type: ignore[arg-type]
    linked: list[dict[str, Any] | FeedbackError] = []
    for item in items:
        try:
            if item.request_id:
                records = requests.get(item.request_id)
                if not records:
                    raise FeedbackError(f"no prediction with request id {item.request_id}", 404)
                linked.append(_link_request(item, records))
            else:
                linked.append(_link_score(item, scores.get((item.cohort_date, item.patient_id))))  # type: ignore[arg-type]
        except FeedbackError as exc:
            linked.append(exc)
    return linked


def _row(item: Feedback, keys: Mapping[str, Any], requester: str, source: str) -> dict[str, Any]:
    return {
        "feedback_id": item.feedback_id or uuid.uuid4().hex,
        **keys,
        "request_id": item.request_id,
        "action": item.action,
        "reason_code": item.reason_code,
        "clinician_id": item.clinician_id,
        "requester": requester,
        "recorded_at": dt.datetime.now(dt.UTC),
        "source": source,
    }


def _append(warehouse: Warehouse, rows: list[dict[str, Any]], replace_where: str | None) -> None:
    from stroke_dagster.warehouse.store import WarehouseBusyError

    schema = warehouse.schema().arrow_schema(FEEDBACK_TABLE)
    table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema)
    for attempt in range(RETRIES + 1):
        try:
            warehouse.append(FEEDBACK_TABLE, table, replace_where=replace_where)
            return
        except WarehouseBusyError:
            if attempt == RETRIES:
                raise


def record(
    warehouse: Warehouse,
    item: Feedback,
    *,
    requester: str,
    pending: Callable[[str], list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Check, link and keep one API feedback record; the row kept. Raises FeedbackError."""
    from stroke_dagster.warehouse.store import _sql_string

    check(item)
    warehouse.ensure(migrate=False)
    linked = link(warehouse, [item], pending)[0]
    if isinstance(linked, FeedbackError):
        raise linked
    row = _row(item, linked, requester, "api")
    guard = f"feedback_id = {_sql_string(item.feedback_id)}" if item.feedback_id else None
    _append(warehouse, [row], guard)
    return row


@dataclass
class ImportSummary:
    """Every CSV row is recorded or quarantined: ``rows_in == recorded + quarantined``."""

    file: str
    rows_in: int
    recorded: int
    quarantined: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse(raw: Mapping[str, str | None]) -> Feedback:
    """A CSV row as a Feedback (blank cells are missing); raises FeedbackError."""
    value = {k: (v.strip() or None) if isinstance(v, str) else None for k, v in raw.items()}
    day_text, row_text = value.get("cohort_date"), value.get("row_in_request")
    try:
        day = dt.date.fromisoformat(day_text) if day_text else None
        row = int(row_text) if row_text else None
    except ValueError as exc:
        raise FeedbackError(f"unreadable cohort_date or row_in_request: {exc}") from None
    item = Feedback(
        action=(value.get("action") or "").lower(),
        request_id=value.get("request_id"),
        row_in_request=row,
        cohort_date=day,
        patient_id=value.get("patient_id"),
        model_version=value.get("model_version"),
        reason_code=value.get("reason_code"),
        clinician_id=value.get("clinician_id"),
        feedback_id=value.get("feedback_id"),
    )
    check(item)
    return item


def import_csv(path: str | Path, *, settings: Settings) -> ImportSummary:
    """Record the rows of a feedback CSV (``feedback/<day>.csv``); quarantine the others.

    Columns (header row; only ``action`` always required): see :data:`CSV_COLUMNS`. A row
    without ``feedback_id`` gets one from the file name and its row number, so importing the
    file again replaces its rows instead of adding them twice. Raises :class:`InputError` for a
    file that cannot be read as a whole.
    """
    import pyarrow.csv as pacsv

    from stroke_dagster.warehouse import store as wh
    from stroke_dagster.warehouse.store import _sql_string

    path = Path(path)
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in CSV_COLUMNS}, strings_can_be_null=False
            ),
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"cannot read feedback file {path}: {str(exc).splitlines()[0]}") from None
    if "action" not in table.column_names:
        raise InputError(f"feedback file {path} has no 'action' column")
    raw_rows = [
        {k: v for k, v in r.items() if k in CSV_COLUMNS} | {"_record": r} for r in table.to_pylist()
    ]
    source = f"csv:{path.name}"
    items: list[Feedback | FeedbackError] = []
    for number, raw in enumerate(raw_rows, start=1):
        try:
            parsed = _parse(raw)
        except FeedbackError as exc:
            items.append(exc)
            continue
        if parsed.feedback_id is None:
            digest = hashlib.sha256(f"{path.name}\n{number}".encode()).hexdigest()[:32]
            parsed = Feedback(**{**asdict(parsed), "feedback_id": f"csv-{digest}"})
        items.append(parsed)
    warehouse = wh.of(settings)
    warehouse.ensure()
    valid = [i for i in items if isinstance(i, Feedback)]
    links = iter(link(warehouse, valid))
    kept, rejected = [], []
    for number, (raw, item) in enumerate(zip(raw_rows, items, strict=True), start=1):
        outcome = next(links) if isinstance(item, Feedback) else item
        if isinstance(outcome, FeedbackError):
            rejected.append(
                {
                    "row_number": number,
                    "patient_id": raw.get("patient_id") or None,
                    "reason": str(outcome),
                    "record": json.dumps(raw["_record"], default=str),
                }
            )
        else:
            assert isinstance(item, Feedback)
            kept.append(_row(item, outcome, source, source))
    if kept:
        _append(warehouse, kept, f"source = {_sql_string(source)}")
    day = _file_day(path)
    if rejected or day is not None:
        schema = pa.schema(
            [
                ("row_number", pa.int64()),
                ("patient_id", pa.string()),
                ("reason", pa.string()),
                ("record", pa.string()),
            ]
        )
        rows = pa.Table.from_pylist(rejected, schema=schema)
        wh.write_quarantine(rows, QUARANTINE_SOURCE, day, settings=warehouse)
    return ImportSummary(str(path), len(raw_rows), len(kept), len(rejected))


def _file_day(path: Path) -> dt.date | None:
    try:
        return dt.date.fromisoformat(path.stem)
    except ValueError:
        return None
