# Everything runs inside .venv/, created from the lock file on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export STROKE_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(STROKE_HOME)/dagster

.PHONY: install instance instance-production run ui mlflow-ui serve prod-services test test-slow lint format docs build bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --python $(BIN)/python --quiet --compile-bytecode requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps --compile-bytecode -e .
	touch $@

## instance: the Dagster instance under DAGSTER_HOME, with the project's dagster.yaml (pools).
instance: install
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster instance concurrency set model_registry 1 >/dev/null

## instance-production: the Dagster instance on PostgreSQL (deploy/dagster.production.yaml,
## connection from DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB), replacing $(DAGSTER_HOME)/dagster.yaml.
instance-production: install
	mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster.production.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster instance concurrency set model_registry 1 >/dev/null

## run: the main job (ingest -> validate -> tune -> register -> gate) on embedded defaults, as
## `stroke train`: Dagster's training_job in-process in the instance under DAGSTER_HOME, then a
## summary. Trains on $(STROKE_HOME)/raw/healthcare-dataset-stroke-data.csv (or STROKE_RAW_CSV),
## on synthetic patients when it is absent (STROKE_ALLOW_SYNTHETIC=0 makes that an error).
run: install instance
	$(BIN)/stroke train

## ui: Dagster webserver + daemon, so schedules and sensors tick.
ui: install instance
	$(BIN)/dagster dev -w workspace.yaml

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(STROKE_HOME)/mlflow.db --port 5000

serve: install
	$(BIN)/stroke serve

## prod-services: the production profile's services on this machine for a demo (PostgreSQL,
## S3 server, MLflow server, Dask scheduler + 2 workers), as the production test starts them;
## prints the settings to export, stops on Ctrl-C. Needs PostgreSQL's binaries (Debian: postgresql).
prod-services: install
	PYTHONPATH=$(CURDIR) $(BIN)/python tests/_production.py

## test: the default suite (under 10 minutes on 2 cores); test-slow: servers, replays, backfills.
test: install
	$(BIN)/pytest -q -m "not slow"

test-slow: install
	$(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## docs: the documentation site (mkdocs.yml, docs/) into site/; every warning fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

build:
	docker build -t stroke-dagster:latest \
		--build-arg STROKE_CODE_VERSION="$$(git describe --always --dirty 2>/dev/null)" .

bench: install
	$(BIN)/python benchmarks/model_quality.py
	$(BIN)/python benchmarks/gate_fairness.py
	$(BIN)/python benchmarks/synthetic_quality.py
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/drift.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/warehouse.py
	$(BIN)/python benchmarks/recalibration.py
	$(BIN)/python benchmarks/explain.py
	$(BIN)/python benchmarks/label_free.py
	$(BIN)/python benchmarks/daily_loop.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/faults.py

## lock: re-resolve every transitive pin (requirements.lock) after changing pyproject.toml.
lock:
	$(BIN)/uv pip compile --python-version 3.11 --extra dev --generate-hashes pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 --no-annotate pyproject.toml -o requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache site
