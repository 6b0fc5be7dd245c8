-- Rejected rows of the daily cohorts per day and reason (a row failing several checks counts
-- once per reason), with each reason's share of the day's rejected rows. Non-daily inputs
-- (training files) are in quarantine_summary.sql. Optional variable `since` (a date).
--   .venv/bin/stroke sql sql/queries/quarantine_reasons_by_day.sql --param since=2026-01-01
WITH rows AS (
    SELECT cohort_date, source, row_number, reason
    FROM quarantine
    WHERE cohort_date IS NOT NULL
      AND cohort_date >= coalesce(getvariable('since')::DATE, DATE '0001-01-01')
),
reasons AS (
    SELECT cohort_date, unnest(string_split(reason, '; ')) AS reason
    FROM rows
),
days AS (
    SELECT cohort_date, count(*) AS rejected_rows FROM rows GROUP BY cohort_date
)
SELECT
    r.cohort_date,
    r.reason,
    count(*)                                        AS rows,
    d.rejected_rows,
    round(count(*) / d.rejected_rows, 4)            AS share_of_rejected
FROM reasons AS r
JOIN days AS d USING (cohort_date)
GROUP BY r.cohort_date, r.reason, d.rejected_rows
ORDER BY r.cohort_date, rows DESC, r.reason;
