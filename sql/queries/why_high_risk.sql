-- Why is this patient high risk? The features that raised (and lowered) a patient's predicted
-- stroke risk on their latest explained day, largest first.
-- Parameters: $patient_id (the cohort file's id); $top (how many features, e.g. 5).
WITH latest AS (
    SELECT max(cohort_date) AS cohort_date
    FROM patient_explanations
    WHERE patient_id = $patient_id
)
SELECT
    e.cohort_date,
    e.patient_id,
    e.model_version,
    round(e.stroke_probability, 4)                       AS stroke_probability,
    e.risk_tier,
    e.rank,
    e.feature,
    e.feature_value,
    round(e.contribution, 4)                             AS contribution,
    CASE WHEN e.contribution > 0 THEN 'raises risk' ELSE 'lowers risk' END AS direction,
    round(e.base_value, 4)                               AS average_risk
FROM patient_explanations AS e
JOIN latest USING (cohort_date)
WHERE e.patient_id = $patient_id
  AND e.rank <= $top
ORDER BY e.rank;
