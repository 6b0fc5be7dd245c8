-- One row per request to the online API (stroke serve), read live from the Parquet files the
-- service writes under {stroke_home}/telemetry/date=YYYY-MM-DD/: fresh segments (part-*.parquet,
-- one per flush) and, for past days, the newest compacted~<version>.parquet (each row keeps its
-- segment's name, so a segment still present beside its compacted day is not counted twice). The
-- service never opens this database. Empty placeholder files under date=NULL (written by the
-- warehouse) keep both globs matching before the first request; the typed empty SELECT fixes the
-- column names and types (its `empty` helper column is excluded). `date` is the hive partition
-- (UTC day of `ts`); `union_by_name` tolerates added columns.
CREATE OR REPLACE VIEW inference_log AS
WITH typed AS (
    SELECT
        NULL::BOOLEAN       AS empty,
        NULL::TIMESTAMPTZ   AS ts,               -- request arrival (UTC)
        NULL::VARCHAR       AS request_id,
        NULL::VARCHAR       AS method,
        NULL::VARCHAR       AS path,
        NULL::INTEGER       AS status_code,
        NULL::DOUBLE        AS latency_ms,       -- arrival to last byte of the answer
        NULL::INTEGER       AS n_patients,       -- patients scored (0 for failed requests)
        NULL::DOUBLE        AS mean_age,         -- numeric feature means of the request
        NULL::DOUBLE        AS mean_avg_glucose_level,
        NULL::DOUBLE        AS mean_bmi,
        NULL::DOUBLE        AS mean_probability, -- mean predicted stroke probability
        NULL::INTEGER       AS tier_low,         -- patients per risk tier
        NULL::INTEGER       AS tier_elevated,
        NULL::INTEGER       AS tier_high,
        NULL::VARCHAR       AS model_name,
        NULL::VARCHAR       AS model_version,
        NULL::INTEGER       AS worker_pid,
        NULL::VARCHAR       AS segment,          -- the flush file the row was written in
        NULL::DATE          AS date
    WHERE false
),
compacted AS (
    SELECT * EXCLUDE (empty, filename) FROM (
        SELECT *, NULL::VARCHAR AS filename FROM typed
        UNION ALL BY NAME
        SELECT * FROM read_parquet(
            '{stroke_home}/telemetry/*/compacted~*.parquet',
            hive_partitioning = true, hive_types = {'date': DATE},
            union_by_name = true, filename = true
        )
    )
    WHERE filename IN (  -- the newest compacted version of each day
        SELECT max(file) FROM glob('{stroke_home}/telemetry/*/compacted~*.parquet')
        GROUP BY parse_dirpath(file)
    )
),
fresh AS (
    SELECT * EXCLUDE (empty, filename, segment), parse_filename(filename) AS segment FROM (
        SELECT *, NULL::VARCHAR AS filename FROM typed
        UNION ALL BY NAME
        SELECT * FROM read_parquet(
            '{stroke_home}/telemetry/*/part-*.parquet',
            hive_partitioning = true, hive_types = {'date': DATE},
            union_by_name = true, filename = true
        )
    )
)
SELECT * EXCLUDE (segment) FROM compacted
UNION ALL BY NAME
SELECT * EXCLUDE (segment) FROM fresh AS f
WHERE NOT EXISTS (
    SELECT 1 FROM compacted AS c WHERE c.date = f.date AND c.segment = f.segment
);
