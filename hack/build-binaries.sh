#!/usr/bin/env bash
# Build the local cluster's binaries (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, helm, crictl) from Go modules
# pinned under hack/, into a per-version cache (see below). Only missing
# binaries are built, so a warm run is instant. Prints the bin dir last.
#
# The cache is ~/.cache/dbmigrate-operator/k8s/<versions>/bin, <versions> naming the pinned
# k8s, etcd and helm versions (DBMIGRATE_K8S_CACHE replaces the part before <versions>).
#
# Two tools the chart tests use are built only when asked for, each into a cache dir of its own
# keyed by its version (adding them changes nothing of the cluster's cache):
#   helm4    Helm 4 (hack/helm4, helm.sh/helm/v4)            -> <cache>/helm4-<version>/bin/helm4
#   kstatus  hack/kstatus: the kstatus library's verdict     -> <cache>/kstatus-<version>-<src>/bin/kstatus
#   argocd   Argo CD (hack/argocd pins argo-cd/v3)           -> <cache>/argocd-<version>/bin/argocd
#            (+ argocd-application-controller, argocd-repo-server symlinks, Argo CD's
#            git-verify-wrapper.sh and gpg-wrapper.sh, and its CRDs in <cache>/argocd-<version>/crds)
#
#   hack/build-binaries.sh            # build what is missing
#   hack/build-binaries.sh helm4      # build (or find) helm4 only; prints its bin dir
#   hack/build-binaries.sh kstatus    # same for kstatus
#   hack/build-binaries.sh argocd     # same for Argo CD (8-16 min cold on 2 cores, ~290 MB)
#   DBMIGRATE_K8S_BIN=/path ...       # use prebuilt binaries, build nothing (a tool: if it is there)
#   KUBEBUILDER_ASSETS=/path ...      # same (envtest convention)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK="$ROOT/hack"
TOOL="${1:-}"
case "$TOOL" in
  "" | helm4 | kstatus | argocd) ;;
  *) echo "usage: $0 [helm4|kstatus|argocd]" >&2; exit 2 ;;
esac

prebuilt="${DBMIGRATE_K8S_BIN:-${KUBEBUILDER_ASSETS:-}}"
if [[ -n "$prebuilt" && ( -z "$TOOL" || -x "$prebuilt/$TOOL" ) ]]; then
  echo "$prebuilt"
  exit 0
fi

modver() { # modver <go.mod> <module>: the required version of a module
  awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$1"
}
CACHE="${DBMIGRATE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbmigrate-operator/k8s}"
K8S_VERSION="$(modver "$HACK/k8s/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(modver "$HACK/etcd/go.mod" go.etcd.io/etcd/server/v3)"
HELM_VERSION="$(modver "$HACK/helm/go.mod" helm.sh/helm/v3)"
CRICTL_VERSION="$(modver "$HACK/crictl/go.mod" sigs.k8s.io/cri-tools)"
# Outside the work tree, so fresh clones (CI) on the same machine reuse the binaries.
VERSIONS="$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"  # localcluster/binaries.py agrees
BIN="$CACHE/$VERSIONS/bin"
case "$TOOL" in
  helm4) BIN="$CACHE/helm4-$(modver "$HACK/helm4/go.mod" helm.sh/helm/v4)/bin" ;;
  kstatus)  # our own source is part of the key: a changed main.go is a new binary
    src="$(cat "$HACK/kstatus/go.mod" "$HACK/kstatus/main.go" | sha256sum | cut -c1-12)"
    BIN="$CACHE/kstatus-$(modver "$HACK/kstatus/go.mod" sigs.k8s.io/cli-utils)-$src/bin" ;;
  argocd) BIN="$CACHE/argocd-$(modver "$HACK/argocd/go.mod" github.com/argoproj/argo-cd/v3)/bin" ;;
esac
mkdir -p "$BIN"
exec 9>"$BIN/.lock"
flock 9  # concurrent test runs wait for one build instead of compiling twice

# Share the 2 cores politely with whatever else runs; lean, reproducible binaries.
export GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
export GOTOOLCHAIN=local
NICE=(nice -n 10)
PAR="${DBMIGRATE_BUILD_PAR:-2}"

