#!/usr/bin/env bash
# Builds the CNCF distribution registry pinned by go.mod into a per-pin cache outside the repo
# (the same convention as tests/cluster/build.sh and toxiproxy/build.sh) and prints the path of
# the binary. The local cluster's nodes pull the project's images from it (images/build.py push).
#   tests/cluster/registry/build.sh          build if missing, print the binary's path
#   tests/cluster/registry/build.sh --path   print the path only (no build)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${KONDENSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kondense}"
version="$(sed -n 's/^require github.com\/distribution\/distribution\/v3 \(v[0-9.]*\)$/\1/p' "$here/go.mod")"
# Bump build_rev when the build command below changes in a way that changes the binary.
build_rev=1
pin="$( (cat "$here/go.mod" "$here/go.sum"; echo "$build_rev") | sha256sum | cut -c1-12)"
dir="$cache_root/registry-$version-$pin"
binary="$dir/registry"

if [[ "${1:-}" == "--path" ]]; then echo "$binary"; exit 0; fi
if [[ -f "$dir/.complete" ]]; then echo "$binary"; exit 0; fi

go="${GO:-$(command -v go || true)}"
[[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z "$go" ]]; then
	echo "error: the local cluster's image registry is the distribution registry $version, built" \
		"from its Go module; that needs the Go toolchain (>= 1.26) on PATH; install it from" \
		"https://go.dev/dl/ and retry." >&2
	exit 1
fi

mkdir -p "$dir"
exec 9>"$cache_root/.registry-build.lock"
flock 9 # two sessions starting together build once
if [[ -f "$dir/.complete" ]]; then echo "$binary"; exit 0; fi

echo "building the distribution registry $version into $dir (first time: about two minutes)" >&2
start=$SECONDS
cd "$here"
CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -buildvcs=false -trimpath -ldflags="-s -w" \
	-o "$binary" github.com/distribution/distribution/v3/cmd/registry >&2
"$binary" --version >/dev/null
echo "built in $((SECONDS - start))s" >&2
touch "$dir/.complete"
echo "$binary"
