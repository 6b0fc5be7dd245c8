"""Batch scoring of cohort files into the warehouse, for the champion and versions in shadow."""
