-- Share of scored patients at high risk per ISO week (weeks start on Monday), with the change
-- from the previous week in percentage points. Optional variable `since` (a date): weeks from
-- that date on (default: every week).
--   .venv/bin/stroke sql sql/queries/high_risk_share_week_on_week.sql --param since=2026-01-01
WITH weekly AS (
    SELECT
        date_trunc('week', cohort_date)::DATE           AS week,
        count(DISTINCT cohort_date)                     AS days,
        count(*)                                        AS patients,
        count(*) FILTER (WHERE risk_tier = 'high')      AS high
    FROM scores
    WHERE cohort_date >= coalesce(getvariable('since')::DATE, DATE '0001-01-01')
    GROUP BY 1
)
SELECT
    week,
    days,
    patients,
    high,
    round(high / patients, 4)                                             AS high_share,
    round(lag(high / patients) OVER (ORDER BY week), 4)                   AS previous_share,
    round(100 * (high / patients - lag(high / patients) OVER (ORDER BY week)), 2)
                                                                          AS change_pp
FROM weekly
ORDER BY week;
