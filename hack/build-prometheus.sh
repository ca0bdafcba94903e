#!/usr/bin/env bash
# Builds prometheus and promtool from the Go module github.com/prometheus/prometheus, once per
# version, into a cache outside the repository (like hack/build-k8s.sh). Prints the bin directory.
set -euo pipefail
V=${PROMETHEUS_MODULE_VERSION:-v0.316.0}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
W=$CACHE/prometheus/$V
if [ -x "$W/bin/promtool" ] && [ -x "$W/bin/prometheus" ]; then echo "$W/bin"; exit 0; fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$W/bin.tmp"
GOBIN="$W/bin.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/prometheus/prometheus/cmd/promtool@$V" "github.com/prometheus/prometheus/cmd/prometheus@$V" >&2
rm -rf "$W/bin" && mv "$W/bin.tmp" "$W/bin"
echo "$W/bin"
