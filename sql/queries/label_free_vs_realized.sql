-- Label-free performance estimates next to the day's drift verdict and, once labels arrived, the
-- realized figures (NULL until then).
SELECT
    f.cohort_date,
    f.model_version,
    f.n_scored,
    round(f.expected_roc_auc, 4)        AS expected_roc_auc,
    round(p.roc_auc, 4)                 AS realized_roc_auc,
    round(p.roc_auc - f.expected_roc_auc, 4) AS auc_error,
    round(f.expected_observed_rate, 4)  AS expected_rate,
    round(p.observed_rate, 4)           AS realized_rate,
    d.is_drift,
    d.drifted_features
FROM label_free_estimates AS f
LEFT JOIN performance_metrics AS p USING (cohort_date, model_name, model_version)
LEFT JOIN drift_summary AS d USING (cohort_date)
ORDER BY f.cohort_date DESC, f.model_version;
