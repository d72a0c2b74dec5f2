//go:build tools

// Package tools pins the Toxiproxy server for build.sh.
package tools

import _ "github.com/Shopify/toxiproxy/v2/cmd/server"
