"""The SQL warehouse: Delta tables of scores, metrics and records, and DuckDB views over them."""
