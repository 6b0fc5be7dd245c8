-- Alert burden per cohort day and scoring version: tier shares, alerts per 100 patients (an
-- alert: a patient in alert_from_tier or above, high by default) and, once the day's labels
-- arrived, PPV, sensitivity and number needed to evaluate (NNE = 1 / PPV) when flagging at or
-- above elevated and at or above high (NULL before); feedback records, overrides, and the share
-- of the day's alerts overridden, as of the day's last computation. Optional variable `since`.
--   .venv/bin/stroke sql sql/queries/alert_burden.sql --param since=2026-01-01
SELECT
    cohort_date,
    model_version,
    n_patients                          AS patients,
    round(share_low, 4)                 AS low_share,
    round(share_elevated, 4)            AS elevated_share,
    round(share_high, 4)                AS high_share,
    alert_from_tier,
    n_alerts                            AS alerts,
    round(alerts_per_100, 2)            AS alerts_per_100,
    n_labelled                          AS labelled,
    n_positive                          AS strokes,
    round(ppv_elevated, 4)              AS ppv_elevated,
    round(sensitivity_elevated, 4)      AS sensitivity_elevated,
    round(nne_elevated, 2)              AS nne_elevated,
    round(ppv_high, 4)                  AS ppv_high,
    round(sensitivity_high, 4)          AS sensitivity_high,
    round(nne_high, 2)                  AS nne_high,
    n_feedback                          AS feedback,
    n_overridden                        AS overrides,
    alerts_overridden,
    round(override_rate, 4)             AS override_rate
FROM alert_burden
WHERE cohort_date >= coalesce(getvariable('since')::DATE, DATE '0001-01-01')
ORDER BY cohort_date, model_version;
