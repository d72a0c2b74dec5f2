#!/usr/bin/env bash
# Builds the control-plane binaries pinned by go.mod into a per-pin cache outside the repo
# and prints that bin directory. A cache hit costs nothing; a pin change builds afresh.
#   tests/cluster/build.sh          build if missing, print the bin dir
#   tests/cluster/build.sh --dir    print the bin dir only (no build)
# GO=/path/to/go selects the toolchain (default: go on PATH, then /usr/local/go/bin/go).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${KONDENSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kondense}"
k8s_version="$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod")"
# Bump build_rev when the build command below changes in a way that changes the binaries.
build_rev=2
pin="$( (cat "$here/go.mod" "$here/go.sum"; echo "$build_rev") | sha256sum | cut -c1-12)"
bin="$cache_root/k8s-$k8s_version-$pin/bin"
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd)

if [[ "${1:-}" == "--dir" ]]; then echo "$bin"; exit 0; fi
if [[ -f "$bin/.complete" ]]; then echo "$bin"; exit 0; fi

go="${GO:-$(command -v go || true)}"
[[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
if [[ -z "$go" || ! -x "$(command -v "$go" || true)" ]]; then
	echo "error: the local Kubernetes control plane is built from source and needs the Go" \
		"toolchain (>= 1.24) on PATH; install it from https://go.dev/dl/ and retry." >&2
	exit 1
fi

mkdir -p "$bin"
lock="$cache_root/.build.lock"
exec 9>"$lock"
flock 9 # two test sessions starting together build once
if [[ -f "$bin/.complete" ]]; then echo "$bin"; exit 0; fi

echo "building Kubernetes $k8s_version control plane into $bin (first time: many minutes)" >&2
start=$SECONDS
cd "$here"
# One go build for all commands shares the compiled packages between them.
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
# Stamp the release into the binaries like the official build does (Helm and kubectl read it).
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
CGO_ENABLED=0 "$go" build -buildvcs=false -trimpath -ldflags="$ldflags" -o "$bin/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubectl \
	k8s.io/kubernetes/cmd/kubelet \
	k8s.io/kubernetes/cmd/kube-proxy \
	go.etcd.io/etcd/server/v3 >&2
mv "$bin/server" "$bin/etcd"
for c in "${cmds[@]}"; do [[ -x "$bin/$c" ]] || { echo "error: $c was not built" >&2; exit 1; }; done
echo "built in $((SECONDS - start))s" >&2
touch "$bin/.complete"
echo "$bin"
