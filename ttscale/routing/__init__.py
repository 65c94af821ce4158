"""Router deltas: the per-family routing rules, the row-indexed delta table, the rerouting optimiser."""
