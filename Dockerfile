# syntax=docker/dockerfile:1
# The operator image: kopf controller + admission webhook, from the locked dependencies (uv.lock,
# extra "operator"). Build from the repository root:
#   docker build -t dbmigrate-operator:0.1.0 .
# Runs as UID 65532 with a read-only root filesystem (the chart mounts an emptyDir at /tmp).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.8
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_PYTHON=python3.11 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Behind a TLS-intercepting proxy, trust its CA for this stage's downloads only (it never reaches
# the final image): mount your CA bundle over the image's for the build and have uv read it, e.g.
#   buildah build -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
#     --build-arg UV_SYSTEM_CERTS=1 --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt ...
ARG UV_SYSTEM_CERTS=false
ARG PIP_CERT
RUN --mount=type=cache,target=/root/.cache/pip python -m pip install "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first, so a source change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --extra operator --no-install-project
COPY operator/dbmigrate_operator/ operator/dbmigrate_operator/
COPY migrations_image/dbmigrate_runner/ migrations_image/dbmigrate_runner/
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --extra operator --no-editable

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dbmigrate-operator" \
      org.opencontainers.image.description="Kubernetes operator for Tortoise ORM database migrations" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
# MALLOC_ARENA_MAX=2: glibc would give each thread of the operator's pool (asyncio.to_thread) an
# arena of its own, each keeping what it once held (docs/benchmarks.md, figure 7).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    HOME=/tmp
WORKDIR /tmp
USER 65532:65532
# 8080: kopf liveness/readiness (/healthz); 9443: admission webhook (TLS); 8000: metrics (optional)
EXPOSE 8080 9443 8000
ENTRYPOINT ["dbmigrate-operator"]
