-- One row per scored patient per cohort day. A day is always replaced as a whole, in one
-- transaction, so (cohort_date, patient_id) is unique without an index.
CREATE TABLE IF NOT EXISTS scores (
    patient_id          VARCHAR     NOT NULL,  -- the input file's `id`
    cohort_date         DATE        NOT NULL,  -- the daily partition (UTC)
    stroke_probability  DOUBLE      NOT NULL CHECK (stroke_probability BETWEEN 0 AND 1),
    risk_tier           VARCHAR     NOT NULL CHECK (risk_tier IN ('low', 'elevated', 'high')),
    model_name          VARCHAR     NOT NULL,  -- registered model, e.g. StrokeRF
    model_version       VARCHAR     NOT NULL,  -- registry version that produced the score
    scored_at           TIMESTAMPTZ NOT NULL   -- when the day was scored
);
