#!/usr/bin/env bash
# Builds crictl pinned by go.mod (see ../gobuild.sh) and prints its path.
#   tests/cluster/crictl/build.sh          build if missing, print the binary's path
#   tests/cluster/crictl/build.sh --path   print the path only (no build)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl "$@"
