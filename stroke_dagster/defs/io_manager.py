"""The IO manager of the assets that hand Python objects to downstream steps, on the platform's
file storage when it is an object store.

``raw_patients``, ``labelled_cohorts``, ``clean_patients``, ``patient_split``, ``tuned_model`` and
``model_evaluation`` return objects that the next step loads. Dagster's default IO manager keeps
them as pickles under ``DAGSTER_HOME/storage``: a file one step leaves on its machine's disk for
another. With ``storage.url`` set (``STROKE_STORAGE_URL=s3://bucket/prefix``) they go to
``<storage>/dagster/io/<asset key>/<partition or __all__>.pkl`` instead (outputs of plain ops to
``<storage>/dagster/io/runs/<run id>/<step>/<output>.pkl``), so the next step can run on any
worker. Without it (a single machine) the default IO manager is unchanged.

Pickles run code when loaded: the bucket must be as trusted as the code location itself (the
platform's own writers only).
"""

from __future__ import annotations

import pickle
from typing import Any

import dagster as dg

from stroke_dagster.settings import Settings, load_settings
from stroke_dagster.storage import StoragePath

IO_PREFIX = ("dagster", "io")
SUFFIX = ".pkl"


class ObjectStoreIOManager(dg.ConfigurableIOManager):
    """Pickles each output to the platform's object storage (see the module docstring)."""

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
        settings = self._settings()
        path = self._path(settings, context)
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
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
        return pickle.loads(data)  # noqa: S301 - written by this IO manager (see module doc)


@dg.definitions
def io_managers() -> dg.Definitions:
    """The object-store IO manager when the file storage is remote; else Dagster's default."""
    if not load_settings().storage.remote:
        return dg.Definitions()
    return dg.Definitions(resources={"io_manager": ObjectStoreIOManager()})
