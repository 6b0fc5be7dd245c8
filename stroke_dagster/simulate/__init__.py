"""Synthetic patients, so the platform runs (and is tested) without the real data."""
