-- Latest score of every patient: the most recent cohort day, then the most recent scoring run.
--   .venv/bin/stroke sql sql/queries/latest_score_per_patient.sql
SELECT
    patient_id,
    cohort_date,
    stroke_probability,
    risk_tier,
    model_name,
    model_version,
    scored_at
FROM scores
QUALIFY row_number() OVER (
    PARTITION BY patient_id ORDER BY cohort_date DESC, scored_at DESC
) = 1
ORDER BY patient_id;
