# syntax=docker/dockerfile:1
# An S3 API server for the quickstart (examples/cluster/): moto's server, in memory, any
# credentials accepted. For trying kondense out, never for data you keep. Build from the
# repository root:  docker build -f images/s3-test.Dockerfile -t kondense-s3-test .
# It has boto3 too (a moto dependency): the quickstart's pvc:// variant loads its volume with it.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A CA bundle for pip (a TLS-intercepting proxy's), e.g. from a build volume; unset: pip's own.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# S3 only: moto[server] would pull every service's dependencies (517 MB in all, not ~260).
RUN python3 -m venv /opt/moto && /opt/moto/bin/pip install "moto[s3]==5.2.5" flask flask-cors

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/moto /opt/moto
ENV PATH=/opt/moto/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric non-root user, so `runAsNonRoot: true` can verify it without a passwd lookup.
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp kondense
USER 65532:65532
EXPOSE 5000
ENTRYPOINT ["moto_server", "-H", "0.0.0.0", "-p", "5000"]
