-- High-risk patients of one cohort day, most at risk first.
-- The day defaults to the latest scored day; choose another one with a variable:
--   .venv/bin/stroke sql sql/queries/high_risk_patients.sql --param cohort_date=2026-01-05
SELECT
    patient_id,
    cohort_date,
    stroke_probability,
    model_name,
    model_version
FROM scores
WHERE risk_tier = 'high'
  AND cohort_date = coalesce(
        getvariable('cohort_date')::DATE,
        (SELECT max(cohort_date) FROM scores)
      )
ORDER BY stroke_probability DESC, patient_id;
