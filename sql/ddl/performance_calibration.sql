-- Calibration of a labelled cohort day, one row per day and model version that scored it (the
-- sibling of performance_metrics; same keys).
CREATE TABLE IF NOT EXISTS performance_calibration (
    cohort_date             DATE        NOT NULL,  -- the daily partition (UTC)
    model_name              VARCHAR     NOT NULL,
    model_version           VARCHAR     NOT NULL,
    n_labelled              BIGINT      NOT NULL,
    n_positive              BIGINT      NOT NULL,
    oe_ratio                DOUBLE,                -- observed / expected strokes
    mean_difference         DOUBLE      NOT NULL,  -- mean predicted - observed rate
    calibration_intercept   DOUBLE,                -- 0 is ideal (NULL with one class)
    calibration_slope       DOUBLE,                -- 1 is ideal (NULL with one class)
    ece                     DOUBLE      NOT NULL,  -- expected calibration error, quantile bins
    brier                   DOUBLE      NOT NULL,
    log_loss                DOUBLE      NOT NULL,
    computed_at             TIMESTAMPTZ NOT NULL
);
