-- Alert burden of a cohort day, one row per day and model version of its `scores` (what the
-- clinicians were shown). An alert is a patient in an alerting tier: alert_from_tier or above
-- (setting alert_burden.alert_from_tier, default high). Tier figures are written once the day is
-- scored; the labelled figures once labels/<day>.csv arrives (NULL before). A flag "at
-- elevated" is a patient at or above elevated; PPV = tp / flagged, sensitivity = tp /
-- n_positive, NNE = 1 / PPV, over the labelled patients (NULL when the denominator is 0).
-- Feedback figures are those recorded when the row was computed (latest record per feedback_id,
-- of the row's model version or naming none). Read it with sql/queries/alert_burden.sql.
CREATE TABLE IF NOT EXISTS alert_burden (
    cohort_date             DATE        NOT NULL,  -- the daily partition (UTC)
    model_name              VARCHAR     NOT NULL,
    model_version           VARCHAR     NOT NULL,  -- version that produced the scores
    n_patients              BIGINT      NOT NULL,  -- scored patients of the day
    n_low                   BIGINT      NOT NULL,
    n_elevated              BIGINT      NOT NULL,
    n_high                  BIGINT      NOT NULL,
    share_low               DOUBLE      NOT NULL,  -- n_low / n_patients
    share_elevated          DOUBLE      NOT NULL,  -- n_elevated / n_patients
    share_high              DOUBLE      NOT NULL,  -- n_high / n_patients (the band check's figure)
    alert_from_tier         VARCHAR     NOT NULL CHECK (alert_from_tier IN ('elevated', 'high')),
    n_alerts                BIGINT      NOT NULL,  -- patients in alert_from_tier or above
    alerts_per_100          DOUBLE      NOT NULL,  -- 100 * n_alerts / n_patients
    n_labelled              BIGINT,                -- scored patients with a 0/1 label (NULL: no labels yet)
    n_positive              BIGINT,                -- labelled strokes
    flagged_elevated        BIGINT,                -- labelled patients at or above elevated
    tp_elevated             BIGINT,                -- of which strokes
    ppv_elevated            DOUBLE,                -- tp_elevated / flagged_elevated
    sensitivity_elevated    DOUBLE,                -- tp_elevated / n_positive
    nne_elevated            DOUBLE,                -- 1 / ppv_elevated: flagged patients per stroke found
    flagged_high            BIGINT,                -- labelled patients in high
    tp_high                 BIGINT,                -- of which strokes
    ppv_high                DOUBLE,                -- tp_high / flagged_high
    sensitivity_high        DOUBLE,                -- tp_high / n_positive
    nne_high                DOUBLE,                -- 1 / ppv_high
    n_feedback              BIGINT      NOT NULL,  -- feedback records of the day
    n_overridden            BIGINT      NOT NULL,  -- of which action = 'overridden'
    alerts_with_feedback    BIGINT      NOT NULL,  -- alerted patients with any feedback
    alerts_overridden       BIGINT      NOT NULL,  -- alerted patients whose latest feedback overrode
    override_rate           DOUBLE,                -- alerts_overridden / n_alerts (NULL: no alerts)
    computed_at             TIMESTAMPTZ NOT NULL
);
