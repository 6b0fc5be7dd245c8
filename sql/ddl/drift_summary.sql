-- One row per cohort day: the verdict of the day's drift check (details in drift_metrics).
CREATE TABLE IF NOT EXISTS drift_summary (
    cohort_date             DATE        NOT NULL,  -- the daily partition (UTC)
    is_drift                BOOLEAN     NOT NULL,  -- any test drifted (significant and above its floor)
    feature_drift           BOOLEAN     NOT NULL,  -- a model input's distribution drifted
    missingness_drift       BOOLEAN     NOT NULL,  -- a missing-value rate drifted
    prediction_drift        BOOLEAN     NOT NULL,  -- stroke_probability or the risk-tier mix drifted
    n_tests                 INTEGER     NOT NULL,
    n_drifted               INTEGER     NOT NULL,
    share_drifted           DOUBLE      NOT NULL,  -- n_drifted / n_tests
    drifted_features        VARCHAR     NOT NULL,  -- comma-separated feature names ('' when none)
    n_cohort                BIGINT      NOT NULL,  -- valid cohort rows checked
    backend                 VARCHAR     NOT NULL,
    correction              VARCHAR     NOT NULL,  -- bonferroni | fdr
    alpha                   DOUBLE      NOT NULL,  -- family-wise significance level
    reference_model_version VARCHAR     NOT NULL,
    run_id                  VARCHAR,               -- Dagster run that computed the day (NULL from the CLI)
    computed_at             TIMESTAMPTZ NOT NULL
);
