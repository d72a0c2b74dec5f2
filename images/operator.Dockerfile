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
# A CA bundle for pip and uv (a TLS-intercepting proxy's), e.g. from a build volume; unset: their own.
ARG PIP_CERT
# uv's download cache, e.g. a build volume holding the host's; unset: none.
ARG UV_CACHE_DIR
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
# uv itself lives in /opt/uv, which the final image leaves out.
RUN python3 -m venv /opt/uv /opt/kondense && /opt/uv/bin/pip install uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY api/ api/
COPY operator/ operator/
COPY runners/ runners/
# The operator extra only, at the versions uv.lock pins: the spec models come from runners/
# but torch/onnxruntime do not.
RUN if [ -n "$PIP_CERT" ]; then export SSL_CERT_FILE="$PIP_CERT"; fi \
 && if [ -z "$UV_CACHE_DIR" ]; then export UV_NO_CACHE=1; fi \
 && /opt/uv/bin/uv export --frozen --no-emit-project --extra operator -o requirements.txt --quiet \
 && /opt/uv/bin/uv pip install --python /opt/kondense/bin/python -r requirements.txt \
 && /opt/kondense/bin/pip install --no-deps .

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
