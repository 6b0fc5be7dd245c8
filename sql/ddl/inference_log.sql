-- One row per request to the online API (stroke serve), read live from the Parquet segments the
-- service appends under {stroke_home}/telemetry/date=YYYY-MM-DD/ (the service never opens this
-- database, so it never competes with the pipeline for DuckDB's single writer).
-- `allow_empty` keeps the view valid before the first segment exists; the typed empty SELECT
-- fixes the column names and types for that case (its `empty` helper column is excluded).
-- `date` is the hive partition (UTC day of `ts`); `union_by_name` tolerates added columns.
CREATE OR REPLACE VIEW inference_log AS
SELECT * EXCLUDE (empty)
FROM (
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
        NULL::DATE          AS date
    WHERE false
    UNION ALL BY NAME
    SELECT *
    FROM read_parquet(
        '{stroke_home}/telemetry/**/*.parquet',
        hive_partitioning = true,
        union_by_name = true,
        allow_empty = true
    )
);
