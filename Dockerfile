# syntax=docker/dockerfile:1
# paxos-gateway image. Build:  docker build -t paxos-gateway:0.1.0 .
# The Helm chart (helm/paxos-gateway) defaults to this image: repository paxos-gateway, tag = the
# chart's appVersion = the version in pyproject.toml.

ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: wheels for the gateway and its dependencies, installed into a virtualenv ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# Bytecode is compiled here: the runtime root filesystem is read-only, so Python could not cache
# it there. pip is removed from the venv: nothing installs at runtime.
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels paxos-gateway \
 && /opt/venv/bin/pip uninstall --yes pip \
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
            --shell /usr/sbin/nologin gateway \
 && mkdir -p /etc/paxos-gateway
COPY --from=builder /opt/venv /opt/venv
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# WebSocket subscribers, metrics + /healthz + /readyz.
EXPOSE 8765 9108
ENTRYPOINT ["paxos-gateway"]
CMD ["run", "--config", "/etc/paxos-gateway/gateway.toml"]