build() { # build <module-dir> <ldflags> <out> <pkg>...: go build into a temp dir, then move
  local dir="$1" ldflags="$2" out="$3"; shift 3
  local tmp; tmp="$(mktemp -d "$BIN/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  local start=$SECONDS
  echo ">> building $* (in ${dir#"$ROOT"/})" >&2
  (cd "$dir" && "${NICE[@]}" go build -p "$PAR" -ldflags "$ldflags" -o "$tmp/$out" "$@") >&2
  mv "$tmp"/* "$BIN/"
  rm -rf "$tmp"
  trap - EXIT
  echo ">> built in $((SECONDS - start))s" >&2
}

missing() { for b in "$@"; do [[ -x "$BIN/$b" ]] || return 0; done; return 1; }

if [[ "$TOOL" == helm4 ]]; then
  if missing helm4; then
    v="$(modver "$HACK/helm4/go.mod" helm.sh/helm/v4)"
    build "$HACK/helm4" "-s -w -X helm.sh/helm/v4/internal/version.version=$v" helm4 helm.sh/helm/v4/cmd/helm
  fi
  echo "$BIN"
  exit 0
fi
if [[ "$TOOL" == argocd ]]; then
  if missing argocd argocd-application-controller argocd-repo-server git-verify-wrapper.sh gpg-wrapper.sh; then
    v="$(modver "$HACK/argocd/go.mod" github.com/argoproj/argo-cd/v3)"
    # Argo CD's go.mod needs a newer Go than ours; the go command fetches that toolchain.
    toolchain="$(awk '$1 == "toolchain" {print $2; exit}' "$HACK/argocd/go.mod")"
    src="$(GOTOOLCHAIN="$toolchain" GOFLAGS= go mod download -json "github.com/argoproj/argo-cd/v3@$v" |
      awk -F'"' '$2 == "Dir" {print $4}')"
    # `go install …@v` refuses the module's `replace …/gitops-engine/v3 => ./gitops-engine` (a
    # directory its zip does not carry): build a writable copy with that one replace dropped, so
    # the served gitops-engine/v3 of the same version is used.
    work="$(mktemp -d "$BIN/.src.XXXXXX")"
    cp -r "$src/." "$work/" && chmod -R u+w "$work"
    (cd "$work" && GOTOOLCHAIN="$toolchain" go mod edit -dropreplace github.com/argoproj/argo-cd/gitops-engine/v3 &&
      GOTOOLCHAIN="$toolchain" GOFLAGS="$GOFLAGS -mod=mod" go mod download github.com/argoproj/argo-cd/gitops-engine/v3)
    GOTOOLCHAIN="$toolchain" GOFLAGS="$GOFLAGS -mod=mod" \
      build "$work" "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${v#v}" argocd ./cmd
    for name in argocd-application-controller argocd-repo-server; do ln -sf argocd "$BIN/$name"; done
    install -m 0755 "$work/hack/git-verify-wrapper.sh" "$work/hack/gpg-wrapper.sh" "$BIN/"
    rm -rf "$BIN/../crds" && cp -r "$work/manifests/crds" "$BIN/../crds"
    rm -rf "$work"
  fi
  echo "$BIN"
  exit 0
fi
if [[ "$TOOL" == kstatus ]]; then
  missing kstatus && build "$HACK/kstatus" "-s -w" kstatus .
  echo "$BIN"
  exit 0
fi

if missing kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; then
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  v="-X k8s.io/component-base/version"
  cv="-X k8s.io/client-go/pkg/version"
  ld="-s -w $v.gitVersion=$K8S_VERSION $v.gitMajor=1 $v.gitMinor=$minor $v.gitTreeState=clean"
  ld+=" $cv.gitVersion=$K8S_VERSION $cv.gitMajor=1 $cv.gitMinor=$minor $cv.gitTreeState=clean"
  build "$HACK/k8s" "$ld" "" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy
fi
if missing crictl; then  # the real node's CRI client (debugging, `make demo` shows containers with it)
  build "$HACK/crictl" "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" crictl sigs.k8s.io/cri-tools/cmd/crictl
fi
if missing etcd; then
  build "$HACK/etcd" "-s -w" etcd go.etcd.io/etcd/server/v3
fi
if missing helm; then
  build "$HACK/helm" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" helm helm.sh/helm/v3/cmd/helm
fi
echo "$BIN"
