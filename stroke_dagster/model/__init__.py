"""A model version's life: training, registry, the promotion gate, the scoring engine and its
cards."""
