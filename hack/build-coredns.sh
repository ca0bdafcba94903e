#!/usr/bin/env bash
# Builds CoreDNS from its Go module, once per version, into a cache outside the repository; the
# node cluster's DNS (make cluster-e2e: kopf and the client libraries reach the API server as
# kubernetes.default.svc, as in every cluster). Prints the bin directory on stdout.
set -euo pipefail
V=${COREDNS_VERSION:-1.14.7}
CACHE=${SHARDKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardkeeper}
W=$CACHE/coredns/$V
if [ -x "$W/bin/coredns" ]; then echo "$W/bin"; exit 0; fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$W/bin.tmp"
GOBIN="$W/bin.tmp" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@v$V" >&2
rm -rf "$W/bin" && mv "$W/bin.tmp" "$W/bin"
echo "$W/bin"
