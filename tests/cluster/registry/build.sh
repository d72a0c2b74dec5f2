#!/usr/bin/env bash
# Builds the CNCF distribution registry pinned by go.mod (see ../gobuild.sh) and prints its path.
# The local cluster's nodes pull the project's images from it (images/build.py push).
#   tests/cluster/registry/build.sh          build if missing, print the binary's path
#   tests/cluster/registry/build.sh --path   print the path only (no build)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" github.com/distribution/distribution/v3 \
	github.com/distribution/distribution/v3/cmd/registry "$@"
