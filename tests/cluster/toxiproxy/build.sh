#!/usr/bin/env bash
# Builds the Toxiproxy server pinned by go.mod (see ../gobuild.sh) and prints its path.
#   tests/cluster/toxiproxy/build.sh          build if missing, print the binary's path
#   tests/cluster/toxiproxy/build.sh --path   print the path only (no build)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" github.com/Shopify/toxiproxy/v2 \
	github.com/Shopify/toxiproxy/v2/cmd/server "$@"
