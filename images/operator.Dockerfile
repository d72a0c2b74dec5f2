# syntax=docker/dockerfile:1
# The kondense operator: kopf + the Kubernetes client, no torch and no onnxruntime.
# Build from the repository root:  docker build -f images/operator.Dockerfile -t kondense-operator .
#
# Base pinned by exact tag. Pin its digest too when you build in a registry-connected place:
#   docker buildx imagetools inspect python:3.12.8-slim-bookworm  ->  FROM python:...@sha256:<digest>
#
# Any Debian-like base with Python >= 3.11 and its venv module works (`make images` passes a
# Debian bookworm base built with mmdebstrap when this one can't be pulled): only `python3` is used.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A CA bundle for pip (a TLS-intercepting proxy's), e.g. from a build volume; unset: pip's own.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/kondense
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY operator/ operator/
COPY runners/ runners/
# The operator extra only: the spec models come from runners/ but torch/onnxruntime do not.
RUN /opt/kondense/bin/pip install ".[operator]"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/kondense /opt/kondense
ENV PATH=/opt/kondense/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric non-root user, so `runAsNonRoot: true` can verify it without a passwd lookup.
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp kondense
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["kondense-operator"]
