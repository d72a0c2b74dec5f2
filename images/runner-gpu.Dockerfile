# syntax=docker/dockerfile:1
# The kondense runner for the GPU pool: CUDA 12 + cuDNN 9 runtime, torch with CUDA,
# onnxruntime-gpu (CUDA execution provider) for FP16 jobs.
# Build from the repository root:  docker build -f images/runner-gpu.Dockerfile -t kondense-runner-gpu .
#
# Base pinned by exact tag (Ubuntu 24.04 ships Python 3.12). Pin its digest too when you build in
# a registry-connected place:
#   docker buildx imagetools inspect nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
# A CA bundle for pip (a TLS-intercepting proxy's), e.g. from a build volume; unset: pip's own.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/kondense
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY operator/ operator/
COPY runners/ runners/
RUN /opt/kondense/bin/pip install ".[runner-gpu]" \
 # onnxruntime (from the runner extra) and onnxruntime-gpu install the same Python package;
 # remove the CPU build and reinstall the GPU one so the CUDA execution provider is the one loaded.
 && /opt/kondense/bin/pip uninstall -y onnxruntime \
 && /opt/kondense/bin/pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.19"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/kondense /opt/kondense
ENV PATH=/opt/kondense/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp kondense
USER 65532:65532
ENTRYPOINT ["kondense"]
