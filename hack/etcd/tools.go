//go:build tools

// Package tools pins etcd's entrypoint so `go mod tidy` keeps its deps; we
// build the upstream main package go.etcd.io/etcd/server/v3 itself.
package tools

import _ "go.etcd.io/etcd/server/v3/etcdmain"
