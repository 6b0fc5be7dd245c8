-- The live paired comparison of each version in shadow with the champion, once a day's labels
-- arrived: the same labelled patients of the day scored by both (the champion's current slice
-- and the shadow version's slice of the same input). One row per day, shadow version and
-- champion version. The AUC difference and its 95% CI are DeLong's paired test; O/E is observed
-- over expected strokes (1 = calibrated in the large); net benefit is taken at the champion's
-- tier thresholds (flagging patients at or above the threshold). Across days, the pooled figures
-- (a patient counted once) are in the asset's metadata and feed the gate.
CREATE TABLE IF NOT EXISTS shadow_comparison (
    cohort_date             DATE        NOT NULL,  -- the labelled day
    shadow_version          VARCHAR     NOT NULL,  -- the version scoring in shadow
    champion_version        VARCHAR     NOT NULL,  -- the version whose scores were shown
    n_patients              BIGINT      NOT NULL,  -- labelled patients scored by both
    n_events                BIGINT      NOT NULL,  -- strokes among them
    shadow_auc              DOUBLE,                -- NULL with fewer than 2 of each class
    champion_auc            DOUBLE,
    auc_difference          DOUBLE,                -- shadow minus champion
    auc_difference_low      DOUBLE,                -- 95% CI
    auc_difference_high     DOUBLE,
    shadow_oe               DOUBLE,                -- observed / expected (NULL without events)
    champion_oe             DOUBLE,
    threshold_elevated      DOUBLE      NOT NULL,  -- the champion's tier thresholds
    threshold_high          DOUBLE      NOT NULL,
    shadow_net_benefit_elevated   DOUBLE,          -- net benefit flagging >= elevated
    champion_net_benefit_elevated DOUBLE,
    shadow_net_benefit_high       DOUBLE,          -- net benefit flagging >= high
    champion_net_benefit_high     DOUBLE,
    computed_at             TIMESTAMPTZ NOT NULL
);
