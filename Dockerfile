# syntax=docker/dockerfile:1
# paxos-gateway image. Build:  docker build -t paxos-gateway:0.1.0 .
# The Helm chart (helm/paxos-gateway) defaults to this image: repository paxos-gateway, tag = the
# chart's appVersion = the version in pyproject.toml. `docker run paxos-gateway:0.1.0` starts
# with docker/gateway.toml (the gateway's defaults, listening on 0.0.0.0); docs/operations.md.

# The base image, pinned by digest (the multi-architecture index of python:3.11-slim): a rebuild
# gets the same interpreter and system libraries until the pin is moved on purpose. To refresh
# it (Debian and CPython security fixes), docs/operations.md, "The image":
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
# This pin was written without registry access (it is the python:3.11-slim index digest other
# public projects pin): check it resolves, or refresh it, before the first release build.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# -- builder: the locked dependencies and the gateway, installed into a virtualenv ---------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# requirements-runtime.lock: the runtime dependencies and the build backend, with the versions
# and hashes of requirements.lock. --require-hashes: every downloaded file is checked; --no-deps:
# nothing outside the lock. A layer of its own, rebuilt only when the lock changes.
COPY requirements-runtime.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# The gateway itself, built with the locked backend (no isolated build fetching an unpinned
# one). Bytecode is compiled here: the runtime root filesystem is read-only, so Python could not
# cache it there. pip and the build backend are removed: nothing installs at runtime.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/venv/bin/pip uninstall --yes setuptools wheel pip \
 && /opt/venv/bin/python -m compileall -q /opt/venv

# -- runtime: the same slim base (same interpreter path for the venv), no build tools -----------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="paxos-gateway" \
      org.opencontainers.image.description="Normalizing fan-out gateway for the Paxos public WebSocket feeds" \
      org.opencontainers.image.version="${VERSION}"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
# The default configuration; the chart mounts its ConfigMap over this directory.
COPY docker/gateway.toml /etc/paxos-gateway/gateway.toml
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# WebSocket subscribers, metrics + /healthz + /readyz.
EXPOSE 8765 9108
ENTRYPOINT ["paxos-gateway"]
# One image for every role: in cluster mode (docs/cluster.md) the chart runs this CMD plus
# `--role ingest` or `--role edge`, with [cluster] nats_urls in the mounted gateway.toml.
CMD ["run", "--config", "/etc/paxos-gateway/gateway.toml"]
