//go:build tools

// Package tools pins crictl for build.sh.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
