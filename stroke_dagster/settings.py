"""Where the platform keeps its state: everything lives under ``STROKE_HOME``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = Path(os.environ.get("STROKE_SQL_DIR", PROJECT_ROOT / "sql"))
DEFAULT_RAW_CSV = "data/raw/healthcare-dataset-stroke-data.csv"
MODEL_NAME = "StrokeRF"
# A day's cohort arrives as STROKE_HOME/incoming/<YYYY-MM-DD> with one of these suffixes.
COHORT_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class Settings:
    """Paths and URIs resolved from the environment (read once per call of ``get_settings``)."""

    home: Path
    raw_csv: Path
    mlflow_tracking_uri: str

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def incoming_dir(self) -> Path:
        return self.home / "incoming"

    def incoming_file(self, day: str) -> Path | None:
        """The cohort file of ``day`` (``YYYY-MM-DD``) waiting in ``incoming/``, if any."""
        for suffix in COHORT_SUFFIXES:
            path = self.incoming_dir / f"{day}{suffix}"
            if path.is_file():
                return path
        return None

    @property
    def labels_dir(self) -> Path:
        return self.home / "labels"

    @property
    def models_dir(self) -> Path:
        """Local side files kept per model version (reference data, fitted drift detectors)."""
        return self.home / "models"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME", self.home / "dagster"))

    def ensure_dirs(self) -> None:
        for path in (self.home, self.incoming_dir, self.labels_dir, self.models_dir):
            path.mkdir(parents=True, exist_ok=True)


def get_settings() -> Settings:
    """Read ``STROKE_HOME``, ``STROKE_RAW_CSV`` and ``MLFLOW_TRACKING_URI`` from the environment."""
    home = Path(os.environ.get("STROKE_HOME", "data")).expanduser().resolve()
    raw_csv = Path(os.environ.get("STROKE_RAW_CSV", DEFAULT_RAW_CSV)).expanduser()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    return Settings(home=home, raw_csv=raw_csv, mlflow_tracking_uri=uri)
