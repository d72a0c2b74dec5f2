#!/usr/bin/env bash
# Builds kstatus (main.go) against the cli-utils release go.mod pins (see ../../cluster/
# gobuild.sh); prints its path.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../../cluster/gobuild.sh" "$here" sigs.k8s.io/cli-utils kondense.dev/gitops/kstatus "$@"
