"""The online scoring service (FastAPI): ``create_app`` lives in :mod:`stroke_dagster.api.app`.

This package's ``__init__`` imports nothing heavy, so the telemetry readers
(:mod:`stroke_dagster.api.telemetry`) can be used without loading FastAPI or MLflow.
"""
