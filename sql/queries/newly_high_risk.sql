-- Patients at high risk on a cohort day whose previous score (their last earlier day) was not
-- high: who became high-risk since they were last scored. Patients scored for the first time are
-- not listed. The day defaults to the latest scored day; choose another one with a variable:
--   .venv/bin/stroke sql sql/queries/newly_high_risk.sql --param cohort_date=2026-01-05
WITH day AS (
    SELECT coalesce(getvariable('cohort_date')::DATE, (SELECT max(cohort_date) FROM scores)) AS d
),
today AS (
    SELECT s.*
    FROM scores AS s, day
    WHERE s.cohort_date = day.d AND s.risk_tier = 'high'
),
previous AS (
    SELECT s.patient_id, s.cohort_date, s.risk_tier, s.stroke_probability
    FROM scores AS s, day
    WHERE s.cohort_date < day.d
      AND s.patient_id IN (SELECT patient_id FROM today)
    QUALIFY row_number() OVER (
        PARTITION BY s.patient_id ORDER BY s.cohort_date DESC, s.scored_at DESC
    ) = 1
)
SELECT
    t.patient_id,
    t.cohort_date,
    t.stroke_probability,
    p.cohort_date           AS previous_date,
    p.risk_tier             AS previous_tier,
    p.stroke_probability    AS previous_probability,
    t.model_version
FROM today AS t
JOIN previous AS p USING (patient_id)
WHERE p.risk_tier <> 'high'
ORDER BY t.stroke_probability DESC, t.patient_id;
