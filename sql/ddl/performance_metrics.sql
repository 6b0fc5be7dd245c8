-- Realized performance of a cohort day once its outcome labels arrive (STROKE_HOME/labels/D.csv):
-- one row per day and model version that scored it. Read it next to drift_summary.
CREATE TABLE IF NOT EXISTS performance_metrics (
    cohort_date     DATE        NOT NULL,  -- the daily partition (UTC)
    model_name      VARCHAR     NOT NULL,
    model_version   VARCHAR     NOT NULL,  -- version that produced the scores
    n_scored        BIGINT      NOT NULL,  -- scored patients of the day
    n_labelled      BIGINT      NOT NULL,  -- of which a label arrived
    n_positive      BIGINT      NOT NULL,  -- labelled strokes
    roc_auc         DOUBLE,                -- NULL when the labels hold a single class
    brier           DOUBLE,                -- mean squared error of stroke_probability
    mean_probability DOUBLE,               -- mean predicted probability of the labelled patients
    observed_rate   DOUBLE,                -- n_positive / n_labelled
    computed_at     TIMESTAMPTZ NOT NULL
);
