"""The audit trail: which model, code and thresholds gave which patient which score, for whom.

**Canonical features.** A patient's input is hashed as one 35-byte message, the same whether it
comes as one dict (the API) or as columns of a batch (:func:`features_sha256` and
:class:`SliceHasher` build it from this module's one definition): a 4-byte tag (the first
bytes of the sha256 of the encoding's spec: feature names and category lists, so a schema change
changes every hash instead of silently reusing codes), then the numeric features sorted by name
as big-endian float64 (missing: the canonical quiet NaN; -0.0 as 0.0), the 0/1 flags sorted by
name as one byte each, and the categorical features sorted by name as the category's position in
the schema (255: missing or unknown). Binary rather than text because text needs a number format
two engines agree on forever (shortest round-trip vs ``%.17g``), and because one block of
SHA-256 is what makes a million hashes cheap (:mod:`stroke_dagster.audit.rowhash`). No feature value
is stored by the audit trail; the values are kept only with ``STROKE_TELEMETRY_FEATURES=1``
(the API's feature log, linked by request id and row) and in the day's cohort file (batch).

**API records** (``prediction_audit``, one per scored patient) are chained per UTC day and writer:
each worker process starts a chain ``api:<pid>:<random>`` (a restart starts a new one); record
``seq`` carries ``prev_hash``, the ``record_hash`` of ``seq - 1`` (a genesis value for 0), and its
own ``record_hash = sha256(prev_hash + "\\n" + canonical JSON of its other fields)``. They are
linked and appended on the telemetry writer's flush thread: a request only builds its rows.

**Batch slices** (``score_history``) carry the same fields: what the slice's rows share (code
version, model run id, thresholds, requester) once, in the slice's chained record (the view
``score_audit`` joins it to every row), and per row
``features_sha256``, ``row_in_slice`` and ``row_hash``. Hashing a chained record per row would
be a sequential pass; instead the slice's ``digest`` -- one sha256 over every row's feature
digest and canonical record (day, tier, probability, patient id: one padded 64-byte message) in
``row_in_slice`` order -- is appended as one chained record (``kind = 'slice'``) to the day's
chain ``batch``. The digest carries the security; ``row_hash`` (the first 64 bits of the feature
digest XOR a fast 64-bit mix of the record message, not a cryptographic hash: a second sha256
per row cost a third of a second per million rows) only locates an edited
row, so a verification can name the patient. The slice's chain link is committed conditionally
(:meth:`Warehouse.append` with ``replace_where``): two writers of the same day's chain cannot
fork it.

:func:`verify` (``stroke audit verify``) recomputes every chain and slice and names the first
broken record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stroke_dagster.audit import rowhash
from stroke_dagster.core.risk import TIERS
from stroke_dagster.core.schema import BINARY_FEATURES, CATEGORICAL_FIELDS, NUMERIC_FEATURES
from stroke_dagster.core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    import pandas as pd

    from stroke_dagster.core.settings import Settings
    from stroke_dagster.warehouse.store import StagedDay, Warehouse

log = logging.getLogger(__name__)

AUDIT_TABLE = "prediction_audit"
BATCH_CHAIN = "batch"
PREDICTION, SLICE = "prediction", "slice"
ANONYMOUS = "anonymous"
PACKAGE = "stroke-dagster"
LINK_RETRIES = 20  # conditional commits of a slice's chain link refused by a concurrent one

_NUMERIC = tuple(sorted(NUMERIC_FEATURES))
_BINARY = tuple(sorted(BINARY_FEATURES))
_CATEGORIES = {f.name: f.categories for f in sorted(CATEGORICAL_FIELDS, key=lambda f: f.name)}
_SPEC = json.dumps(
    {"v": 1, "numeric": _NUMERIC, "binary": _BINARY, "categorical": _CATEGORIES}, sort_keys=True
)
FEATURE_TAG = hashlib.sha256(_SPEC.encode()).digest()[:4]
FEATURES_LENGTH = 4 + 8 * len(_NUMERIC) + len(_BINARY) + len(_CATEGORIES)
_MISSING_CODE = 255
_NAN_BITS = 0x7FF8000000000000
_FEATURES_FORMAT = f">4s{len(_NUMERIC)}Q{len(_BINARY) + len(_CATEGORIES)}B"
RECORD_TAG = b"SRR1"
ID_INLINE = rowhash.MAX_PAYLOAD - 18  # bytes; longer ids go in as their sha256
_EPOCH = dt.date(1970, 1, 1)

# Columns a slice carries; the constant ones are set per slice (see slice_columns).
SLICE_ROW_FIELDS = (
    pa.field("features_sha256", pa.binary()),  # 32 bytes: half of hex, and no text to check
    pa.field("row_in_slice", pa.int64()),
    pa.field("row_hash", pa.int64()),
)


# --------------------------------------------------------------------------------------------
# Canonical features
# --------------------------------------------------------------------------------------------


def _float_bits(value: Any) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NAN_BITS
    number = float(value)
    return 0 if number == 0.0 else struct.unpack(">Q", struct.pack(">d", number))[0]


def _code(value: Any, allowed: Sequence[Any]) -> int:
    try:
        return allowed.index(value)
    except ValueError:
        return _MISSING_CODE


def features_message(record: Mapping[str, Any]) -> bytes:
    """The canonical 35-byte encoding of one patient's features (see the module docstring)."""
    flags = [_code(record.get(name), (0, 1)) for name in _BINARY]
    cats = [_code(record.get(name), cats) for name, cats in _CATEGORIES.items()]
    numbers = [_float_bits(record.get(name)) for name in _NUMERIC]
    return struct.pack(_FEATURES_FORMAT, FEATURE_TAG, *numbers, *flags, *cats)


