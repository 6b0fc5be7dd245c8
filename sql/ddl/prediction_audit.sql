-- The audit trail of predictions (see stroke_dagster/audit/records.py): one chained record per patient
-- the API scored (kind 'prediction') and one per batch score slice (kind 'slice', whose rows in
-- score_history carry the per-row hashes). Records are chained per day and writer (chain_id):
-- seq 0, 1, 2... each with the previous record's hash; `stroke audit verify` checks them.
-- No feature value is stored, only the sha256 of the canonical features. Days older than
-- audit.retention_days (default 183) are deleted by the warehouse maintenance.
CREATE TABLE IF NOT EXISTS prediction_audit (
    cohort_date         DATE        NOT NULL,  -- the daily partition: UTC day (API), cohort day (slice)
    chain_id            VARCHAR     NOT NULL,  -- api:<pid>:<random> per API worker start; 'batch'
    seq                 BIGINT      NOT NULL,  -- 0, 1, 2... within (cohort_date, chain_id)
    prev_hash           VARCHAR     NOT NULL,  -- record_hash of seq - 1 (a genesis hash for 0)
    record_hash         VARCHAR     NOT NULL,  -- sha256(prev_hash, canonical JSON of the rest)
    kind                VARCHAR     NOT NULL CHECK (kind IN ('prediction', 'slice')),
    ts                  TIMESTAMPTZ NOT NULL,  -- when the prediction (or the slice record) was made
    request_id          VARCHAR,               -- the API request; slice: the warehouse write id
    row_in_request      INTEGER,               -- the patient's position in the request
    patient_id          VARCHAR,               -- the id sent with the patient (NULL: none)
    model_name          VARCHAR     NOT NULL,
    model_version       VARCHAR     NOT NULL,
    model_run_id        VARCHAR,               -- the MLflow run that trained the version
    code_version        VARCHAR     NOT NULL,  -- package version (+g<git commit>)
    features_sha256     VARCHAR,               -- sha256 of the canonical input features
    stroke_probability  DOUBLE,
    risk_tier           VARCHAR,
    thresholds          VARCHAR     NOT NULL,  -- the risk thresholds in force, JSON
    requester           VARCHAR     NOT NULL,  -- key:<12 hex of the key's sha256>, anonymous, cli, dagster:<run>
    slice_id            VARCHAR,               -- slice: score_history.slice_id
    n_rows              BIGINT,                -- slice: rows in the slice
    digest              VARCHAR                -- slice: sha256 over its rows' digests in order
);
