//go:build tools

// Package tools pins the CNCF distribution registry for build.sh.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
