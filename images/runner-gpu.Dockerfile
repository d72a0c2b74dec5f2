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
# A CA bundle for pip and uv (a TLS-intercepting proxy's), e.g. from a build volume; unset: their own.
ARG PIP_CERT
# uv's download cache, e.g. a build volume holding the host's; unset: none.
ARG UV_CACHE_DIR
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive \
    UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# uv itself lives in /opt/uv, which the final image leaves out.
RUN python3 -m venv /opt/uv /opt/kondense && /opt/uv/bin/pip install uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY api/ api/
COPY operator/ operator/
COPY runners/ runners/
# The runner-gpu extra at the versions uv.lock pins, without onnxruntime (from the runner
# extra): it and onnxruntime-gpu install the same Python package, and the GPU build must be the
# one loaded for the CUDA execution provider.
RUN if [ -n "$PIP_CERT" ]; then export SSL_CERT_FILE="$PIP_CERT"; fi \
 && if [ -z "$UV_CACHE_DIR" ]; then export UV_NO_CACHE=1; fi \
 && /opt/uv/bin/uv export --frozen --no-emit-project --extra runner-gpu \
      --no-emit-package onnxruntime -o requirements.txt --quiet \
 && /opt/uv/bin/uv pip install --python /opt/kondense/bin/python -r requirements.txt \
 && /opt/kondense/bin/pip install --no-deps .

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
