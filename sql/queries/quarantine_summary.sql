-- Rejected rows per source, cohort day and reason (a row failing several checks counts once per
-- reason), with one example row number to look at.
--   .venv/bin/stroke sql sql/queries/quarantine_summary.sql
WITH reasons AS (
    SELECT source, cohort_date, row_number, unnest(string_split(reason, '; ')) AS reason
    FROM quarantine
)
SELECT
    source,
    cohort_date,
    reason,
    count(*)        AS rows,
    min(row_number) AS first_row_number
FROM reasons
GROUP BY source, cohort_date, reason
ORDER BY cohort_date NULLS LAST, source, rows DESC, reason;
