#!/usr/bin/env bash
# Builds the Helm CLI pinned by go.mod into a per-pin cache outside the repo (the same
# convention as tests/cluster/build.sh) and prints the path of the helm binary.
#   tests/chart/go/build.sh          build if missing, print the binary's path
#   tests/chart/go/build.sh --path   print the path only (no build)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${KONDENSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kondense}"
helm_version="$(sed -n 's/^require helm.sh\/helm\/v3 \(v[0-9.]*\)$/\1/p' "$here/go.mod")"
# Bump build_rev when the build command below changes in a way that changes the binary.
build_rev=2
pin="$( (cat "$here/go.mod" "$here/go.sum"; echo "$build_rev") | sha256sum | cut -c1-12)"
dir="$cache_root/helm-$helm_version-$pin"
helm="$dir/helm"

if [[ "${1:-}" == "--path" ]]; then echo "$helm"; exit 0; fi
if [[ -f "$dir/.complete" ]]; then echo "$helm"; exit 0; fi

go="${GO:-$(command -v go || true)}"
[[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z "$go" ]]; then
	echo "error: the chart tests build Helm $helm_version from its Go module and need the Go" \
		"toolchain (>= 1.24) on PATH; install it from https://go.dev/dl/ and retry." >&2
	exit 1
fi

mkdir -p "$dir"
exec 9>"$cache_root/.helm-build.lock"
flock 9 # two test sessions starting together build once
if [[ -f "$dir/.complete" ]]; then echo "$helm"; exit 0; fi

echo "building Helm $helm_version into $dir (first time: a few minutes)" >&2
start=$SECONDS
cd "$here"
# As Helm's own Makefile does: the version ldflag makes `helm version` report the pin, and the
# Kubernetes version of its client-go becomes the default for `helm template` / `helm lint`
# (without it they assume v1.20 and refuse the chart's kubeVersion).
client_go="$(GOFLAGS=-mod=mod "$go" list -m -f '{{.Version}}' k8s.io/client-go)" # v0.34.2
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -trimpath -ldflags="$ldflags" \
	-o "$helm" helm.sh/helm/v3/cmd/helm >&2
"$helm" version --short >/dev/null
echo "built in $((SECONDS - start))s" >&2
touch "$dir/.complete"
echo "$helm"
