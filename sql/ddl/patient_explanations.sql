-- Why a patient of a day's `high` tier is high risk: one row per explained patient, cohort day and
-- feature, signed contributions to stroke_probability (base_value + SUM(contribution) equals it).
CREATE TABLE IF NOT EXISTS patient_explanations (
    cohort_date         DATE        NOT NULL,  -- the daily partition (UTC)
    patient_id          VARCHAR     NOT NULL,  -- the input file's `id`
    model_name          VARCHAR     NOT NULL,
    model_version       VARCHAR     NOT NULL,  -- version that scored and is explained
    stroke_probability  DOUBLE      NOT NULL,
    risk_tier           VARCHAR     NOT NULL,
    base_value          DOUBLE      NOT NULL,  -- the model's average prediction (same for all rows)
    rank                INTEGER     NOT NULL,  -- 1 = the largest |contribution| of the patient
    feature             VARCHAR     NOT NULL,  -- a patient-schema feature (one-hot levels summed)
    feature_value       VARCHAR,               -- the patient's value, as text (NULL when missing)
    contribution        DOUBLE      NOT NULL,  -- signed, in probability units
    method              VARCHAR     NOT NULL,  -- treeshap | path
    explained_at        TIMESTAMPTZ NOT NULL
);
