#!/usr/bin/env bash
# Builds the Kueue manager pinned by go.mod (see ../gobuild.sh) and prints its path. Its CRDs
# come from the same module in the Go module cache: `crds.sh` prints their directory.
#   tests/cluster/kueue/build.sh          build if missing, print the binary's path
#   tests/cluster/kueue/build.sh --path   print the path only (no build)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" sigs.k8s.io/kueue sigs.k8s.io/kueue/cmd/kueue "$@"
