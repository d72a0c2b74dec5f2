//go:build tools

// Package tools lists the command build.sh compiles, so `go mod tidy` keeps its deps.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