def features_sha256(record: Mapping[str, Any]) -> str:
    """sha256 (hex) of one patient's canonical features."""
    return hashlib.sha256(features_message(record)).hexdigest()


def _arrow_column(data: pa.Table | pd.DataFrame, name: str) -> pa.ChunkedArray:
    if isinstance(data, pa.Table):
        return data.column(name)
    return pa.chunked_array([pa.array(data[name], from_pandas=True)])


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def _codes(column: pa.ChunkedArray, categories: Sequence[str]) -> np.ndarray:
    """Each value's position in ``categories`` (255: missing or unknown); a dictionary column
    is mapped through its dictionary (a handful of lookups, not one per row)."""
    values = pa.array(categories)
    parts = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            known = pc.fill_null(pc.index_in(chunk.dictionary, value_set=values), _MISSING_CODE)
            lookup = known.to_numpy(zero_copy_only=False).astype(np.uint8)
            indices = pc.fill_null(chunk.indices, 0).to_numpy(zero_copy_only=False)
            codes = lookup[indices] if len(lookup) else np.full(len(chunk), _MISSING_CODE)
            parts.append(np.where(chunk.is_valid().to_numpy(zero_copy_only=False), codes, 255))
        else:
            codes = pc.index_in(pc.cast(chunk, pa.string()), value_set=values)
            parts.append(pc.fill_null(codes, _MISSING_CODE).to_numpy(zero_copy_only=False))
    return np.concatenate(parts).astype(np.uint8) if parts else np.zeros(0, np.uint8)


# The padded one-block messages as records: numpy writes (and byte-swaps) field by field.
_FEATURES_DTYPE = np.dtype(
    [
        ("tag", "V4"),
        *((f"n{i}", ">u8") for i in range(len(_NUMERIC))),
        *((f"c{i}", "u1") for i in range(len(_BINARY) + len(_CATEGORIES))),
        ("end", "u1"),
        ("zero", f"V{rowhash.BLOCK - FEATURES_LENGTH - 9}"),
        ("bits", ">u8"),
    ]
)
assert _FEATURES_DTYPE.itemsize == rowhash.BLOCK


def features_messages(data: pa.Table | pd.DataFrame) -> np.ndarray:
    """The padded canonical messages (n, 64) of every row of a typed frame or table."""
    msg = np.zeros(len(data), _FEATURES_DTYPE)
    msg["tag"] = FEATURE_TAG
    msg["end"] = 0x80
    msg["bits"] = FEATURES_LENGTH * 8
    for i, name in enumerate(_NUMERIC):
        values = _numbers(_arrow_column(data, name))
        bits = np.where(values == 0.0, 0.0, values).view(np.uint64)
        msg[f"n{i}"] = np.where(np.isnan(values), np.uint64(_NAN_BITS), bits)
    for i, name in enumerate(_BINARY):
        values = _numbers(_arrow_column(data, name))
        msg[f"c{i}"] = np.where((values == 0) | (values == 1), values, _MISSING_CODE)
    for i, (name, categories) in enumerate(_CATEGORIES.items(), start=len(_BINARY)):
        msg[f"c{i}"] = _codes(_arrow_column(data, name), categories)
    return msg.view(np.uint8).reshape(len(data), rowhash.BLOCK)


