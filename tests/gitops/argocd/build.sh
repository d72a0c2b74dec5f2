#!/usr/bin/env bash
# Builds argocd-health (main.go) against the Argo CD release go.mod pins (see ../../cluster/
# gobuild.sh); prints its path. The first build compiles much of Argo CD: ~10 min on 2 cores.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../../cluster/gobuild.sh" "$here" github.com/argoproj/argo-cd/v3 kondense.dev/gitops/argocd-health "$@"
