//go:build tools

// Package tools pins helm's command package deps so `go mod tidy` keeps
// them; we build the upstream main package helm.sh/helm/v3/cmd/helm itself.
package tools

import _ "helm.sh/helm/v3/pkg/action"
