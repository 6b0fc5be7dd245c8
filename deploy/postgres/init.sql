-- The production profile's PostgreSQL holds two databases: Dagster's instance (POSTGRES_DB) and
-- MLflow's tracking store + model registry.
CREATE DATABASE mlflow;
