# syntax=docker/dockerfile:1
# The kondense runner for the CPU pool: torch, ONNX Runtime, transformers, as uv.lock pins them.
# Build from the repository root:  docker build -f images/runner-cpu.Dockerfile -t kondense-runner-cpu .
#
# Base pinned by exact tag. Pin its digest too when you build in a registry-connected place:
#   docker buildx imagetools inspect python:3.12.8-slim-bookworm  ->  FROM python:...@sha256:<digest>
#
# Any Debian-like base with Python >= 3.11 and its venv module works (`make images` passes a
# Debian bookworm base built with mmdebstrap when this one can't be pulled): only `python3` is used.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# The dependencies alone, at the versions uv.lock pins: this stage, and the image layer it
# becomes, are reused until pyproject.toml or uv.lock changes, so a code change rebuilds,
# pushes and pulls only the small layer of kondense itself (the dependencies are GBs).
FROM ${PYTHON_IMAGE} AS deps
# A CA bundle for pip and uv (a TLS-intercepting proxy's), e.g. from a build volume; unset: their own.
ARG PIP_CERT
# uv's download cache, e.g. a build volume holding the host's (`make images` mounts it, so a
# rebuild downloads nothing); unset: none, and nothing of it stays in the image.
ARG UV_CACHE_DIR
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
# uv itself lives in /opt/uv, which the final image leaves out.
RUN python3 -m venv /opt/uv /opt/kondense && /opt/uv/bin/pip install uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock ./
# kondense itself goes to /opt/kondense-app (next stage); the venv finds it through a .pth file.
RUN if [ -n "$PIP_CERT" ]; then export SSL_CERT_FILE="$PIP_CERT"; fi \
 && if [ -z "$UV_CACHE_DIR" ]; then export UV_NO_CACHE=1; fi \
 && /opt/uv/bin/uv export --frozen --no-emit-project --extra runner -o requirements.txt --quiet \
 && /opt/uv/bin/uv pip install --python /opt/kondense/bin/python -r requirements.txt \
 && echo /opt/kondense-app > "$(/opt/kondense/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/kondense-app.pth"

FROM deps AS build
ARG PIP_CERT
COPY README.md ./
COPY api/ api/
COPY operator/ operator/
COPY runners/ runners/
RUN /opt/kondense/bin/pip install --no-deps --target /opt/kondense-app .

FROM ${PYTHON_IMAGE}
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp kondense
COPY --from=deps /opt/kondense /opt/kondense
COPY --from=build /opt/kondense-app /opt/kondense-app
# Runner pods run with a read-only root filesystem: every cache goes to the writable /tmp.
ENV PATH=/opt/kondense-app/bin:/opt/kondense/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1
USER 65532:65532
ENTRYPOINT ["kondense"]
