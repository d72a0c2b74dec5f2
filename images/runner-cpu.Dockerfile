# syntax=docker/dockerfile:1
# The kondense runner for the CPU pool: torch (CPU build), ONNX Runtime, transformers.
# Build from the repository root:  docker build -f images/runner-cpu.Dockerfile -t kondense-runner-cpu .
#
# Base pinned by exact tag. Pin its digest too when you build in a registry-connected place:
#   docker buildx imagetools inspect python:3.12.8-slim-bookworm  ->  FROM python:...@sha256:<digest>
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kondense
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY runners/ runners/
# PyTorch's CPU wheel index first: the PyPI torch wheel drags in several GB of CUDA libraries.
RUN /opt/kondense/bin/pip install \
      --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple \
      ".[runner]"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/kondense /opt/kondense
# Runner pods run with a read-only root filesystem: every cache goes to the writable /tmp.
ENV PATH=/opt/kondense/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp kondense
USER 65532:65532
ENTRYPOINT ["kondense"]
