# syntax=docker/dockerfile:1
# The kondense runner for the CPU pool: torch (CPU build), ONNX Runtime, transformers.
# Build from the repository root:  docker build -f images/runner-cpu.Dockerfile -t kondense-runner-cpu .
#
# Base pinned by exact tag. Pin its digest too when you build in a registry-connected place:
#   docker buildx imagetools inspect python:3.12.8-slim-bookworm  ->  FROM python:...@sha256:<digest>
#
# Any Debian-like base with Python >= 3.11 and its venv module works (`make images` passes a
# Debian bookworm base built with mmdebstrap when this one can't be pulled): only `python3` is used.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# The dependencies alone, read from pyproject.toml: this stage, and the image layer it becomes,
# are reused until pyproject.toml changes, so a code change rebuilds, pushes and pulls only the
# small layer of kondense itself (the dependencies are GBs).
FROM ${PYTHON_IMAGE} AS deps
# A CA bundle for pip (a TLS-intercepting proxy's), e.g. from a build volume; unset: pip's own.
ARG PIP_CERT
# PyTorch's CPU wheel index first: the PyPI torch wheel drags in several GB of CUDA libraries.
# Empty: PyPI alone (where that index can't be reached; the image is then about 6 GB larger).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/kondense
WORKDIR /src
COPY pyproject.toml ./
# kondense itself goes to /opt/kondense-app (next stage); the venv finds it through a .pth file.
RUN /opt/kondense/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["runner"]))' > requirements.txt \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      set -- --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple; \
    fi \
 && /opt/kondense/bin/pip install "$@" -r requirements.txt \
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
