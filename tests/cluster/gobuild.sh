#!/usr/bin/env bash
# Builds one command of a pinned Go module into a per-pin cache outside the repo and prints
# the binary's path. The pin is the hash of the module directory's go.mod and go.sum, so a
# cache hit costs nothing and a pin change builds afresh. Used by the small tools beside the
# control plane (toxiproxy/, coredns/, registry/); build.sh builds the control plane itself.
#   tests/cluster/gobuild.sh DIR MODULE PACKAGE [--path]
#     DIR      a directory with go.mod/go.sum requiring MODULE (the name of the cache entry)
#     MODULE   the module whose version names the cache entry, e.g. github.com/coredns/coredns
#     PACKAGE  the main package to build; its last element names the binary
#     --path   print the path only (no build)
# GO=/path/to/go selects the toolchain (default: go on PATH, then /usr/local/go/bin/go).
set -euo pipefail
dir="$(cd "$1" && pwd)" module="$2" package="$3"
name="$(basename "$dir")"
cache_root="${KONDENSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kondense}"
version="$(awk -v m="$module" '$1 == m || ($1 == "require" && $2 == m) {print $NF; exit}' "$dir/go.mod")"
# Bump build_rev when the build command below changes in a way that changes the binaries.
build_rev=1
pin="$( (cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go; echo "$package $build_rev") | sha256sum | cut -c1-12)"
out="$cache_root/$name-$version-$pin"
binary="$out/$(basename "$package")"

if [[ "${4:-}" == "--path" ]]; then echo "$binary"; exit 0; fi
if [[ -f "$out/.complete" ]]; then echo "$binary"; exit 0; fi

go="${GO:-$(command -v go || true)}"
[[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z "$go" ]]; then
	echo "error: $name $version is built from its Go module and needs the Go toolchain" \
		"(>= 1.24) on PATH; install it from https://go.dev/dl/ and retry." >&2
	exit 1
fi

mkdir -p "$out"
exec 9>"$cache_root/.$name-build.lock"
flock 9 # two sessions starting together build once
if [[ -f "$out/.complete" ]]; then echo "$binary"; exit 0; fi

echo "building $name $version into $out (first time only)" >&2
start=$SECONDS
cd "$dir"
CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -buildvcs=false -trimpath -ldflags="-s -w" \
	-o "$binary" "$package" >&2
echo "built $name in $((SECONDS - start))s" >&2
touch "$out/.complete"
echo "$binary"
