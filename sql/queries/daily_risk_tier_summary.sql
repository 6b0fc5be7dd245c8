-- Patients per risk tier for every cohort day, with the share at high risk and the model used.
--   .venv/bin/stroke sql sql/queries/daily_risk_tier_summary.sql
SELECT
    cohort_date,
    count(*)                                            AS patients,
    count(*) FILTER (WHERE risk_tier = 'low')           AS low,
    count(*) FILTER (WHERE risk_tier = 'elevated')      AS elevated,
    count(*) FILTER (WHERE risk_tier = 'high')          AS high,
    round(avg((risk_tier = 'high')::INTEGER), 4)        AS high_share,
    round(avg(stroke_probability), 4)                   AS mean_probability,
    string_agg(DISTINCT model_name || ' v' || model_version, ', ') AS models
FROM scores
GROUP BY cohort_date
ORDER BY cohort_date;
