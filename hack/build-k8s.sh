#!/usr/bin/env bash
# Builds Kubernetes binaries from the Go modules of k8s.io/kubernetes, once per version, into a
# cache outside the repository. Prints the bin directory on stdout.
#
#   hack/build-k8s.sh        kube-apiserver, kubectl                       -> $CACHE/k8s/$K8S/bin
#   hack/build-k8s.sh node   kubelet, kube-controller-manager,
#                            kube-scheduler, kube-proxy (make cluster-e2e)  -> $CACHE/k8s-node/$K8S/bin
#
# k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them with replace
# directives that only apply inside its own repository, so `go install ...@vX` cannot work.
# A wrapper module that replaces every such module with its published v0.MINOR.PATCH can.
set -euo pipefail
K8S=${K8S_VERSION:-1.34.4}
MINOR=${K8S#1.}; MINOR=${MINOR%%.*}; PATCH=${K8S##*.}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
case "${1:-control}" in
  control) W=$CACHE/k8s/$K8S; CMDS="kube-apiserver kubectl" ;;
  node) W=$CACHE/k8s-node/$K8S; CMDS="kubelet kube-controller-manager kube-scheduler kube-proxy" ;;
  *) echo "usage: $0 [control|node]" >&2; exit 2 ;;
esac
done_=1
for c in $CMDS; do [ -x "$W/bin/$c" ] || done_=0; done
if [ $done_ = 1 ]; then echo "$W/bin"; exit 0; fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$W" && cd "$W"
GOMOD=$(cd /tmp && go mod download -json "k8s.io/kubernetes@v$K8S" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
GOLINE=$(awk '$1=="go"{print $2; exit}' "$GOMOD")
GODEBUG_LINE=$(awk '$1=="godebug"{print; exit}' "$GOMOD")
printf 'module local/k8sbin\n\ngo %s\n\n%s\n' "$GOLINE" "$GODEBUG_LINE" > go.mod
for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$GOMOD"); do
  go mod edit -replace="$m=$m@v0.$MINOR.$PATCH"
done
go mod edit -require="k8s.io/kubernetes@v$K8S"
{ printf '//go:build tools\npackage tools\n\nimport (\n'
  for c in $CMDS; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'; } > tools.go
go mod tidy >&2
LD="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=v$K8S -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
done
mkdir -p bin.tmp
for c in $CMDS; do
  go build -trimpath -ldflags "$LD" -o "bin.tmp/$c" "k8s.io/kubernetes/cmd/$c" >&2
done
rm -rf bin && mv bin.tmp bin
echo "$W/bin"
