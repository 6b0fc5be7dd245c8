"""Request and response bodies, generated from :mod:`stroke_dagster.core.schema`.

The patient model is built field by field from the schema's ranges and categories (nothing is
repeated here). It is strict, so that the OpenAPI document describes exactly what is accepted:
JSON numbers within range (no numeric strings, booleans, NaN or Infinity), 0/1 integer flags,
categories spelled as the schema spells them, a ``bmi`` that may be ``null`` or one of the
schema's missing markers, and an optional ``id`` (text, or an integer, answered as text).

Every error body is ``{"error": "<one line>"}``; a 422 adds ``detail``, the list of problems,
each naming the field (and the row of a list body) but never repeating the submitted value.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from stroke_dagster.core.risk import TIERS
from stroke_dagster.core.schema import (
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
ID_MAX_LENGTH = 128
# Most patients one request may carry (a batch, or the rows of v2 tensors): bounds its cost.
MAX_ROWS = 5000
ID_INT_LIMIT = 2**63  # integer ids are accepted in the signed 64-bit range
NULLABLE_FEATURES = tuple(f.name for f in NUMERIC_FIELDS if f.nullable)
MissingMarker = Literal[tuple(sorted(MISSING_MARKERS))]  # type: ignore[valid-type]


def number_type(field: NumericField) -> Any:
    """A finite JSON number within the field's range (ints allowed, text and booleans not)."""
    return Annotated[float, Field(ge=field.low, le=field.high, allow_inf_nan=False, strict=True)]


def _integral(value: Any) -> Any:
    # JSON Schema counts 1.0 as an integer: so does the service (1.5, "1" and true are refused)
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def integer(**constraints: Any) -> Any:
    """A JSON integer (``1.0`` included, as in JSON Schema) within ``constraints``."""
    return Annotated[int, Field(strict=True, **constraints), BeforeValidator(_integral)]


def binary_type(field: NumericField) -> Any:
    """A JSON integer within the flag's range (0 or 1)."""
    return integer(ge=int(field.low), le=int(field.high))


def category_type(field: CategoricalField) -> Any:
    """One of the field's categories, spelled exactly as the schema spells it."""
    return Literal[field.categories]  # type: ignore[valid-type]


def feature_type(name: str) -> Any:
    """The accepted JSON value of one feature (``bmi``: also ``null`` or a missing marker)."""
    for field in NUMERIC_FIELDS:
        if field.name == name:
            number = number_type(field)
            return number | MissingMarker | None if field.nullable else number
    for field in BINARY_FIELDS:
        if field.name == name:
            return binary_type(field)
    for cat in CATEGORICAL_FIELDS:
        if cat.name == name:
            return category_type(cat)
    raise KeyError(name)


IdType = Annotated[
    Annotated[str, Field(max_length=ID_MAX_LENGTH, strict=True)]
    | integer(ge=-ID_INT_LIMIT, lt=ID_INT_LIMIT)
    | None,
    Field(description="Your identifier for the patient, answered back as text."),
]


def _description(name: str) -> str:
    field = next(
        f for f in (*NUMERIC_FIELDS, *BINARY_FIELDS, *CATEGORICAL_FIELDS) if f.name == name
    )
    if isinstance(field, CategoricalField):
        return field.description or f"One of: {', '.join(field.categories)}."
    if field.nullable:
        markers = ", ".join(f'"{m}"' for m in sorted(MISSING_MARKERS))
        return f"{field.description} Missing: null (or one of {markers})."
    return field.description


def _patient_fields() -> dict[str, tuple[Any, Any]]:
    fields: dict[str, tuple[Any, Any]] = {ID: (IdType, None)}
    for name in FEATURES:
        default = None if name in NULLABLE_FEATURES else ...
        described = Field(default, description=_description(name))
        fields[name] = (feature_type(name), described)
    return fields


