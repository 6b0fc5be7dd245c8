"""``python -m stroke_dagster.cli``: the same as the ``stroke`` command."""

from stroke_dagster.cli import run

run()
