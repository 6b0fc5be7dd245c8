-- One row per scored patient per cohort day: the current slice of score_history (the scores the
-- clinicians were shown last). (cohort_date, patient_id) is unique: a day has one current slice.
CREATE OR REPLACE VIEW scores AS
SELECT patient_id, cohort_date, stroke_probability, risk_tier, model_name, model_version, scored_at
FROM score_history
WHERE is_current;
