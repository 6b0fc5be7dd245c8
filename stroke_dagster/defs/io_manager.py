"""The IO manager of the assets that hand Python objects to downstream steps, on the platform's
file storage when it is an object store.

``raw_patients``, ``labelled_cohorts``, ``clean_patients``, ``patient_split``, ``tuned_model`` and
``model_evaluation`` return objects that the next step loads. Dagster's default IO manager keeps
them as pickles under ``DAGSTER_HOME/storage``: a file one step leaves on its machine's disk for
another. With ``storage.url`` set (``STROKE_STORAGE_URL=s3://bucket/prefix``) they go to
``<storage>/dagster/io/<asset key>/<partition or __all__>.zip`` instead (outputs of plain ops to
``<storage>/dagster/io/runs/<run id>/<step>/<output>.zip``), so the next step can run on any
worker. Without it (a single machine) the default IO manager is unchanged.

The bucket also receives the upstream system's cohorts, so nothing stored here is a pickle (a
pickle runs code when loaded). Each output is one zip archive, published in one ``PUT`` like the
pickle it replaces: ``manifest.json`` describes the value and one member holds each part that is
not plain JSON (:func:`dumps`, :func:`loads`):

* ``None``, booleans, numbers, strings: inline in the manifest (NumPy scalars become Python ones);
* dicts with string keys, lists, tuples: in the manifest, their items encoded the same way;
* the platform's dataclasses in :data:`DATACLASSES` (``TuningResult``, ``Evaluation``,
  ``RiskThresholds``): in the manifest, field by field; a class outside that list is refused and
  loading only imports classes named in it;
* data frames: Parquet; NumPy arrays: ``.npy`` (no object arrays; read with
  ``allow_pickle=False``); ``bytes``: as they are;
* scikit-learn estimators: skops, written only when every type it holds is in the platform's
  allow-list (:data:`stroke_dagster.model.store.TRUSTED_TYPES`) and read with that list.

Anything else raises :class:`UnsupportedOutputError` when the step stores it, never at load.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from stroke_dagster.core.settings import Settings, load_settings
from stroke_dagster.core.storage import StoragePath

IO_PREFIX = ("dagster", "io")
SUFFIX = ".zip"
MANIFEST = "manifest.json"
FORMAT = 1
# The dataclasses handed between steps: only these are stored, and rebuilt, field by field.
DATACLASSES: frozenset[str] = frozenset(
    {
        "stroke_dagster.core.risk.RiskThresholds",
        "stroke_dagster.model.training.metrics.Evaluation",
        "stroke_dagster.model.training.tuning.TuningResult",
    }
)


class UnsupportedOutputError(TypeError):
    """An output (or a part of it) that the IO manager cannot store without a pickle."""


class StoredOutputError(ValueError):
    """A stored output that is not what :func:`dumps` writes (damaged, tampered, other format)."""


# -- parts stored as archive members ---------------------------------------------------------


def _frame_bytes(frame: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame), buffer)
    return buffer.getvalue()


def _frame_from(data: bytes) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data)).to_pandas()


def _array_bytes(array: Any) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)  # refuses object arrays
    return buffer.getvalue()


def _array_from(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def _estimator_bytes(estimator: Any) -> bytes:
    import skops.io

    from stroke_dagster.model.store import TRUSTED_TYPES

    data = skops.io.dumps(estimator)
    untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise UnsupportedOutputError(
            f"holds types outside the platform's skops allow-list: {', '.join(untrusted)}"
        )
    return data


def _estimator_from(data: bytes) -> Any:
    import skops.io

    from stroke_dagster.model.store import TRUSTED_TYPES

    return skops.io.loads(data, trusted=list(TRUSTED_TYPES))


@dataclass(frozen=True)
class Part:
    """How one kind of value is stored as its own archive member."""

    suffix: str
    dump: Callable[[Any], bytes]
    load: Callable[[bytes], Any]


PARTS: dict[str, Part] = {
    "frame": Part(".parquet", _frame_bytes, _frame_from),
    "array": Part(".npy", _array_bytes, _array_from),
    "bytes": Part(".bin", bytes, bytes),
    "estimator": Part(".skops", _estimator_bytes, _estimator_from),
}


def _part_kind(value: Any) -> str | None:
    """The :data:`PARTS` entry of ``value``, if any."""
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return "frame"
    if isinstance(value, np.ndarray):
        return "array"
    if type(value) is bytes:
        return "bytes"
    from sklearn.base import BaseEstimator

    if isinstance(value, BaseEstimator):
        return "estimator"
    return None


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- the manifest ------------------------------------------------------------------------------


class _Writer:
    """Encodes a value into manifest nodes, adding a member to the archive for each part."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.parts = 0

    def encode(self, value: Any, where: str) -> Any:
        import numpy as np

        if value is None or type(value) in (bool, int, float, str):
            return value
        if isinstance(value, np.bool_ | np.integer | np.floating | np.str_):
            return value.item()
        if type(value) is dict:
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise UnsupportedOutputError(f"{where}: dict key {bad[0]!r} is not a string")
            return {"dict": {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
        if type(value) in (list, tuple):
            items = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return {type(value).__name__: items}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            name = _class_name(type(value))
            if name not in DATACLASSES:
                raise UnsupportedOutputError(f"{where}: dataclass {name} is not in DATACLASSES")
            fields = {
                f.name: self.encode(getattr(value, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(value)
            }
            return {"dataclass": name, "fields": fields}
        kind = _part_kind(value)
        if kind is None:
            raise UnsupportedOutputError(
                f"{where}: cannot store a {_class_name(type(value))} without a pickle "
                "(supported: data frames, NumPy arrays, bytes, scikit-learn estimators, "
                "the dataclasses in DATACLASSES, and dicts, lists, tuples and scalars of these)"
            )
        try:
            data = PARTS[kind].dump(value)
        except UnsupportedOutputError as exc:
            raise UnsupportedOutputError(f"{where}: {exc}") from None
        except (TypeError, ValueError, NotImplementedError) as exc:  # object arrays, mixed columns
            raise UnsupportedOutputError(f"{where}: cannot store this {kind}: {exc}") from exc
        readable = re.sub(
            r"[^A-Za-z0-9_.-]+", "_", where.replace("['", ".").replace("']", "")
        ).strip("_.")
        member = f"{self.parts:03d}-{readable[:80]}{PARTS[kind].suffix}"
        self.parts += 1
        self.archive.writestr(member, data)
        return {kind: member}


class _Reader:
    """Decodes manifest nodes, reading each part from the archive with its own format."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if not isinstance(node, dict):
            raise StoredOutputError(f"unexpected manifest node {node!r:.80}")
        if set(node) == {"dataclass", "fields"}:
            return self._dataclass(node["dataclass"], node["fields"])
        if len(node) != 1:
            raise StoredOutputError(f"unexpected manifest node {node!r:.80}")
        [(kind, content)] = node.items()
        if kind == "dict" and isinstance(content, dict):
            return {k: self.decode(v) for k, v in content.items()}
        if kind in ("list", "tuple") and isinstance(content, list):
            items = [self.decode(v) for v in content]
            return items if kind == "list" else tuple(items)
        if kind in PARTS and isinstance(content, str):
            return PARTS[kind].load(self.archive.read(content))
        raise StoredOutputError(f"unexpected manifest node {node!r:.80}")

    def _dataclass(self, name: Any, fields: Any) -> Any:
        if name not in DATACLASSES or not isinstance(fields, dict):
            raise StoredOutputError(f"dataclass {name!r:.80} is not in DATACLASSES")
        module, _, attribute = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attribute)
        expected = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != expected:
            raise StoredOutputError(f"{name}: stored fields differ from the class's")
        return cls(**{k: self.decode(v) for k, v in fields.items()})


def dumps(value: Any, where: str = "value") -> bytes:
    """``value`` as a zip archive of ``manifest.json`` and its parts (see the module docstring).

    Raises :class:`UnsupportedOutputError`, naming the part, for anything it cannot store.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        manifest = {"format": FORMAT, "value": _Writer(archive).encode(value, where)}
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """The value :func:`dumps` stored; :class:`StoredOutputError` when ``data`` is not one."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise StoredOutputError("not a stored output of this format")
            return _Reader(archive).decode(manifest.get("value"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise StoredOutputError(f"not a stored output ({exc})") from None


# -- the IO manager ----------------------------------------------------------------------------


class ObjectStoreIOManager(dg.ConfigurableIOManager):
    """Stores each output in the platform's object storage as data (see the module docstring)."""

    def _settings(self) -> Settings:
        return load_settings()

    def _path(self, settings: Settings, context: dg.OutputContext | dg.InputContext) -> StoragePath:
        files = settings.files
        if context.has_asset_key:
            name = "__all__"
            if context.has_asset_partitions:
                keys = context.asset_partition_keys
                if len(keys) != 1:
                    raise dg.DagsterInvariantViolationError(
                        f"{context.asset_key.to_user_string()}: one partition per step only"
                    )
                name = keys[0]
            return files.path(*IO_PREFIX, *context.asset_key.path, f"{name}{SUFFIX}")
        output = context if isinstance(context, dg.OutputContext) else context.upstream_output
        *parts, last = output.get_identifier()  # run id, step key, output name (mapping key)
        return files.path(*IO_PREFIX, "runs", *parts, f"{last}{SUFFIX}")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        where = (
            context.asset_key.to_user_string()
            if context.has_asset_key
            else context.name or "output"
        )
        data = dumps(obj, where)  # before any write: an unsupported output stores nothing
        settings = self._settings()
        path = self._path(settings, context)
        settings.files.write_bytes(path, data)
        context.add_output_metadata({"stored_at": str(path), "stored_bytes": len(data)})

    def load_input(self, context: dg.InputContext) -> Any:
        settings = self._settings()
        path = self._path(settings, context)
        try:
            data = settings.files.read_bytes(path)
        except FileNotFoundError:
            raise dg.Failure(
                description=f"input {context.name}: {path} is missing (materialize it again)"
            ) from None
        try:
            return loads(data)
        except Exception as exc:  # damaged, tampered, refused by skops: never a partial value
            raise dg.Failure(
                description=f"input {context.name}: {path} cannot be read ({exc}); "
                "materialize it again"
            ) from exc


@dg.definitions
def io_managers() -> dg.Definitions:
    """The object-store IO manager when the file storage is remote; else Dagster's default."""
    if not load_settings().storage.remote:
        return dg.Definitions()
    return dg.Definitions(resources={"io_manager": ObjectStoreIOManager()})
