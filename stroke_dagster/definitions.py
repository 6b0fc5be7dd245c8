"""The code location: every Dagster object found under ``stroke_dagster/defs``."""

from pathlib import Path

from dagster import definitions, load_from_defs_folder


@definitions
def defs():
    return load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent)
