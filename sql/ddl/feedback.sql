-- A clinician's action on a flagged patient, from POST /feedback or a CSV drop
-- (STROKE_HOME/feedback/<day>.csv): accepted (acted on the flag) or overridden (did not), with a
-- reason code. Linked to the prediction it answers: the API request's audit record
-- (request_id) or the batch score (cohort_date, patient_id, model_version).
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id     VARCHAR     NOT NULL,  -- unique per feedback record (re-sent ids replace)
    cohort_date     DATE        NOT NULL,  -- the daily partition: the day of the prediction
    patient_id      VARCHAR     NOT NULL,
    request_id      VARCHAR,               -- the API prediction answered (NULL: a batch score)
    model_version   VARCHAR,               -- the version whose flag was acted on
    action          VARCHAR     NOT NULL CHECK (action IN ('accepted', 'overridden')),
    reason_code     VARCHAR,               -- why (required when overridden)
    clinician_id    VARCHAR,               -- who acted (a pseudonymous id, never a name)
    requester       VARCHAR,               -- the API key id or the CSV file that sent it
    recorded_at     TIMESTAMPTZ NOT NULL,  -- when the platform received it
    source          VARCHAR     NOT NULL,  -- 'api' or 'csv:<file name>'
    row_in_request  INTEGER                -- the patient's position in the API request
);
