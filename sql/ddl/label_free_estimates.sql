-- Performance expected from the scored probabilities alone (before outcomes arrive), one row per
-- cohort day and scoring model version; read next to drift_summary, and against
-- performance_metrics once labels come (queries/label_free_vs_realized.sql).
CREATE TABLE IF NOT EXISTS label_free_estimates (
    cohort_date             DATE        NOT NULL,  -- the daily partition (UTC)
    model_name              VARCHAR     NOT NULL,
    model_version           VARCHAR     NOT NULL,
    n_scored                BIGINT      NOT NULL,
    expected_roc_auc        DOUBLE,                -- NULL when undefined (all probabilities 0 or 1)
    expected_observed_rate  DOUBLE      NOT NULL,  -- mean stroke_probability
    computed_at             TIMESTAMPTZ NOT NULL
);