# --------------------------------------------------------------------------------------------
# Batch slices
# --------------------------------------------------------------------------------------------


_RECORD_DTYPE = np.dtype(
    [
        ("tag", "V4"),
        ("day", ">i4"),
        ("tier", "u1"),
        ("probability", ">f8"),
        ("id_length", "u1"),
        ("id", f"S{ID_INLINE}"),
        ("end", "u1"),
        ("bits", ">u8"),
    ]
)
RECORD_LENGTH = rowhash.MAX_PAYLOAD
assert _RECORD_DTYPE.itemsize == rowhash.BLOCK


def _id_field(ids: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each id's UTF-8 bytes, zero-padded to ``ID_INLINE``, and its byte length (255: an id
    longer than that, whose sha256 takes its place)."""
    ids = pc.cast(ids, pa.string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    n = len(ids)
    lengths = pc.fill_null(pc.binary_length(ids), 0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    padded = pc.fill_null(pc.utf8_rpad(ids, width=ID_INLINE, padding="\x00"), "\x00" * ID_INLINE)
    field = np.zeros(n, f"S{ID_INLINE}")
    if (
        n
        and int(lengths.max()) <= ID_INLINE
        and pc.sum(pc.binary_length(padded)).as_py() == (n * ID_INLINE)
    ):  # every id padded to the same number of bytes: one copy
        buffer = padded.buffers()[2]
        start = int(np.frombuffer(padded.buffers()[1], np.int32, 1, padded.offset * 4)[0])
        field[:] = np.frombuffer(buffer, f"S{ID_INLINE}", n, start)
    else:
        for row, text in enumerate(ids.to_pylist()):
            raw = (text or "").encode()
            if len(raw) > ID_INLINE:
                raw, lengths[row] = hashlib.sha256(raw).digest(), 255
            field[row] = raw
    return field, lengths


def record_messages(
    day: dt.date, ids: pa.Array | pa.ChunkedArray, probabilities: np.ndarray, tiers: np.ndarray
) -> np.ndarray:
    """Padded one-block record messages: tag, day, tier, probability, patient id."""
    n = len(probabilities)
    msg = np.zeros(n, _RECORD_DTYPE)
    msg["tag"] = RECORD_TAG
    msg["day"] = (day - _EPOCH).days
    msg["tier"] = tiers
    msg["probability"] = probabilities
    msg["id"], msg["id_length"] = _id_field(ids)
    msg["end"] = 0x80
    msg["bits"] = RECORD_LENGTH * 8
    return msg.view(np.uint8).reshape(n, rowhash.BLOCK)


_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, as in splitmix64


def _mix64(records: np.ndarray) -> np.ndarray:
    """A 64-bit mix (splitmix64-style, not cryptographic) of each padded record message."""
    words = np.ascontiguousarray(records).view("<u8")  # (n, 8)
    h = np.zeros(len(words), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(words.shape[1]):
            h = (h ^ words[:, k]) * _MIX
            h ^= h >> np.uint64(29)
    return h


def _locator(features: np.ndarray, records: np.ndarray) -> np.ndarray:
    """``row_hash``: the first 64 bits of the feature digest XOR :func:`_mix64` of the record
    message, as signed integers. Only a locator (the slice digest carries the security)."""
    head = np.ascontiguousarray(features[:, :8]).view("<u8").reshape(-1)
    return (head ^ _mix64(records)).view(np.int64)


def _slice_bytes(features: np.ndarray, records: np.ndarray) -> memoryview:
    """What the slice digest covers, row after row: feature digest, then record message (one
    contiguous array, hashed as it lies: no copy into ``bytes``)."""
    return memoryview(np.concatenate((features, records), axis=1))


def _binary_array(digests: np.ndarray) -> pa.Array:
    """The (n, 32) digests as an Arrow binary array (one copy of the bytes)."""
    n = digests.shape[0]
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    data = pa.py_buffer(np.ascontiguousarray(digests).tobytes())
    return pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), data])


def _tier_index(tiers: pa.Array | pa.ChunkedArray) -> np.ndarray:
    codes = pc.index_in(pc.cast(tiers, pa.string()), value_set=pa.array(TIERS))
    return pc.fill_null(codes, _MISSING_CODE).to_numpy(zero_copy_only=False).astype(np.uint8)


class SliceHasher:
    """The per-row audit columns of one score slice, batch by batch, and the slice's digest.

    ``add`` appends ``features_sha256``, ``row_in_slice`` and ``row_hash`` to a batch of
    ``patient_id, stroke_probability, risk_tier`` rows; ``digest`` is the sha256 over every
    row's feature and record digests in order (see the module docstring).
    """

    def __init__(self, day: str | dt.date) -> None:
        self.day = dt.date.fromisoformat(str(day))
        self.rows = 0
        self._digest = hashlib.sha256()
        rowhash.preload()  # while the first batch is read

    @staticmethod
    def feature_digests(features: pa.Table | pd.DataFrame) -> np.ndarray:
        """The (n, 32) sha256 of each row's canonical features (computed apart from :meth:`add`
        so that scoring can compute them in its reader thread)."""
        return rowhash.sha256_rows(features_messages(features))

    def add(
        self,
        scores: pa.Table,
        features: pa.Table | pd.DataFrame | None,
        probabilities: np.ndarray,
        tiers: np.ndarray,
        feature_digests: np.ndarray | None = None,
    ) -> pa.Table:
        """``scores`` with the audit columns; ``feature_digests`` when already computed (else
        from ``features``)."""
        n = scores.num_rows
        if feature_digests is None:
            feature_digests = self.feature_digests(features)
        records = record_messages(self.day, scores.column("patient_id"), probabilities, tiers)
        self._digest.update(_slice_bytes(feature_digests, records))
        columns = [
            _binary_array(feature_digests),
            pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64)),
            pa.array(_locator(feature_digests, records)),
        ]
        self.rows += n
        for field, column in zip(SLICE_ROW_FIELDS, columns, strict=True):
            scores = scores.append_column(field, column)
        return scores

    def digest(self) -> str:
        return self._digest.hexdigest()


@functools.cache
def _git_commit() -> str | None:
    if not (PROJECT_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


@functools.cache
def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def code_version(settings: Settings) -> str:
    """``audit.code_version`` (``STROKE_CODE_VERSION``, set by the Docker build), else the
    package version and, in a git checkout, ``+g<commit>`` (read once per process)."""
    if settings.audit.code_version:
        return settings.audit.code_version
    commit = _git_commit()
    return f"{_package_version()}+g{commit}" if commit else _package_version()


def key_id(api_key: str | None) -> str:
    """Who asked, without the secret: ``key:`` + 12 hex of the key's sha256, or anonymous."""
    if not api_key:
        return ANONYMOUS
    return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def batch_requester(run_id: str | None) -> str:
    return f"dagster:{run_id}" if run_id else "cli"


