-- Drift verdict per day, newest first, with realized performance where labels have arrived.
SELECT
    d.cohort_date,
    d.is_drift,
    d.n_drifted,
    d.n_tests,
    round(d.share_drifted, 3) AS share_drifted,
    d.drifted_features,
    d.reference_model_version,
    p.roc_auc,
    p.brier,
    p.n_labelled
FROM drift_summary AS d
LEFT JOIN performance_metrics AS p
    ON p.cohort_date = d.cohort_date AND p.model_version = d.reference_model_version
ORDER BY d.cohort_date DESC;