class PatientBase(BaseModel):
    """Shared configuration of the patient bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    def record(self) -> dict[str, Any]:
        """The patient as a plain dict in the raw schema (``id`` as text, missing as None)."""
        record = {name: getattr(self, name) for name in (ID, *FEATURES)}
        for name in NULLABLE_FEATURES:
            if isinstance(record[name], str):  # a missing marker
                record[name] = None
        if record[ID] is not None:
            record[ID] = str(record[ID])
        return record


Patient: type[PatientBase] = create_model(
    "Patient",
    __base__=PatientBase,
    __doc__="One patient in the raw schema (``bmi`` may be null, ``id`` is optional).",
    **_patient_fields(),
)
Patient.model_config["json_schema_extra"] = {"examples": [EXAMPLE_PATIENT, EXAMPLE_PATIENT_NO_BMI]}
Patient.model_rebuild(force=True)


class PredictRequest(Patient):  # type: ignore[misc, valid-type]
    """``POST /predict``: one patient (request options go here beside the patient's fields)."""

    explain: bool = Field(
        False,
        strict=True,
        description="Also answer why: every feature's signed contribution to the probability "
        "(exact TreeSHAP), largest first; base_value plus all contributions equals "
        "stroke_probability.",
    )


class Contribution(BaseModel):
    """One feature's signed share of the predicted probability."""

    feature: str
    value: str | float | int | None = Field(description="The patient's value (null: missing).")
    contribution: float = Field(description="Probability units; positive raises the risk.")


class Explanation(BaseModel):
    """Why the model gave this probability (``POST /predict`` with ``"explain": true``)."""

    base_value: float = Field(description="The model's average prediction over its training data.")
    method: Literal["treeshap"]
    contributions: list[Contribution] = Field(description="Every feature, largest |share| first.")


class Prediction(BaseModel):
    """The model's answer for one patient."""

    id: str | None = Field(None, description="The request's id, when one was given.")
    stroke_probability: float = Field(ge=0.0, le=1.0)
    risk_tier: Literal[TIERS]  # type: ignore[valid-type]
    model_name: str
    model_version: str
    explanation: Explanation | None = Field(
        None, description='Only when the request asked for it ("explain": true).'
    )

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


class Health(BaseModel):
    status: Literal["ok"]


class Problem(BaseModel):
    """One rejected field; the submitted value is never repeated."""

    field: str = Field(description="The field (or 'body' for the body as a whole).")
    row: int | None = Field(description="Position in a list body, else null.")
    msg: str
    type: str = Field(description="The kind of problem, e.g. 'less_than_equal', 'missing'.")


class Error(BaseModel):
    """Every error answer: one line saying what is wrong (values are never echoed)."""

    error: str


class ValidationProblem(Error):
    """422: the body is JSON but not a valid request; ``detail`` lists every problem."""

    detail: list[Problem]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "age: Input should be less than or equal to 120",
                    "detail": [
                        {
                            "field": "age",
                            "row": None,
                            "msg": "Input should be less than or equal to 120",
                            "type": "less_than_equal",
                        }
                    ],
                }
            ]
        }
    )


# -- feedback ---------------------------------------------------------------------------------

ShortText = Annotated[str, Field(min_length=1, max_length=64, strict=True)]


class RequestRef(BaseModel):
    """An API prediction: the request's ``X-Request-Id`` and, for a list, which patient."""

    model_config = ConfigDict(extra="forbid")

    request_id: ShortText = Field(description="The X-Request-Id header of the scoring answer.")
    patient_id: Annotated[str, Field(max_length=ID_MAX_LENGTH, strict=True)] | None = Field(
        None, description="The patient's id as sent (needed when the request had several)."
    )
    row_in_request: integer(ge=0, lt=MAX_ROWS) | None = Field(  # type: ignore[valid-type]
        None, description="Or the patient's position in the request (0-based)."
    )


class ScoreRef(BaseModel):
    """A batch score: the cohort day and patient (model version: the day's current slice's)."""

    model_config = ConfigDict(extra="forbid")

    cohort_date: dt.date
    patient_id: Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, strict=True)]
    model_version: ShortText | None = None


EXAMPLE_FEEDBACK: dict[str, Any] = {
    "prediction": {"request_id": "3f2b8c1e9a7d4f60b1c2d3e4f5a6b7c8"},
    "action": "overridden",
    "reason_code": "recent_imaging_clear",
    "clinician_id": "clin-0042",
}


class _FeedbackBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction: RequestRef | ScoreRef = Field(description="The prediction the action answers.")
    clinician_id: ShortText | None = Field(None, description="A pseudonymous id, never a name.")
    feedback_id: ShortText | None = Field(
        None, description="Your id for this record: sending it again replaces the record."
    )


class AcceptedFeedback(_FeedbackBase):
    """The clinician acted on the flag."""

    action: Literal["accepted"]
    reason_code: ShortText | None = None


class OverriddenFeedback(_FeedbackBase):
    """The clinician did not act on the flag: the reason code is required."""

    action: Literal["overridden"]
    reason_code: ShortText

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_FEEDBACK]})


FeedbackRequest = Annotated[AcceptedFeedback | OverriddenFeedback, Field(discriminator="action")]


class FeedbackRecorded(BaseModel):
    """The feedback as kept, linked to its prediction."""

    feedback_id: str
    cohort_date: str = Field(description="The day of the prediction (YYYY-MM-DD).")
    patient_id: str
    request_id: str | None
    model_version: str | None
    action: Literal["accepted", "overridden"]
    reason_code: str | None
    recorded_at: str