@dataclass(frozen=True)
class SliceInfo:
    """What the chained record of a score slice holds (beside its digest and row count)."""

    day: dt.date
    write_id: str
    slice_id: str
    model_name: str
    model_version: str
    model_run_id: str | None
    code_version: str
    thresholds: str
    requester: str


def slice_constants(model: Any, settings: Settings, run_id: str | None) -> dict[str, str | None]:
    """What a slice's rows share, kept once in its chained record (not repeated per row:
    measured, four constant text columns added about a second to a million-row commit)."""
    return {
        "model_run_id": getattr(model, "run_id", None),
        "code_version": code_version(settings),
        "thresholds": model.thresholds.to_json(),
        "requester": batch_requester(run_id),
    }


# --------------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------------


def genesis(day: dt.date, chain_id: str) -> str:
    return hashlib.sha256(f"genesis|{day.isoformat()}|{chain_id}".encode()).hexdigest()


def _stamp(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


def canonical_record(record: Mapping[str, Any]) -> str:
    """The JSON a chained record's hash covers: every stored field but ``record_hash``."""
    fields = {
        k: _stamp(v) if isinstance(v, dt.date) else v
        for k, v in record.items()
        if k != "record_hash"
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)


def record_hash(record: Mapping[str, Any]) -> str:
    text = f"{record['prev_hash']}\n{canonical_record(record)}"
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def audit_schema() -> pa.Schema:
    from stroke_dagster.warehouse.store import Schema

    return Schema.load().arrow_schema(AUDIT_TABLE)


def _normalise(record: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A record with every column of the table (missing ones None), in the table's order."""
    return {name: record.get(name) for name in names}


class AuditLog:
    """One API worker's chain: builds a request's records, links them, appends them.

    ``prediction_rows`` runs on the request path (no I/O); ``link`` and ``write`` on the
    telemetry writer's flush thread. ``sink`` appends an Arrow table to ``prediction_audit``.
    """

    def __init__(
        self,
        sink: Callable[[pa.Table], object],
        *,
        code_version: str,
        requester: str,
        chain_id: str | None = None,
    ) -> None:
        self.sink = sink
        self.code_version = code_version
        self.requester = requester
        self.chain_id = chain_id or f"api:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tail: dict[dt.date, tuple[int, str]] = {}  # day -> (last seq, its hash)

    def prediction_rows(
        self,
        *,
        ts: dt.datetime,
        request_id: str,
        records: Sequence[Mapping[str, Any]],
        probabilities: Sequence[float],
        tiers: Sequence[str],
        model: Any,
    ) -> list[dict[str, Any]]:
        """One unlinked record per scored patient (``model``: the served LoadedModel)."""
        stored = model.model
        thresholds = model.thresholds.to_json()
        run_id = getattr(stored, "run_id", None)
        return [
            {
                "ts": ts,
                "kind": PREDICTION,
                "request_id": request_id,
                "row_in_request": i,
                "patient_id": record.get("id"),
                "model_name": model.name,
                "model_version": model.version,
                "model_run_id": run_id,
                "code_version": self.code_version,
                "features_sha256": features_sha256(record),
                "stroke_probability": float(p),
                "risk_tier": str(t),
                "thresholds": thresholds,
                "requester": self.requester,
            }
            for i, (record, p, t) in enumerate(zip(records, probabilities, tiers, strict=True))
        ]

    def link(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chain ``rows`` (in order) to this worker's chain of their UTC day."""
        names = audit_schema().names
        linked = []
        for row in rows:
            day = row["ts"].astimezone(dt.UTC).date()
            seq, prev = self._tail.get(day, (-1, genesis(day, self.chain_id)))
            record = _normalise(
                {**row, "cohort_date": day, "chain_id": self.chain_id, "seq": seq + 1},
                names,
            )
            record["prev_hash"] = prev
            record["record_hash"] = record_hash(record)
            self._tail[day] = (seq + 1, record["record_hash"])
            linked.append(record)
        return linked

    def write(self, linked: list[dict[str, Any]]) -> None:
        if linked:
            self.sink(pa.Table.from_pylist(linked, schema=audit_schema()))


def record_slice(warehouse: Warehouse, info: SliceInfo, digest: str, n_rows: int) -> int:
    """Append a slice's chained record to its day's ``batch`` chain; the sequence number.

    The link is committed on condition that no one appended the same ``seq`` meanwhile; a
    refused commit reads the tail again.
    """
    from stroke_dagster.warehouse.store import WarehouseBusyError, _sql_string

    names = audit_schema().names
    for _ in range(LINK_RETRIES + 1):
        seq, prev = _chain_tail(warehouse, info.day, BATCH_CHAIN)
        fields = {
            **{k: v for k, v in dataclasses.asdict(info).items() if k not in ("day", "write_id")},
            "cohort_date": info.day,
            "chain_id": BATCH_CHAIN,
            "seq": seq + 1,
            "prev_hash": prev,
            "kind": SLICE,
            "ts": dt.datetime.now(dt.UTC),
            "request_id": info.write_id,
            "n_rows": n_rows,
            "digest": digest,
        }
        record = _normalise(fields, names)
        record["record_hash"] = record_hash(record)
        guard = (
            f"cohort_date = '{info.day.isoformat()}' AND chain_id = {_sql_string(BATCH_CHAIN)} "
            f"AND seq = {seq + 1}"
        )
        try:
            warehouse.append(
                AUDIT_TABLE,
                pa.Table.from_pylist([record], schema=audit_schema()),
                replace_where=guard,
            )
        except WarehouseBusyError:
            continue
        return seq + 1
    raise RuntimeError(f"{AUDIT_TABLE}: could not link slice {info.slice_id} of {info.day}")


def record_staged(
    settings: Settings,
    staged: StagedDay,
    write_id: str,
    extra: Mapping[str, Any],
    hasher: SliceHasher,
) -> int:
    """Chain the record of a score slice just committed (``extra``: its model name and version
    and :func:`slice_constants`)."""
    from stroke_dagster.warehouse import store as warehouse

    names = [f.name for f in dataclasses.fields(SliceInfo)]
    shared: dict[str, Any] = {name: extra.get(name) for name in names[3:]}  # as `extra` holds them
    info = SliceInfo(day=hasher.day, write_id=write_id, slice_id=str(staged.slice_id), **shared)
    return record_slice(warehouse.of(settings), info, hasher.digest(), hasher.rows)


def _chain_tail(warehouse: Warehouse, day: dt.date, chain_id: str) -> tuple[int, str]:
    table = warehouse.table(AUDIT_TABLE).to_pyarrow_dataset()
    rows = table.to_table(
        columns=["seq", "record_hash"],
        filter=(pc.field("cohort_date") == pa.scalar(day, pa.date32()))
        & (pc.field("chain_id") == chain_id),
    )
    if rows.num_rows == 0:
        return -1, genesis(day, chain_id)
    last = int(np.argmax(rows.column("seq").to_numpy()))
    return int(rows.column("seq")[last].as_py()), str(rows.column("record_hash")[last].as_py())


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first broken record of a verification, in one line."""

    day: dt.date
    chain: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.day} chain {self.chain} {self.where}: {self.what}"


@dataclass
class Verification:
    days: list[dt.date]
    records: int = 0
    slices: int = 0
    rows: int = 0
    problem: Problem | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.problem is None,
            "days": [d.isoformat() for d in self.days],
            "records": self.records,
            "slices": self.slices,
            "slice_rows": self.rows,
            "problem": None if self.problem is None else str(self.problem),
        }


def verify(warehouse: Warehouse, days: int | None = None) -> Verification:
    """Check every chain of the ``days`` most recent days with audit records (all: None).

    Per chain: sequence numbers 0..n without a gap, each ``prev_hash`` the previous record's
    hash, each ``record_hash`` recomputed. Per slice record whose slice is still in
    ``score_history``: every row's ``row_hash`` recomputed (names the patient), the constant
    columns equal to the record's, the row count and the digest recomputed. A slice with audit
    columns but no record is broken too. Stops at the first problem.
    """
    warehouse.ensure(migrate=False)
    audit = warehouse.table(AUDIT_TABLE).to_pyarrow_dataset()
    all_days = sorted(set(audit.to_table(columns=["cohort_date"]).column(0).to_pylist()))
    chosen = all_days[-days:] if days else all_days
    result = Verification(chosen)
    scores = warehouse.table("score_history").to_pyarrow_dataset()
    for day in chosen:
        day_filter = pc.field("cohort_date") == pa.scalar(day, pa.date32())
        records = audit.to_table(filter=day_filter).to_pylist()
        result.records += len(records)
        problem = _check_chains(day, records)
        if problem is None:
            problem = _check_slices(warehouse, day, records, scores, result)
        if problem is not None:
            result.problem = problem
            return result
    return result


def _check_chains(day: dt.date, records: list[dict[str, Any]]) -> Problem | None:
    chains: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        chains.setdefault(record["chain_id"], []).append(record)
    for chain_id in sorted(chains):
        prev = genesis(day, chain_id)
        for expected, record in enumerate(sorted(chains[chain_id], key=lambda r: r["seq"])):
            where = _where(record)
            if record["seq"] != expected:
                what = (
                    f"record seq {expected} missing (deleted?)"
                    if record["seq"] > expected
                    else "sequence number repeated"
                )
                return Problem(day, chain_id, where, what)
            if record["prev_hash"] != prev:
                return Problem(day, chain_id, where, "prev_hash does not match the previous record")
            if record_hash(record) != record["record_hash"]:
                return Problem(day, chain_id, where, "record_hash does not match its content")
            prev = record["record_hash"]
    return None


def _where(record: Mapping[str, Any]) -> str:
    if record["kind"] == SLICE:
        return f"seq {record['seq']} (slice {record['slice_id']}, write {record['request_id']})"
    return f"seq {record['seq']} (request {record['request_id']}, row {record['row_in_request']})"


# a slice's columns that equal its chained record's (the rest of the record is not repeated
# per row: the view score_audit joins it)
_CONSTANTS = ("slice_id", "model_name", "model_version")
_SLICE_COLUMNS = (
    "patient_id",
    "stroke_probability",
    "risk_tier",
    "write_id",
    *_CONSTANTS,
    *(f.name for f in SLICE_ROW_FIELDS),
)


def _check_slices(
    warehouse: Warehouse,
    day: dt.date,
    records: list[dict[str, Any]],
    scores: Any,
    result: Verification,
) -> Problem | None:
    day_filter = pc.field("cohort_date") == pa.scalar(day, pa.date32())
    rows = scores.to_table(columns=list(_SLICE_COLUMNS), filter=day_filter)
    slices = {r["request_id"]: r for r in records if r["kind"] == SLICE}
    audited = rows.filter(pc.is_valid(rows.column("row_hash")))
    write_ids = set(audited.column("write_id").unique().to_pylist())
    for write_id in sorted(write_ids - set(slices)):
        one = audited.filter(pc.equal(audited.column("write_id"), write_id))
        slice_id = one.column("slice_id")[0].as_py()
        return Problem(day, BATCH_CHAIN, f"slice {slice_id} (write {write_id})", "no audit record")
    for write_id in sorted(write_ids):
        record = slices[write_id]
        one = audited.filter(pc.equal(audited.column("write_id"), write_id))
        result.slices += 1
        result.rows += one.num_rows
        problem = _check_slice(day, record, one)
        if problem is not None:
            return problem
    return None


def _digests(column: pa.ChunkedArray) -> np.ndarray | None:
    """The (n, 32) digests of a binary column; ``None`` when one is missing or of another size."""
    array = column.combine_chunks()
    if array.null_count or len(array) == 0:
        return None if array.null_count else np.zeros((0, 32), np.uint8)
    if pc.min_max(pc.binary_length(array)).as_py() != {"min": 32, "max": 32}:
        return None
    offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, array.offset)
    data = np.frombuffer(array.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(-1, 32)


def _check_slice(day: dt.date, record: Mapping[str, Any], rows: pa.Table) -> Problem | None:
    where = f"slice {record['slice_id']} (seq {record['seq']}, write {record['request_id']})"
    rows = rows.sort_by("row_in_slice")
    feature_digests = _digests(rows.column("features_sha256"))
    if feature_digests is None:
        return Problem(day, BATCH_CHAIN, where, "a features_sha256 is missing or not 32 bytes")
    probabilities = rows.column("stroke_probability").to_numpy()
    messages = record_messages(
        day, rows.column("patient_id"), probabilities, _tier_index(rows.column("risk_tier"))
    )
    located = _locator(feature_digests, messages)
    stored = rows.column("row_hash").to_numpy()
    bad = np.flatnonzero(located != stored)
    if len(bad):
        patient = rows.column("patient_id")[int(bad[0])].as_py()
        return Problem(
            day, BATCH_CHAIN, f"{where} patient {patient}", "row does not match its hash"
        )
    for name in _CONSTANTS:
        values = set(rows.column(name).unique().to_pylist())
        if values != {record[name]}:
            return Problem(day, BATCH_CHAIN, where, f"{name} differs from the audit record")
    if rows.num_rows != record["n_rows"]:
        what = f"{rows.num_rows} rows, the audit record says {record['n_rows']} (rows deleted?)"
        return Problem(day, BATCH_CHAIN, where, what)
    positions = rows.column("row_in_slice").to_numpy()
    if not np.array_equal(positions, np.arange(rows.num_rows)):
        return Problem(day, BATCH_CHAIN, where, "row positions have a gap")
    digest = hashlib.sha256(_slice_bytes(feature_digests, messages)).hexdigest()
    if digest != record["digest"]:
        return Problem(day, BATCH_CHAIN, where, "slice digest does not match its rows")
    return None
