"""Request and response bodies, generated from :mod:`stroke_dagster.schema`.

The patient model is built field by field from the schema's ranges and categories (nothing is
repeated here), so the API accepts exactly what batch validation accepts: numbers within range,
0/1 flags, categories matched case-insensitively (answered in the schema's spelling), a nullable
``bmi`` (``null`` or one of the schema's missing markers) and an optional ``id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from stroke_dagster.risk import TIERS
from stroke_dagster.schema import (
    BINARY_FIELDS,
    CATEGORICAL_FIELDS,
    FEATURES,
    ID,
    MISSING_MARKERS,
    NUMERIC_FIELDS,
    CategoricalField,
    NumericField,
)

# Shown in /docs; a made-up patient (a test checks that it validates against the schema).
EXAMPLE_PATIENT: dict[str, Any] = {
    "id": "patient-0001",
    "gender": "Female",
    "age": 58.0,
    "hypertension": 1,
    "heart_disease": 0,
    "ever_married": "Yes",
    "work_type": "Private",
    "Residence_type": "Urban",
    "avg_glucose_level": 105.3,
    "bmi": 29.4,
    "smoking_status": "never smoked",
}
EXAMPLE_PATIENT_NO_BMI: dict[str, Any] = {
    **EXAMPLE_PATIENT,
    "id": "patient-0002",
    "age": 71.0,
    "bmi": None,
    "hypertension": 0,
}


def _missing_to_none(value: Any) -> Any:
    if isinstance(value, str) and value.strip() in MISSING_MARKERS:
        return None
    return value


def _canonical(field: CategoricalField) -> BeforeValidator:
    lookup = {c.lower(): c for c in field.categories}

    def canonical(value: Any) -> Any:
        if isinstance(value, str):
            return lookup.get(value.strip().lower(), value)
        return value

    return BeforeValidator(canonical)


def _id_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # rejected by the str type below
    if isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip() in MISSING_MARKERS:
        return None
    return value


def _numeric(field: NumericField) -> tuple[Any, Any]:
    number = Annotated[float, Field(ge=field.low, le=field.high, allow_inf_nan=False)]
    described = Field(description=field.description)
    if field.nullable:
        return Annotated[number | None, BeforeValidator(_missing_to_none), described], None
    return Annotated[number, described], ...


def _binary(field: NumericField) -> tuple[Any, Any]:
    return Annotated[
        int, Field(ge=int(field.low), le=int(field.high), description=field.description)
    ], ...


def _categorical(field: CategoricalField) -> tuple[Any, Any]:
    allowed = Literal[field.categories]  # type: ignore[valid-type]
    description = field.description or f"One of: {', '.join(field.categories)}."
    return Annotated[allowed, _canonical(field), Field(description=description)], ...


def _patient_fields() -> dict[str, tuple[Any, Any]]:
    fields: dict[str, tuple[Any, Any]] = {}
    fields.update({f.name: _numeric(f) for f in NUMERIC_FIELDS})
    fields.update({f.name: _binary(f) for f in BINARY_FIELDS})
    fields.update({f.name: _categorical(f) for f in CATEGORICAL_FIELDS})
    ordered = {name: fields[name] for name in FEATURES}
    id_type = Annotated[
        str | None,
        BeforeValidator(_id_text),
        Field(max_length=128, description="Your identifier for the patient (echoed back)."),
    ]
    return {ID: (id_type, None), **ordered}


Patient: type[BaseModel] = create_model(
    "Patient",
    __config__=ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI]},
    ),
    __doc__="One patient in the raw schema (``bmi`` may be null, ``id`` is optional).",
    **_patient_fields(),
)


class Prediction(BaseModel):
    """The model's answer for one patient."""

    id: str | None = Field(None, description="The request's id, when one was given.")
    stroke_probability: float = Field(ge=0.0, le=1.0)
    risk_tier: Literal[TIERS]  # type: ignore[valid-type]
    model_name: str
    model_version: str

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "patient-0001",
                    "stroke_probability": 0.0734,
                    "risk_tier": "elevated",
                    "model_name": "StrokeRF",
                    "model_version": "3",
                }
            ]
        }
    )


class BatchPrediction(BaseModel):
    """Answers in request order."""

    model_name: str
    model_version: str
    predictions: list[Prediction]


class ModelStatus(BaseModel):
    """What ``/ready`` and ``/admin/reload`` report."""

    ready: bool
    model_name: str | None = None
    model_version: str | None = None
    loaded_at: str | None = None
    last_check: str | None = None
    last_error: str | None = None
    changed: bool | None = Field(
        None, description="/admin/reload: whether a new version was swapped in."
    )
