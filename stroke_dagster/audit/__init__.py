"""The audit trail: a record per prediction, tamper-evident chains and clinicians' feedback."""
