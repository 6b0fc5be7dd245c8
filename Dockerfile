# syntax=docker/dockerfile:1
# The platform in one image: the scoring API by default, Dagster (webserver or daemon) on demand.
#
#   docker build -t stroke-dagster .                       (make build)
#   docker volume create stroke-data
#   # the Kaggle file into the volume, once (the image never trains on synthetic patients unless
#   # run with -e STROKE_ALLOW_SYNTHETIC=1; without the file, training stops with one line):
#   docker run --rm -v stroke-data:/data -v "$PWD/data/raw:/in:ro" stroke-dagster \
#       sh -c 'mkdir -p /data/raw && cp /in/healthcare-dataset-stroke-data.csv /data/raw/'
#   docker run --rm -v stroke-data:/data stroke-dagster stroke train   (any `stroke` command)
#   docker run -d --name stroke-api -p 8080:8080 -v stroke-data:/data stroke-dagster
#   docker run -d --name stroke-dagster-webserver --no-healthcheck -p 3000:3000 \
#       -v stroke-data:/data stroke-dagster dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml
#   docker run -d --name stroke-dagster-daemon --no-healthcheck -v stroke-data:/data \
#       stroke-dagster dagster-daemon run -w workspace.yaml
#
# One webserver and one daemon per Dagster instance (the volume's /data/dagster): not
# `dagster dev`, which starts a daemon of its own beside the webserver.
# All state (MLflow store, warehouse, telemetry, Dagster instance) lives in the /data volume.
# The production profile (deploy/compose.yaml, deploy/helm/values.yaml) runs the same image with
# DAGSTER_YAML=/app/deploy/dagster.production.yaml and its state on PostgreSQL and object storage.

# ---- build: the same steps as `make install` (uv pip sync of requirements.lock, then -e .) ----
FROM python:3.11-slim AS build
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1
RUN python -m pip install "uv==${UV_VERSION}"
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN python -m venv /app/.venv \
    && uv pip sync --python /app/.venv/bin/python --quiet --compile-bytecode requirements.lock
COPY . .
RUN uv pip install --python /app/.venv/bin/python --quiet --no-deps --compile-bytecode -e .

# ---- runtime: the venv and the source, no build tools, a non-root user ----
FROM python:3.11-slim
# The code version every audit and change-control record names (make build passes the git
# commit; empty counts as unset: the package version alone).
ARG STROKE_CODE_VERSION=
RUN groupadd --system --gid 10001 stroke \
    && useradd --system --uid 10001 --gid stroke --home-dir /app --shell /usr/sbin/nologin stroke \
    && mkdir -p /data/dagster \
    && chown -R stroke:stroke /data
COPY --from=build --chown=stroke:stroke /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STROKE_HOME=/data \
    DAGSTER_HOME=/data/dagster \
    DAGSTER_YAML=/app/dagster.yaml \
    STROKE_ALLOW_SYNTHETIC=0 \
    STROKE_CODE_VERSION=$STROKE_CODE_VERSION
WORKDIR /app
USER stroke
VOLUME ["/data"]
EXPOSE 8080 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]
# Like `make ui`: the Dagster instance settings (DAGSTER_YAML) go into DAGSTER_HOME on first start.
ENTRYPOINT ["/bin/sh", "-c", "mkdir -p \"$DAGSTER_HOME\" && { [ -f \"$DAGSTER_HOME/dagster.yaml\" ] || cp \"$DAGSTER_YAML\" \"$DAGSTER_HOME/dagster.yaml\"; } && exec \"$@\"", "--"]
CMD ["stroke", "serve", "--host", "0.0.0.0", "--port", "8080"]
