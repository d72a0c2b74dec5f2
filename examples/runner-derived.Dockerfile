# syntax=docker/dockerfile:1
# A runner image that can build your own networks: kondense's runner plus your package.
#
# A safetensors model holds weights only; spec.model.architecture ('package.module:function')
# names the code that builds the network, and the runner imports it from its own environment,
# never from the model's URI. So the code reaches the cluster the way any code does: in an
# image someone built and your cluster admin trusts. Build from the repository root (here with
# the example package examples/packages/digits-nets; use your own package's folder, or a
# requirement such as "my-nets==1.4.2" from your index):
#   docker build -f examples/runner-derived.Dockerfile -t registry.example.com/kondense-runner-cpu-nets:0.1.0 .
# and point the pool at it (chart values), e.g. `helm upgrade kondense charts/kondense
#   --set pools.cpu.image=registry.example.com/kondense-runner-cpu-nets:0.1.0`.
# For the GPU pool, derive from kondense-runner-gpu the same way.
ARG RUNNER_IMAGE=ghcr.io/kondense/kondense-runner-cpu:0.1.0
FROM ${RUNNER_IMAGE}

# The runner image runs as uid 65532 with its virtual environment at /opt/kondense; install
# as root into that environment, then drop back to the runner's user.
USER root
COPY examples/packages/digits-nets /tmp/digits-nets
# --no-deps: torch is already there, and the runner's pinned versions must stay as they are.
RUN PIP_NO_CACHE_DIR=1 /opt/kondense/bin/pip install --no-deps /tmp/digits-nets \
 && rm -rf /tmp/digits-nets \
 && /opt/kondense/bin/python -c "import digits_nets"
USER 65532:65532
