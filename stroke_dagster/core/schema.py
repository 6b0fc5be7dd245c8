"""The patient schema: the one definition of columns, types, ranges and categories.

Every other module (validation, features, the API's request model, the SQL DDL checks) reads
these constants instead of repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass

ID = "id"
TARGET = "stroke"
# The patient a row belongs to, where a patient can have several rows (a labelled cohort day is
# one row per patient and day, ids "<day>/<id>"): the holdout, the tuning folds, the
# recalibration's fit/judge split and the gate's "patients neither model trained on" all go by
# it. Absent, a row's `id` is its patient (one row per patient, as in the raw training file).
PATIENT_KEY = "patient_key"


@dataclass(frozen=True)
class NumericField:
    name: str
    low: float
    high: float
    nullable: bool = False
    integer: bool = False
    description: str = ""


@dataclass(frozen=True)
class CategoricalField:
    name: str
    categories: tuple[str, ...]
    description: str = ""


# Ranges are physiological bounds, wide enough for any real cohort, narrow enough to catch unit or
# entry errors (a glucose in mmol/L, an age in months, a bmi of 0).
NUMERIC_FIELDS: tuple[NumericField, ...] = (
    NumericField("age", 0.0, 120.0, description="Age in years (fractions for infants)."),
    NumericField(
        "avg_glucose_level", 20.0, 700.0, description="Average blood glucose level, mg/dL."
    ),
    NumericField("bmi", 10.0, 100.0, nullable=True, description="Body-mass index, kg/m²."),
)

BINARY_FIELDS: tuple[NumericField, ...] = (
    NumericField(
        "hypertension", 0, 1, integer=True, description="1 if the patient has hypertension."
    ),
    NumericField(
        "heart_disease", 0, 1, integer=True, description="1 if the patient has heart disease."
    ),
)

CATEGORICAL_FIELDS: tuple[CategoricalField, ...] = (
    CategoricalField("gender", ("Female", "Male", "Other")),
    CategoricalField("ever_married", ("No", "Yes")),
    CategoricalField(
        "work_type", ("Govt_job", "Never_worked", "Private", "Self-employed", "children")
    ),
    CategoricalField("Residence_type", ("Rural", "Urban")),
    CategoricalField("smoking_status", ("Unknown", "formerly smoked", "never smoked", "smokes")),
)

NUMERIC_FEATURES: tuple[str, ...] = tuple(f.name for f in NUMERIC_FIELDS)
BINARY_FEATURES: tuple[str, ...] = tuple(f.name for f in BINARY_FIELDS)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in CATEGORICAL_FIELDS)
# The model's input columns, in the order the raw file has them.
FEATURES: tuple[str, ...] = (
    "gender",
    "age",
    "hypertension",
    "heart_disease",
    "ever_married",
    "work_type",
    "Residence_type",
    "avg_glucose_level",
    "bmi",
    "smoking_status",
)
RAW_COLUMNS: tuple[str, ...] = (ID, *FEATURES, TARGET)
# Columns a cohort file must have (no label: cohorts arrive unlabelled).
REQUIRED_COLUMNS: tuple[str, ...] = (ID, *FEATURES)
# Text that means "missing" in the files we receive (Kaggle writes N/A for a missing bmi).
MISSING_MARKERS: frozenset[str] = frozenset(
    {"", "N/A", "NA", "n/a", "na", "NaN", "nan", "null", "NULL", "None"}
)

_ALL_FIELDS: tuple[NumericField | CategoricalField, ...] = (
    *NUMERIC_FIELDS,
    *BINARY_FIELDS,
    *CATEGORICAL_FIELDS,
)
FIELDS_BY_NAME: dict[str, NumericField | CategoricalField] = {f.name: f for f in _ALL_FIELDS}

assert set(FEATURES) == set(NUMERIC_FEATURES) | set(BINARY_FEATURES) | set(CATEGORICAL_FEATURES)
