"""Watching the live model: drift, performance, label-free estimates, alerts and retraining
policy."""
