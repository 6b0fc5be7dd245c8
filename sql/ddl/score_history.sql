-- Every slice of scores the platform produced: one row per patient, cohort day and slice. A slice
-- is one scoring of a day's input by one model version (slice_id = version + input hash):
-- re-running it replaces it; rescoring under another model (or a corrected input file) adds a
-- slice and keeps the old one. Exactly one slice per day is current (is_current): the one the
-- `scores` view shows. Non-current slices are kept for warehouse.history_days (default 183).
-- Versions in shadow (silent scoring: the latest challenger and any version with the alias
-- `shadow`) score the same days as slices of role 'shadow', never current, never in `scores`.
CREATE TABLE IF NOT EXISTS score_history (
    patient_id          VARCHAR     NOT NULL,  -- the input file's `id`
    cohort_date         DATE        NOT NULL,  -- the daily partition (UTC)
    stroke_probability  DOUBLE      NOT NULL CHECK (stroke_probability BETWEEN 0 AND 1),
    risk_tier           VARCHAR     NOT NULL CHECK (risk_tier IN ('low', 'elevated', 'high')),
    model_name          VARCHAR     NOT NULL,  -- registered model, e.g. StrokeRF
    model_version       VARCHAR     NOT NULL,  -- registry version that produced the score
    scored_at           TIMESTAMPTZ NOT NULL,  -- when the slice was scored
    is_current          BOOLEAN     NOT NULL,  -- the slice shown in `scores`
    slice_id            VARCHAR     NOT NULL,  -- v<model_version>:<input_sha256 prefix>
    input_file          VARCHAR,               -- the input file as it arrived (incoming/<day>.csv)
    input_sha256        VARCHAR,               -- sha256 of that file's bytes
    run_id              VARCHAR,               -- Dagster run that wrote the slice (NULL from the CLI)
    write_id            VARCHAR,               -- the warehouse write (also in the commit metadata)
    role                VARCHAR CHECK (role IN ('champion', 'shadow')), -- who scored it (NULL: champion)
    -- the audit trail (stroke_dagster/audit/records.py; NULL on slices scored without it). What is the
    -- same for the whole slice (model run id, code version, thresholds, requester) is kept once,
    -- in the slice's chained record in prediction_audit: the view score_audit joins them.
    features_sha256     BLOB,                  -- sha256 (32 bytes; lower(hex(...)) is the API's text) of the patient's canonical input features
    row_in_slice        BIGINT,                -- the row's position in the slice (0-based)
    row_hash            BIGINT                 -- locates an edited row (see audit.py)
);
