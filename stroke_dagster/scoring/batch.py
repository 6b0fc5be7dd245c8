"""Streaming cohort scoring: read in batches, validate, predict, tier, write; memory stays flat.

Each batch of the input is validated (duplicates are caught across batches), its valid rows are
scored with the model's ``predict_proba`` and tiered with the model's thresholds, and every other
row is quarantined with its reason, so ``rows_in == rows_scored + rows_quarantined`` always.

Results are appended batch by batch to an output CSV and/or to the day's score slice. The slice
is written under ``STROKE_HOME/tmp`` as the warehouse table's data file, with what every row
shares as constant columns. After the DDL's checks it is committed as it is, in one short
transaction (:mod:`stroke_dagster.warehouse.day_files`), so the day never has to fit in memory
and is never encoded twice.

Four threads share the work, each batch passing from one to the next through a bounded queue:
reading and validation; the features' audit digests; prediction (the main thread, whose engine
runs on every core); and the outputs (CSV, slice file, audit columns, quarantine), written in
order. Measured on a million patients: 5.0 s with two threads, 3.4 s with four.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, cast, overload

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stroke_dagster.audit import records as audit
from stroke_dagster.core.errors import InputError
from stroke_dagster.core.risk import TIERS, RiskThresholds, tier_index
from stroke_dagster.core.schema import (
    BINARY_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURES,
    ID,
    NUMERIC_FEATURES,
    TARGET,
)
from stroke_dagster.core.settings import Settings
from stroke_dagster.core.storage import RemotePath, Storage, StoragePath, storage_for
from stroke_dagster.io.readers import DEFAULT_BATCH_ROWS, iter_patient_batches, iter_patient_tables
from stroke_dagster.io.validation import SeenIds, validate_patients, validate_table

if TYPE_CHECKING:
    import pandas as pd

    from stroke_dagster.warehouse.store import Provenance

log = logging.getLogger(__name__)
T = TypeVar("T")

SCORES_TABLE = "score_history"  # the `scores` view shows its current slice of each day
COHORT_SOURCE = "cohort"
OUTPUT_COLUMNS = ("id", "stroke_probability", "risk_tier")
_QUARANTINE_SCHEMA = pa.schema(
    [
        ("row_number", pa.int64()),
        ("patient_id", pa.string()),
        ("reason", pa.string()),
        ("record", pa.string()),
    ]
)
_SCORE_SCHEMA = pa.schema(
    [("patient_id", pa.string()), ("stroke_probability", pa.float64()), ("risk_tier", pa.string())]
)


class ScoringModel(Protocol):
    """What scoring needs of a model (``model_store.StoredModel`` provides it); read only."""

    @property
    def pipeline(self) -> Any: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def thresholds(self) -> RiskThresholds: ...


@dataclass
class ScoreSummary:
    """Counts of one scored input; ``rows_in == rows_scored + rows_quarantined``."""

    rows_in: int
    rows_scored: int
    rows_quarantined: int
    model_name: str
    model_version: str
    cohort_date: str | None = None
    output: str | None = None
    tier_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    seconds: float = 0.0
    # batches the compiled engine failed on, scored by scikit-learn instead (0 on a healthy run)
    engine_fallback_batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CohortSummary:
    """Counts of one validated cohort day, and where its typed valid rows were written."""

    cohort_date: str
    source_file: str
    path: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    source_version: str | None = None  # the input file's version (see storage.FileInfo)
    source_sha256: str | None = None  # sha256 of the input file's bytes (score provenance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path | PurePath, storage: Storage | None = None) -> CohortSummary:
        return cls(**json.loads(storage_for(path, storage).read_text(path)))


def predict_probabilities(
    model: ScoringModel,
    valid: pd.DataFrame | pa.Table,
    *,
    on_fallback: Callable[[BaseException], None] | None = None,
) -> np.ndarray:
    """Stroke probability of each valid row (a DataFrame, or an Arrow table from
    :func:`stroke_dagster.io.validation.validate_table`): the model's compiled ``engine`` when it
    has one (:class:`stroke_dagster.model.engine.ForestEngine`, exact), else its ``predict_proba``.

    When the engine raises on the batch (or gives a result of the wrong shape or a non-finite
    value), the model's ``predict_proba`` scores that batch instead: logged once per model
    version and process (:func:`_engine_failed`), and ``on_fallback`` is called with the error
    (``score_file`` counts the batch in ``ScoreSummary.engine_fallback_batches``).
    """
    if len(valid) == 0:
        return np.empty(0, dtype="float64")
    engine = getattr(model, "engine", None)
    if engine is not None:
        try:
            if isinstance(valid, pa.Table):
                probs = engine.predict_columns({name: valid[name] for name in FEATURES})
            else:
                probs = engine.predict_frame(valid)
            if probs.shape != (len(valid),) or not np.isfinite(probs).all():
                raise ValueError(
                    f"engine gave {probs.shape} values (finite: {np.isfinite(probs).all()}) "
                    f"for {len(valid)} rows"
                )
            return probs
        except Exception as exc:  # the pipeline scores the batch; the run goes on
            _engine_failed(model, exc, len(valid))
            if on_fallback is not None:
                on_fallback(exc)
    if isinstance(valid, pa.Table):
        valid = _table_frame(valid)
    return np.asarray(model.pipeline.predict_proba(valid[list(FEATURES)])[:, 1], dtype="float64")


# (event, model name, version) already logged in this process: each is logged once
_ENGINE_LOGGED: set[tuple[str, str, str]] = set()
_ENGINE_LOGGED_LOCK = threading.Lock()


def _first_time(event: str, model: Any) -> bool:
    """True the first time ``event`` happens to this model version in this process."""
    key = (event, str(getattr(model, "name", "")), str(getattr(model, "version", "")))
    with _ENGINE_LOGGED_LOCK:
        if key in _ENGINE_LOGGED:
            return False
        _ENGINE_LOGGED.add(key)
        return True


def _engine_failed(model: Any, exc: BaseException, rows: int) -> None:
    """Log (once per model version and process) that the engine failed on a batch."""
    if _first_time("runtime", model):
        log.warning(
            "%s v%s: the compiled scoring engine failed on a batch of %d rows (%s: %s); "
            "scikit-learn scores this batch and any other the engine fails on (counted in "
            "engine_fallback_batches; logged once per process)",
            getattr(model, "name", "model"),
            getattr(model, "version", "?"),
            rows,
            type(exc).__name__,
            str(exc)[:300],
            exc_info=exc,
        )


def _table_frame(table: pa.Table) -> pd.DataFrame:
    """A typed valid table as the DataFrame ``validate_patients`` gives (text as objects)."""
    columns = {
        name: column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
        for name, column in zip(table.column_names, table.columns, strict=True)
    }
    return pa.table(columns).to_pandas()


@overload
def _day(cohort_date: str | dt.date) -> str: ...
@overload
def _day(cohort_date: str | dt.date | None) -> str | None: ...
def _day(cohort_date: str | dt.date | None) -> str | None:
    if cohort_date is None:
        return None
    return dt.date.fromisoformat(str(cohort_date)).isoformat()


@contextmanager
def _staging_dir(settings: Settings) -> Iterator[Path]:
    """A private local directory removed afterwards, whatever happens: under the storage's
    scratch directory (``STROKE_HOME/tmp`` by default, never the shared object store)."""
    path = settings.files.scratch / f"stage-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _ParquetSink:
    """Appends Arrow tables to one Parquet file (the quarantined rows), opened on the first
    write. Snappy: the file is read once on this machine and then deleted."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema, compression="snappy")
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> Path:
        """Finish the file (an empty one with the schema if nothing was written)."""
        if self._writer is None:
            pq.write_table(self.schema.empty_table(), self.path)
        else:
            self._writer.close()
        return self.path


