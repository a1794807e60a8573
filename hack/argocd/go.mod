// Module hack/argocd pins the Argo CD release the tests run (tests/argocd, `make demo ARGOCD=1`).
// It is not built from here: Argo CD's own go.mod replaces gitops-engine/v3 with a directory its
// module zip does not carry, so hack/build-binaries.sh (tool `argocd`) copies the module source
// out of the module cache, drops that one replace (the served gitops-engine/v3 of the same version
// is used) and builds ./cmd, one binary that becomes each component by the name it is run as.
module github.com/dbmigrate-operator/hack/argocd

go 1.27.0

toolchain go1.27.3

require github.com/argoproj/argo-cd/v3 v3.6.2
