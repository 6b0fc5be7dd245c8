"""Clinical statistics: calibration, recalibration, subgroups, decision curves and explanations."""
