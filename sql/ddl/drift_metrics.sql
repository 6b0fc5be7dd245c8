-- One row per cohort day and tested feature: is today's cohort still the champion's population?
-- A day is replaced as a whole (one transaction) when its drift check runs again.
-- is_drift = significant (p_value < threshold, the multiple-testing-corrected level) AND
-- effect_size >= effect_floor: at 500,000 patients every p-value is tiny, the floor keeps the
-- alarm for changes that matter; both numbers are kept so either can be read on its own.
CREATE TABLE IF NOT EXISTS drift_metrics (
    cohort_date             DATE        NOT NULL,  -- the daily partition (UTC)
    feature                 VARCHAR     NOT NULL,  -- model input, <input>_missing_rate, stroke_probability or risk_tier
    kind                    VARCHAR     NOT NULL CHECK (kind IN ('feature', 'missingness', 'prediction')),
    test                    VARCHAR     NOT NULL,  -- ks+mwu (numeric) or chi2 (categorical, missing rate)
    statistic               DOUBLE,                -- KS D or chi-squared statistic
    p_value                 DOUBLE,                -- NULL when the test could not run (no observed values)
    threshold               DOUBLE      NOT NULL,  -- corrected significance level (Bonferroni or BH)
    effect_metric           VARCHAR     NOT NULL,  -- wasserstein | psi | abs_rate_diff
    effect_size             DOUBLE,
    effect_floor            DOUBLE      NOT NULL,
    psi                     DOUBLE,                -- population stability index (every row)
    wasserstein             DOUBLE,                -- Wasserstein-1 in reference sd (numeric rows)
    significant             BOOLEAN     NOT NULL,
    is_drift                BOOLEAN     NOT NULL,
    n_reference             BIGINT      NOT NULL,
    n_cohort                BIGINT      NOT NULL,
    backend                 VARCHAR     NOT NULL,  -- alibi | scipy
    reference_model_version VARCHAR     NOT NULL,  -- StrokeRF version whose training data is the reference
    computed_at             TIMESTAMPTZ NOT NULL
);