class _SliceFile:
    """The day's score slice, written batch by batch as the warehouse table's data file
    (:meth:`~stroke_dagster.warehouse.store.Warehouse.day_writer`), so that the commit adds the
    file as it is. What every row shares is set once, when the first batch names the model;
    the input's sha256 (part of the slice id) is computed in the background meanwhile."""

    def __init__(
        self,
        path: Path,
        source: Path,
        provenance: Provenance | None,
        role: str,
        settings: Settings,
    ) -> None:
        from stroke_dagster.warehouse import store as warehouse

        self.path, self.role, self.settings = path, role, settings
        self.provenance = dataclasses.replace(
            provenance or warehouse.Provenance(input_file=str(source))
        )
        self.scored_at = dt.datetime.now(dt.UTC)
        self._sha: Background[str] | None = None
        if self.provenance.input_sha256 is None:
            self._sha = Background(lambda: warehouse.file_sha256(source))
        self._writer: Any = None
        self.constants: dict[str, object] = {}

    def _open(self, summary: ScoreSummary) -> Any:
        from stroke_dagster.warehouse import store as warehouse

        if self._sha is not None:
            self.provenance.input_sha256, self._sha = self._sha.result(), None
        self.provenance.model_version = summary.model_version
        self.constants = warehouse.score_slice_constants(
            self.provenance, model_name=summary.model_name, scored_at=self.scored_at, role=self.role
        )
        self._writer = warehouse.of(self.settings).day_writer(
            SCORES_TABLE, self.path, self.constants, dictionary=warehouse.SCORE_FEW_VALUES
        )
        return self._writer

    def write(self, rows: pa.Table, summary: ScoreSummary) -> None:
        (self._writer or self._open(summary)).write(rows)

    def stage(self, summary: ScoreSummary) -> Any:
        """The finished file, checked and staged for the commit (a ``StagedDay``)."""
        from stroke_dagster.warehouse import store as warehouse

        (self._writer or self._open(summary)).close()
        assert summary.cohort_date is not None  # a slice is a day's
        return warehouse.of(self.settings).stage_day_file(
            SCORES_TABLE,
            summary.cohort_date,
            self.path,
            shadow=self.role == warehouse.SHADOW_ROLE,
        )


