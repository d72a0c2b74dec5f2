#!/usr/bin/env bash
# Builds CoreDNS with the local cluster's plugins (see main.go, ../gobuild.sh); prints its path.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gobuild.sh" "$here" github.com/coredns/coredns kondense.dev/cluster/coredns "$@"
