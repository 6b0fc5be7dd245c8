-- Every batch score with its whole audit record: the row's own fields from score_history and
-- the fields its slice shares (the MLflow run of the model, the code version, the thresholds in
-- force, the requester, and the slice's link in the day's hash chain) from the slice's record
-- in prediction_audit (kind 'slice', request_id = the slice's write_id). Slices scored without
-- the audit trail have NULLs there. `stroke audit verify` checks both sides.
CREATE OR REPLACE VIEW score_audit AS
SELECT
    s.*,
    a.model_run_id,
    a.code_version,
    a.thresholds,
    a.requester,
    a.seq           AS slice_seq,
    a.record_hash   AS slice_record_hash
FROM score_history AS s
LEFT JOIN prediction_audit AS a
    ON a.kind = 'slice' AND a.chain_id = 'batch'
   AND a.cohort_date = s.cohort_date AND a.request_id = s.write_id;