def _quarantine_table(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(
        df[list(_QUARANTINE_SCHEMA.names)], schema=_QUARANTINE_SCHEMA, preserve_index=False
    )


def iter_validated(
    path: str | Path, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """``(valid, quarantine)`` per batch of a patient file; duplicate ids caught across batches."""
    seen = SeenIds()
    offset = 0
    for raw in iter_patient_batches(path, batch_rows=batch_rows, arrow_strings=True):
        result = validate_patients(raw, seen_ids=seen, row_offset=offset)
        offset += len(raw)
        yield result.valid, result.quarantine


def _iter_for_scoring(
    path: str | Path, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[tuple[pd.DataFrame | pa.Table, pd.DataFrame | None]]:
    """:func:`iter_validated` for scoring: a batch whose rows are all valid and plainly spelled
    comes as a typed Arrow table (no quarantine), without pandas; any other batch as
    :func:`iter_validated` gives it. Duplicate ids are caught across both kinds of batch."""
    seen = SeenIds()
    offset = 0
    for table in iter_patient_tables(path, batch_rows):
        valid = validate_table(table, seen_ids=seen)
        if valid is not None:
            yield valid, None
        else:
            import pandas as pd

            if table.num_rows == 0:
                raw = pd.DataFrame({c: pd.Series(dtype=object) for c in table.column_names})
            else:
                raw = table.to_pandas(types_mapper=_arrow_text)
            result = validate_patients(raw, seen_ids=seen, row_offset=offset)
            yield result.valid, result.quarantine
        offset += table.num_rows


def _arrow_text(arrow_type: pa.DataType) -> pd.StringDtype[Literal["pyarrow"]] | None:
    import pandas as pd

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


_DONE = object()


def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Reading and validating the next batch then overlaps the prediction of the current one (both
    release the GIL for most of their work); memory stays bounded by ``depth`` batches.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer
            buffer.put((_DONE, exc))

    thread = threading.Thread(target=produce, daemon=True, name="stroke-prefetch")
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


class InOrder:
    """Hand items to ``work`` one by one, in order, in one background thread, at most
    ``depth`` waiting (memory stays bounded); :meth:`join` waits for the last one and raises
    the first error in the caller's thread (the items after it are dropped)."""

    def __init__(self, work: Callable[[Any], object], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(work,), daemon=True, name="stroke-in-order"
        )
        self._thread.start()

    def _run(self, work: Callable[[Any], object]) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    work(item)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def join(self) -> None:
        self.close()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for the items handed over so far (idempotent; errors are kept for join)."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()


class _Outputs:
    """Where a scored batch goes: the output CSV, the day's slice file (with the audit
    columns) and the quarantine file."""

    def __init__(
        self,
        csv_tmp: Path | None,
        scores: _SliceFile | None,
        rejected: _ParquetSink,
        hasher: audit.SliceHasher | None,
    ) -> None:
        self.csv_tmp, self.scores, self.rejected, self.hasher = csv_tmp, scores, rejected, hasher
        self._csv: Any = None

    def write(self, item: tuple[Any, np.ndarray, np.ndarray, Any, Any, ScoreSummary]) -> None:
        valid, probs, tiers, digests, quarantine, summary = item
        if isinstance(valid, pa.Table):
            ids = valid[ID]
        else:
            ids = pa.array(valid[ID].to_numpy(dtype=object), type=pa.string())
        prob_arr = pa.array(probs, type=pa.float64())
        tier_arr = pa.array(TIERS, type=pa.string()).take(pa.array(tiers))
        if self.csv_tmp is not None:
            batch = pa.Table.from_arrays([ids, prob_arr, tier_arr], names=OUTPUT_COLUMNS)
            if self._csv is None:
                self._csv = _csv_writer(self.csv_tmp, batch.schema)
            self._csv.write_table(batch)
        if self.scores is not None:
            rows = pa.Table.from_arrays([ids, prob_arr, tier_arr], schema=_SCORE_SCHEMA)
            if self.hasher is not None:  # the per-row audit columns (see .audit)
                rows = self.hasher.add(rows, valid, probs, tiers, digests)
            self.scores.write(rows, summary)
        if quarantine is not None and len(quarantine):
            self.rejected.write(_quarantine_table(quarantine))

    def finish_csv(self) -> None:
        """Complete the output CSV (a header only when no row was scored)."""
        if self.csv_tmp is None:
            return
        if self._csv is None:
            schema = pa.schema([(n, pa.string()) for n in OUTPUT_COLUMNS])
            self._csv = _csv_writer(self.csv_tmp, schema)
        self.close()

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None


class Background(Generic[T]):
    """Call ``work`` in a daemon thread (abandoned work never delays the process exit);
    :meth:`result` waits for it and re-raises its error in the caller's thread."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._result = work()
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


def score_file(
    path: str | Path,
    model: ScoringModel | Callable[[], ScoringModel],
    *,
    cohort_date: str | dt.date | None = None,
    output_csv: str | Path | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    quarantine_source: str | None = COHORT_SOURCE,
    provenance: Provenance | None = None,
    role: str = "champion",
    before_write: Callable[[], object] | None = None,
    settings: Settings,
) -> ScoreSummary:
    """Score a patient file (CSV or Parquet) batch by batch.

    ``output_csv`` receives ``id, stroke_probability, risk_tier`` for every valid row (written to a
    temporary file and renamed at the end, so a failed run leaves no partial output). With
    ``cohort_date`` the day's rows of the ``scores`` table are replaced in one transaction.
    Rejected rows go to the ``quarantine`` table under ``quarantine_source`` (``None``: the input
    is already validated, nothing is written there). A whole-input problem raises ``InputError``
    before anything is written.

    ``model`` may also be a function returning the model: it is then loaded in a background
    thread while the first batch is read and validated (a bad file fails without waiting for it).

    ``provenance`` (run id, input file) is stored with the day's slice of ``score_history``; the
    input's sha256 and the model version are filled in here. ``role="shadow"`` writes the slice
    as a shadow version's (never current, never in ``scores``; see :mod:`.shadow`).

    ``before_write`` is called once everything is scored, before anything is written (the
    warehouse or ``output_csv``): a check that may refuse the write by raising, e.g. one run
    meanwhile in the background (``Background(check).result``).
    """
    if output_csv is None and cohort_date is None:
        raise ValueError("score_file needs output_csv, cohort_date, or both")
    started = time.perf_counter()
    day = _day(cohort_date)
    path = Path(path)
    # a model has a pipeline; a function returning one has not
    pending: Background[ScoringModel] | None = None
    loaded: ScoringModel | None = None
    if callable(model) and not hasattr(model, "pipeline"):
        pending = Background(model)
    else:
        loaded = cast(ScoringModel, model)
    summary = ScoreSummary(0, 0, 0, "", "", cohort_date=day)
    output = Path(output_csv) if output_csv is not None else None

    def count_fallback(_: BaseException) -> None:
        summary.engine_fallback_batches += 1

    with _staging_dir(settings) as stage:
        hasher = audit.SliceHasher(day) if day and settings.audit.enabled else None
        scores = (
            _SliceFile(stage / "scores.parquet", path, provenance, role, settings) if day else None
        )
        rejected = _ParquetSink(stage / "quarantine.parquet", _QUARANTINE_SCHEMA)
        csv_tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex}.tmp") if output else None
        outputs = _Outputs(csv_tmp, scores, rejected, hasher)
        try:
            large = _file_size(path) > 4 << 20
            if large:  # numba loads while the file is read
                from stroke_dagster.model.engine import preload_kernel

                preload_kernel()
            batches = _iter_for_scoring(path, batch_rows)
            digested: Iterator[tuple[Any, pd.DataFrame | None, np.ndarray | None]]
            if hasher is not None:  # the features' digests, in a thread of their own
                digested = ((v, q, hasher.feature_digests(v)) for v, q in prefetch(batches))
            else:
                digested = ((v, q, None) for v, q in batches)
            # the outputs (CSV, slice file, audit columns, quarantine) are written in order by
            # one thread of their own, while the next batch is predicted
            writer = InOrder(outputs.write)
            try:
                for valid, quarantine, digests in prefetch(digested):
                    if pending is not None:
                        loaded, pending = pending.result(), None
                    assert loaded is not None  # given, or loaded just above
                    if large and not hasattr(loaded, "engine"):
                        loaded = _with_engine(loaded)
                    summary.model_name, summary.model_version = loaded.name, str(loaded.version)
                    rejects = 0 if quarantine is None else len(quarantine)
                    probs = predict_probabilities(loaded, valid, on_fallback=count_fallback)
                    summary.rows_in += len(valid) + rejects
                    summary.rows_scored += len(valid)
                    summary.rows_quarantined += rejects
                    tiers = tier_index(probs, loaded.thresholds)
                    _count_tiers(summary.tier_counts, tiers)
                    writer.put((valid, probs, tiers, digests, quarantine, summary))
                writer.join()
            finally:
                writer.close()
            outputs.finish_csv()
            if before_write is not None:
                before_write()
            if pending is not None and hasher is not None:  # no batch (an empty Parquet file):
                loaded, pending = pending.result(), None  # the audit record still names the model
            _write_warehouse(
                summary,
                path,
                scores,
                rejected,
                quarantine_source,
                provenance,
                settings,
                audited=(hasher, loaded) if hasher is not None and loaded is not None else None,
            )
            if csv_tmp is not None:
                assert output is not None  # csv_tmp is set only with an output
                os.replace(csv_tmp, output)
                summary.output = str(output)
        finally:
            outputs.close()
            if csv_tmp is not None and csv_tmp.exists():
                csv_tmp.unlink()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


@dataclass
class _EngineModel:
    pipeline: Any
    engine: Any
    name: str
    version: str
    thresholds: RiskThresholds


def _with_engine(model: ScoringModel) -> ScoringModel:
    """A model that carries no ``engine`` attribute, with its pipeline (or recalibrated
    pipeline) compiled and checked against its ``predict_proba`` on the probe patients through
    every input path (:func:`stroke_dagster.model.engine.parity`); unchanged when that is not
    possible,
    the reason logged once per model version and process."""
    from stroke_dagster.model import engine as forest

    if hasattr(model, "engine"):
        return model
    name, version = getattr(model, "name", "model"), getattr(model, "version", "?")
    try:
        engine = forest.ForestEngine.compile(model.pipeline)
        if engine is None:
            if _first_time("shape", model):
                log.info(
                    "%s v%s scores with scikit-learn: its shape does not compile", name, version
                )
            return model
        gaps = forest.parity_report(engine, model.pipeline)
    except Exception:  # an unforeseen pipeline detail: the pipeline itself always works
        if _first_time("compile", model):
            log.warning(
                "%s v%s: compiling failed; scikit-learn scores", name, version, exc_info=True
            )
        return model
    if not max(gaps.values()) <= forest.PARITY_TOLERANCE:
        if _first_time("parity", model):
            log.warning(
                "%s v%s: the compiled engine differs from predict_proba on the probe patients "
                "(max gap per input path: %s; tolerance %g): scikit-learn scores",
                name,
                version,
                ", ".join(f"{path} {gap:.3g}" for path, gap in gaps.items()),
                forest.PARITY_TOLERANCE,
            )
        return model
    return _EngineModel(model.pipeline, engine, model.name, str(model.version), model.thresholds)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count_tiers(counts: dict[str, int], tiers: np.ndarray) -> None:
    """Add the batch's patients per tier (``tiers``: positions in ``TIERS``)."""
    for name, count in zip(TIERS, np.bincount(tiers, minlength=len(TIERS)), strict=True):
        counts[name] += int(count)


def _csv_writer(path: Path, schema: pa.Schema) -> Any:
    import pyarrow.csv as pacsv

    options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    return pacsv.CSVWriter(path, schema, write_options=options)


def _write_warehouse(
    summary: ScoreSummary,
    path: Path,
    scores: _SliceFile | None,
    rejected: _ParquetSink,
    quarantine_source: str | None,
    provenance: Provenance | None,
    settings: Settings,
    audited: tuple[audit.SliceHasher, ScoringModel] | None = None,
) -> None:
    """Replace the day's quarantine rows, then its score slice (the commit of record); then
    chain the slice's audit record (``audited``: its hasher and model)."""
    day = summary.cohort_date
    write_rejected = quarantine_source is not None and (day is not None or rejected.rows > 0)
    if scores is None and not write_rejected:
        return
    from stroke_dagster.warehouse import store as warehouse

    rejected_path = rejected.close()
    source = quarantine_source if day else f"score:{path.resolve()}"
    if scores is not None:
        staged = scores.stage(summary)
        provenance = scores.provenance
    else:
        provenance = provenance or warehouse.Provenance(input_file=str(path))
    with warehouse.write_transaction(settings, provenance) as batch:
        if write_rejected:
            assert source is not None  # write_rejected needs a quarantine source
            warehouse.replace_quarantine_rows(batch, rejected_path, source, day)
        if scores is not None:
            batch.add(staged)
    if scores is not None and audited is not None:
        extra = {
            k: scores.constants[k] for k in ("model_name", "model_version", "scored_at", "role")
        }
        shared = {**extra, **audit.slice_constants(audited[1], settings, provenance.run_id)}
        audit.record_staged(settings, staged, provenance.write_id, shared, audited[0])


def cohort_path(settings: Settings, day: str) -> StoragePath:
    """Where the typed, validated rows of ``day``'s cohort are kept (``cohorts/<day>.parquet`` of
    the file storage)."""
    return settings.files.path("cohorts", f"{day}.parquet")


def read_cohort(settings: Settings, summary: CohortSummary) -> pd.DataFrame:
    """The typed valid rows of a validated cohort (from the file storage)."""
    import pandas as pd

    files = settings.files
    if files.is_local:
        return pd.read_parquet(summary.path)
    return pd.read_parquet(files.key(summary.path), filesystem=files.arrow_filesystem())


def validate_day(settings: Settings, day: str) -> CohortSummary:
    """Validate ``incoming/<day>.*`` into :func:`cohort_path` (rejected rows quarantined)."""
    source = settings.incoming_file(day)
    if source is None:
        raise InputError(
            f"no cohort file for {day}: expected {settings.incoming_dir}/{day}.csv or .parquet"
        )
    return validate_cohort(source, day, cohort_path(settings, day), settings=settings)


def current_cohort(settings: Settings, day: str) -> CohortSummary:
    """The validated cohort of ``day``, validated again only when its input file changed since.

    Scoring and drift of one day both read this typed copy instead of each re-validating the file.
    """
    files = settings.files
    summary_path = cohort_path(settings, day).with_suffix(".json")
    source = settings.incoming_file(day)
    summary_info = files.info(summary_path)
    if summary_info is not None and files.is_file(cohort_path(settings, day)):
        summary = CohortSummary.read(summary_path, files)
        stale = False
        if source is not None:
            source_info = files.info(source)
            if source_info is None or _source_name(source) != summary.source_file:
                stale = True
            elif summary.source_version is not None:
                stale = source_info.version != summary.source_version
            else:
                stale = source_info.mtime_ns > summary_info.mtime_ns
        if not stale:
            return summary
    return validate_day(settings, day)


def _source_name(path: str | PurePath) -> str:
    if isinstance(path, RemotePath):
        return str(path)
    return str(Path(path).resolve())


def validate_cohort(
    path: str | PurePath,
    cohort_date: str | dt.date,
    dest: str | PurePath,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    quarantine_source: str = COHORT_SOURCE,
    settings: Settings,
) -> CohortSummary:
    """Validate a day's cohort file into a typed Parquet file at ``dest`` (+ ``.json`` summary).

    ``path`` and ``dest`` may be in the file storage (``settings.files``: paths or URLs) or local.
    Rejected rows replace the day's rows of ``quarantine_source`` in the warehouse. ``dest`` is
    replaced atomically, so readers see the previous or the new cohort, never a partial one.
    """
    day = _day(cohort_date)
    source = settings.files.as_path(path) if isinstance(path, str) else path
    dest = settings.files.as_path(dest) if isinstance(dest, str) else dest
    inputs = storage_for(source, settings.files if isinstance(source, RemotePath) else None)
    files = storage_for(dest, settings.files if isinstance(dest, RemotePath) else None)
    if settings.files.is_local and not isinstance(dest, RemotePath):
        files = settings.files  # its fsync setting
    source_info = inputs.info(source)
    if source_info is None and isinstance(source, RemotePath):
        raise InputError(f"input file not found: {source}")
    rows_valid = rows_quarantined = 0
    writer: pq.ParquetWriter | None = None
    with (
        _staging_dir(settings) as stage,
        inputs.local_copy(source) if source_info is not None else _as_local(source) as local,
        files.staged_file(".tmp", near=dest.parent) as tmp,
    ):
        rejected = _ParquetSink(stage / "quarantine.parquet", _QUARANTINE_SCHEMA)
        from stroke_dagster.warehouse import store as warehouse

        source_sha256 = warehouse.file_sha256(local)
        try:
            schema: pa.Schema | None = None
            for valid, quarantine in iter_validated(local, batch_rows):
                rows_valid += len(valid)
                rows_quarantined += len(quarantine)
                if len(quarantine):
                    rejected.write(_quarantine_table(quarantine))
                table = pa.Table.from_pandas(valid, preserve_index=False)
                if writer is None:
                    schema = _typed_schema(table.schema)
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writer.write_table(table.cast(schema))
            if writer is None:
                raise AssertionError("iter_patient_batches yields at least one batch")
            writer.close()
            writer = None
            warehouse.write_quarantine(rejected.close(), quarantine_source, day, settings=settings)
            files.publish(tmp, dest, fsync=False)
        finally:
            if writer is not None:
                writer.close()
    summary = CohortSummary(
        cohort_date=day,
        source_file=_source_name(source),
        path=str(dest),
        rows_in=rows_valid + rows_quarantined,
        rows_valid=rows_valid,
        rows_quarantined=rows_quarantined,
        source_version=source_info.version if source_info is not None else None,
        source_sha256=source_sha256,
    )
    files.write_text(dest.with_suffix(".json"), json.dumps(summary.to_dict(), indent=2))
    return summary


@contextmanager
def _as_local(path: PurePath) -> Iterator[Path]:
    yield Path(path)


def _typed_schema(schema: pa.Schema) -> pa.Schema:
    """Column types from the patient schema, not from one batch's content (e.g. all-missing bmi)."""
    types = {ID: pa.string(), TARGET: pa.float64()}
    types.update(dict.fromkeys(NUMERIC_FEATURES, pa.float64()))
    types.update(dict.fromkeys(BINARY_FEATURES, pa.int64()))
    types.update(dict.fromkeys(CATEGORICAL_FEATURES, pa.string()))
    return pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in schema])
