-- The online API per UTC day: traffic, errors, latency and what it predicted (view inference_log).
SELECT
    date,
    count(*)                                                   AS requests,
    round(avg((status_code >= 400)::INTEGER), 4)               AS error_rate,
    round(quantile_cont(latency_ms, 0.50), 2)                  AS latency_p50_ms,
    round(quantile_cont(latency_ms, 0.99), 2)                  AS latency_p99_ms,
    sum(n_patients)                                            AS patients_scored,
    round(sum(mean_probability * n_patients) / nullif(sum(n_patients), 0), 4) AS mean_probability,
    sum(tier_high)                                             AS high_risk_patients,
    string_agg(DISTINCT model_version, ',')                    AS model_versions
FROM inference_log
GROUP BY date
ORDER BY date DESC;
