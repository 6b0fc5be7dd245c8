-- Every test of the latest checked day: p-value against its corrected threshold, effect size
-- against its floor. A row alarms only when both are past their line.
SELECT
    cohort_date,
    feature,
    kind,
    test,
    p_value,
    threshold,
    effect_metric,
    round(effect_size, 4) AS effect_size,
    effect_floor,
    is_drift
FROM drift_metrics
WHERE cohort_date = (SELECT max(cohort_date) FROM drift_metrics)
ORDER BY is_drift DESC, p_value;
