-- Every input row that could not be used, with the reason: nothing is dropped silently.
-- Rows of one (source, cohort_date) are replaced together when that input is processed again.
CREATE TABLE IF NOT EXISTS quarantine (
    source          VARCHAR     NOT NULL,  -- pipeline stage or input that rejected the row
    cohort_date     DATE,                  -- the daily partition; NULL for non-daily inputs
    row_number      BIGINT      NOT NULL,  -- 1-based data-row number in the input (header excluded)
    patient_id      VARCHAR,               -- the row's id when it had one
    reason          VARCHAR     NOT NULL,  -- every failed check, separated by '; '
    record          VARCHAR     NOT NULL,  -- the raw row as JSON text (query with record::JSON)
    quarantined_at  TIMESTAMPTZ NOT NULL
);
